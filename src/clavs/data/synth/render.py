"""Rendering of SynthAVS scenes: domains, backgrounds, objects, moving clips with masks and audio.

The primitives are public so that other modules (encoder pretraining) can draw scenes of their own:
`sample_domain_factors`, `make_background`, `PlacedObject` + `render_frame`, and `render_clip`, which
puts everything together (moving objects, masks of the sounding ones, mixed audio).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from clavs.data.synth.audio import SAMPLE_RATE, mix_sources, synthesize_audio
from clavs.data.synth.identities import COLOR_RGB, Identity, VisualIdentity

ACCENT_RGB = {"light": (235, 235, 225), "dark": (35, 35, 40), "gold": (215, 170, 40)}


# ------------------------------------------------------------------------------------- domains
@dataclass(frozen=True)
class Domain:
    """A recording condition. Per-video factors are drawn uniformly from these ranges."""

    name: str
    background: str                       # background generator, see make_background
    bg_colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    gain: tuple[float, float]             # overall brightness multiplier
    contrast: tuple[float, float]         # contrast around mid-grey
    cast: tuple[float, float, float]      # mean per-channel colour multiplier
    cast_jitter: float                    # +- spread of each channel multiplier
    radius: tuple[float, float]           # object radius in pixels at 224x224
    snr_db: tuple[float, float]           # audio signal-to-noise ratio
    noise_color: str                      # background noise spectrum: white | pink | brown


DOMAINS: dict[str, Domain] = {d.name: d for d in (
    Domain("studio", "gradient", ((205, 205, 200), (150, 150, 158)), (0.95, 1.05), (0.95, 1.05),
           (1.0, 1.0, 1.0), 0.03, (26, 36), (24, 34), "white"),
    Domain("meadow", "blobs", ((105, 150, 80), (175, 195, 115)), (0.95, 1.1), (0.88, 1.0),
           (1.0, 1.04, 0.94), 0.04, (22, 32), (14, 22), "pink"),
    Domain("desert", "dunes", ((220, 185, 125), (175, 135, 85)), (1.0, 1.15), (0.8, 0.95),
           (1.08, 1.0, 0.86), 0.04, (24, 34), (16, 26), "pink"),
    Domain("night", "stars", ((18, 22, 48), (50, 55, 90)), (0.6, 0.78), (0.78, 0.92),
           (0.86, 0.92, 1.15), 0.04, (20, 30), (18, 28), "brown"),
    Domain("city", "bricks", ((125, 112, 105), (85, 80, 80)), (0.85, 1.0), (1.0, 1.15),
           (1.0, 1.0, 1.0), 0.06, (16, 26), (4, 12), "brown"),
    Domain("underwater", "caustics", ((25, 105, 140), (70, 170, 180)), (0.8, 0.95), (0.85, 1.0),
           (0.82, 1.0, 1.1), 0.04, (30, 42), (8, 16), "pink"),
)}


@dataclass(frozen=True)
class DomainFactors:
    """The factors of one video, drawn from its domain's ranges."""

    domain: str
    gain: float
    contrast: float
    cast: tuple[float, float, float]
    radius: tuple[float, float]
    snr_db: float
    noise_color: str


def sample_domain_factors(domain: Domain, rng: np.random.Generator) -> DomainFactors:
    """Draw one video's lighting, object-scale range and audio noise level from a domain."""
    cast = tuple(float(c + rng.uniform(-domain.cast_jitter, domain.cast_jitter)) for c in domain.cast)
    centre = rng.uniform(*domain.radius)
    spread = 0.15 * centre
    return DomainFactors(domain.name, float(rng.uniform(*domain.gain)), float(rng.uniform(*domain.contrast)),
                         cast, (float(centre - spread), float(centre + spread)),
                         float(rng.uniform(*domain.snr_db)), domain.noise_color)


def make_background(domain: Domain, rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """A smooth textured background [size, size, 3] float in [0, 1] (smooth so PNGs stay small)."""
    c0, c1 = (np.array(c, dtype=np.float64) / 255.0 for c in domain.bg_colors)
    y, x = np.mgrid[0:size, 0:size] / size
    kind = domain.background
    if kind == "gradient":
        s = y + 0.15 * np.hypot(x - 0.5, y - 0.5)
    elif kind == "blobs":
        s = np.zeros_like(x)
        for _ in range(3):
            fx, fy = rng.uniform(-2.5, 2.5, size=2)
            s += np.sin(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 2 * np.pi))
        s = (s - s.min()) / (np.ptp(s) + 1e-9)
    elif kind == "dunes":
        f, g = rng.uniform(2.0, 4.0), rng.uniform(0.8, 1.6)
        s = 0.5 + 0.5 * np.sin(2 * np.pi * (f * y + 0.12 * np.sin(2 * np.pi * g * x + rng.uniform(0, 6.3))))
    elif kind == "stars":
        s = y.copy()
    elif kind == "bricks":
        h = int(rng.integers(18, 28))
        row = (np.arange(size)[:, None] + int(rng.integers(0, h))) // h
        col = (np.arange(size)[None, :] + (row % 2) * h + int(rng.integers(0, 2 * h))) // (2 * h)
        brick_shade = ((row * 7 + col * 13) % 5) / 5.0
        mortar = ((np.arange(size)[:, None] % h) < 2) | (((np.arange(size)[None, :] + (row % 2) * h) % (2 * h)) < 2)
        s = np.where(mortar, 1.0, 0.15 * brick_shade)
    elif kind == "caustics":
        ph = rng.uniform(0, 2 * np.pi, size=2)
        a = np.sin(2 * np.pi * 3.0 * (x + 0.1 * np.sin(2 * np.pi * 2 * y + ph[0])))
        b = np.sin(2 * np.pi * 3.0 * (y + 0.1 * np.sin(2 * np.pi * 2 * x + ph[1])))
        s = np.clip(np.abs(a + b) / 2.0, 0, 1) ** 2
    else:
        raise ValueError(f"unknown background kind {kind!r} in domain {domain.name!r}")
    img = c0 + (c1 - c0) * s[..., None]
    if kind == "stars":
        for sy, sx in rng.integers(0, size, size=(int(rng.integers(25, 45)), 2)):
            img[max(sy - 1, 0):sy + 1, max(sx - 1, 0):sx + 1] = (0.9, 0.9, 0.78)
    return img


# ------------------------------------------------------------------------------------- objects
@dataclass(frozen=True)
class PlacedObject:
    """One object in one frame: its look, centre (pixels), radius (pixels), rotation (radians),
    texture phase (shifts the pattern) and colour jitter (per-channel multiplier)."""

    visual: VisualIdentity
    cx: float
    cy: float
    radius: float
    angle: float = 0.0
    texture_phase: tuple[float, float] = (0.0, 0.0)
    color_jitter: tuple[float, float, float] = (1.0, 1.0, 1.0)


def _polygon(u: np.ndarray, v: np.ndarray, n: int, circumradius: float) -> np.ndarray:
    theta = np.arctan2(v, u) + np.pi / 2  # one vertex points up
    sector = 2 * np.pi / n
    a = np.mod(theta, sector) - sector / 2
    return np.hypot(u, v) * np.cos(a) <= circumradius * np.cos(np.pi / n)


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pixels inside a shape, in object coordinates (u right, v down, radius 1)."""
    r = np.hypot(u, v)
    if shape == "circle":
        return r <= 0.92
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.74
    if shape == "triangle":
        return _polygon(u, v, 3, 1.0)
    if shape == "hexagon":
        return _polygon(u, v, 6, 0.9)
    if shape == "pentagon":
        return _polygon(u, v, 5, 0.95)
    if shape == "star":
        theta = np.arctan2(v, u) + np.pi / 2
        return r <= 0.42 + 0.58 * ((1 + np.cos(5 * theta)) / 2) ** 2
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.92)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.92))
    if shape == "ring":
        return (r <= 0.95) & (r >= 0.52)
    if shape == "crescent":
        return (r <= 0.95) & (np.hypot(u - 0.45, v) > 0.72)
    if shape == "ellipse":
        return u**2 + (v / 0.55) ** 2 <= 1.0
    if shape == "semicircle":
        return (r <= 0.95) & (v <= 0.2)
    if shape == "square_ring":
        m = np.maximum(np.abs(u), np.abs(v))
        return (m <= 0.78) & (m >= 0.45)
    raise ValueError(f"unknown shape {shape!r}")


def texture_weight(texture: str, u: np.ndarray, v: np.ndarray, phase: tuple[float, float]) -> np.ndarray:
    """Accent-colour weight in [0, 1] of a texture at object coordinates (0 = base colour)."""
    pu, pv = phase
    if texture == "solid":
        return np.zeros_like(u)
    if texture == "stripes":
        return (np.sin(2 * np.pi * (u * 2.2 + pu)) > 0).astype(np.float64)
    if texture == "checker":
        return ((np.floor(u * 2.4 + pu) + np.floor(v * 2.4 + pv)) % 2).astype(np.float64)
    if texture == "dots":
        return ((((u * 2.8 + pu) % 1 - 0.5) ** 2 + ((v * 2.8 + pv) % 1 - 0.5) ** 2) < 0.08).astype(np.float64)
    if texture == "rings":
        return (np.sin(2 * np.pi * (np.hypot(u, v) * 3.2 + pu)) > 0.2).astype(np.float64)
    if texture == "grid":
        return (np.maximum(np.abs((u * 2.5 + pu) % 1 - 0.5), np.abs((v * 2.5 + pv) % 1 - 0.5)) > 0.38).astype(np.float64)
    if texture == "radial_gradient":
        return np.clip(np.hypot(u, v), 0.0, 1.0)
    if texture == "spiral":
        return (np.sin(3 * np.arctan2(v, u) + 2 * np.pi * (np.hypot(u, v) * 3 + pu)) > 0).astype(np.float64)
    raise ValueError(f"unknown texture {texture!r}")


def _accent_rgb(visual: VisualIdentity) -> np.ndarray:
    if visual.accent == "complement":
        return 1.0 - np.array(COLOR_RGB[visual.color]) / 255.0
    if visual.accent not in ACCENT_RGB:
        raise ValueError(f"unknown accent {visual.accent!r}")
    return np.array(ACCENT_RGB[visual.accent]) / 255.0


@dataclass
class _Geometry:
    ys: slice
    xs: slice
    u: np.ndarray
    v: np.ndarray
    shade: np.ndarray
    mask: np.ndarray
    area: int = field(init=False)

    def __post_init__(self) -> None:
        self.area = int(self.mask.sum())


def _geometry(obj: PlacedObject, size: int) -> _Geometry:
    half = int(np.ceil(obj.radius)) + 2
    cx, cy = int(np.floor(obj.cx)), int(np.floor(obj.cy))
    y0, y1 = max(0, cy - half), min(size, cy + half + 1)
    x0, x1 = max(0, cx - half), min(size, cx + half + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    dx = (xx + 0.5 - obj.cx) / obj.radius
    dy = (yy + 0.5 - obj.cy) / obj.radius
    c, s = np.cos(obj.angle), np.sin(obj.angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    shade = 1.08 - 0.18 * np.clip((dx + dy) / 2.8 + 0.5, 0.0, 1.0)  # light from the top left
    return _Geometry(slice(y0, y1), slice(x0, x1), u, v, shade, shape_mask(obj.visual.shape, u, v))


def _erode(mask: np.ndarray, width: int) -> np.ndarray:
    out = mask.copy()
    padded = np.pad(mask, width, constant_values=False)
    h, w = mask.shape
    for dy, dx in ((-width, 0), (width, 0), (0, -width), (0, width)):
        out &= padded[width + dy:width + dy + h, width + dx:width + dx + w]
    return out


def _paint(obj: PlacedObject, geo: _Geometry) -> np.ndarray:
    """Colours [h, w, 3] of the object's bounding box (only meaningful where geo.mask)."""
    vis = obj.visual
    base = np.array(COLOR_RGB[vis.color]) / 255.0 * np.array(obj.color_jitter)
    accent = _accent_rgb(vis)
    w = texture_weight(vis.texture, geo.u, geo.v, obj.texture_phase)
    if vis.texture == "solid":  # solid objects carry their accent as an outline
        w = (geo.mask & ~_erode(geo.mask, max(2, int(round(obj.radius * 0.12))))).astype(np.float64)
    rgb = base * (1.0 - w[..., None]) + accent * w[..., None]
    return rgb * geo.shade[..., None]


def _composite(objects: Sequence[PlacedObject], geos: Sequence[_Geometry], background: np.ndarray,
               paint: bool) -> tuple[np.ndarray | None, np.ndarray]:
    size = background.shape[0]
    labels = np.full((size, size), -1, dtype=np.int16)
    img = background.copy() if paint else None
    for j, (obj, geo) in enumerate(zip(objects, geos)):
        labels[geo.ys, geo.xs][geo.mask] = j
        if paint:
            img[geo.ys, geo.xs][geo.mask] = _paint(obj, geo)[geo.mask]
    return img, labels


def apply_lighting(img: np.ndarray, gain: float, contrast: float, cast: Sequence[float]) -> np.ndarray:
    """Contrast around mid-grey, then brightness and colour cast; returns uint8 RGB."""
    out = ((img - 0.5) * contrast + 0.5) * gain * np.asarray(cast, dtype=np.float64)
    return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def render_frame(objects: Sequence[PlacedObject], background: np.ndarray, gain: float = 1.0,
                 contrast: float = 1.0, cast: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Draw objects (later ones on top) over a float background [S, S, 3] in [0, 1].

    Returns (uint8 RGB image [S, S, 3], int16 label map [S, S] holding the index of the object
    visible at each pixel, -1 for background). Object edges are hard, so label maps are exact masks.
    """
    geos = [_geometry(o, background.shape[0]) for o in objects]
    img, labels = _composite(objects, geos, background, paint=True)
    return apply_lighting(img, gain, contrast, cast), labels


# ---------------------------------------------------------------------------------------- clips
@dataclass
class SynthClip:
    """A rendered clip. frames uint8 [T, S, S, 3]; labels int16 [T, S, S] (index into
    sounding + silent objects, -1 background); masks bool [T, S, S] (union of the sounding objects'
    visible pixels); waveform float64 [duration*sr] (peak-normalised mix with noise); the domain
    factors used; names of the objects' identities."""

    frames: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    waveform: np.ndarray
    factors: DomainFactors
    n_sounding: int
    object_names: tuple[str, ...]  # identity names, sounding first (label values index this)


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    period = 2.0 * (hi - lo)
    y = np.mod(x - lo, period)
    return np.where(y > hi - lo, period - y, y) + lo


def _trajectory(visual: VisualIdentity, rng: np.random.Generator, radius_range: tuple[float, float],
                size: int, n_frames: int) -> list[PlacedObject]:
    """A smooth path: constant velocity bouncing off the borders, slow spin, gentle scale change."""
    base_r = rng.uniform(*radius_range)
    lo, hi = base_r, size - base_r
    x0, y0 = rng.uniform(lo, hi, size=2)
    heading, speed = rng.uniform(0, 2 * np.pi), rng.uniform(3.0, 11.0)
    k = np.arange(n_frames)
    xs = _reflect(x0 + speed * np.cos(heading) * k, lo, hi)
    ys = _reflect(y0 + speed * np.sin(heading) * k, lo, hi)
    angles = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.2, 0.2) * k
    radii = base_r * (1.0 + 0.06 * np.sin(rng.uniform(0.3, 0.9) * k + rng.uniform(0, 2 * np.pi)))
    phase = (float(rng.uniform()), float(rng.uniform()))
    jitter = tuple(float(j) for j in rng.uniform(0.93, 1.07, size=3))
    return [PlacedObject(visual, float(xs[i]), float(ys[i]), float(radii[i]), float(angles[i]), phase, jitter)
            for i in range(n_frames)]


def render_clip(sounding: Sequence[Identity], silent: Sequence[Identity], rng: np.random.Generator,
                domain: Domain | str | None = None, n_frames: int = 5, size: int = 224,
                duration: float = 5.0, sr: int = SAMPLE_RATE, min_visible_sounding: float = 0.55,
                min_visible_silent: float = 0.4) -> SynthClip:
    """Render a clip: sounding and silent objects moving over a domain background, plus audio.

    Objects are stacked in a random depth order and may occlude each other, but trajectories are
    re-drawn until, in every frame, each sounding object shows >= `min_visible_sounding` and each
    silent one >= `min_visible_silent` of its area. The audio mixes the sounding objects' sounds
    with the domain's background noise. `domain=None` draws one of DOMAINS at random.
    """
    if not sounding:
        raise ValueError("render_clip needs at least one sounding object")
    if domain is None:
        domain = DOMAINS[sorted(DOMAINS)[int(rng.integers(len(DOMAINS)))]]
    elif isinstance(domain, str):
        if domain not in DOMAINS:
            raise ValueError(f"unknown domain {domain!r}; expected one of {sorted(DOMAINS)}")
        domain = DOMAINS[domain]
    factors = sample_domain_factors(domain, rng)
    background = make_background(domain, rng, size)
    idents = list(sounding) + list(silent)
    n_snd = len(sounding)

    scale = 1.0
    for attempt in range(400):
        if attempt and attempt % 40 == 0:
            scale *= 0.9  # crowded scene: shrink objects until they fit
        radius_range = (factors.radius[0] * scale, factors.radius[1] * scale)
        paths = [_trajectory(i.visual, rng, radius_range, size, n_frames) for i in idents]
        depth = rng.permutation(len(idents))  # depth[j] = drawing order slot of object j
        order = np.argsort(depth)
        ok, frames_geo = True, []
        for t in range(n_frames):
            objs = [paths[j][t] for j in order]
            geos = [_geometry(o, size) for o in objs]
            _, lab = _composite(objs, geos, background, paint=False)
            for slot, j in enumerate(order):
                need = min_visible_sounding if j < n_snd else min_visible_silent
                if geos[slot].area == 0 or (lab == slot).sum() < need * geos[slot].area:
                    ok = False
                    break
            if not ok:
                break
            frames_geo.append((objs, geos))
        if ok:
            break
    else:
        raise RuntimeError(f"render_clip: could not place {len(idents)} objects visibly after 400 attempts")

    flicker = rng.uniform(0.97, 1.03, size=n_frames)
    frames = np.empty((n_frames, size, size, 3), dtype=np.uint8)
    labels = np.empty((n_frames, size, size), dtype=np.int16)
    for t, (objs, geos) in enumerate(frames_geo):
        img, lab = _composite(objs, geos, background, paint=True)
        frames[t] = apply_lighting(img, factors.gain * flicker[t], factors.contrast, factors.cast)
        # map drawing slots back to object indices (sounding first, then silent)
        labels[t] = np.where(lab >= 0, order[np.maximum(lab, 0)], -1)
    masks = (labels >= 0) & (labels < n_snd)

    sources = [synthesize_audio(i.sound, rng, duration, sr) for i in sounding]
    waveform = mix_sources(sources, rng, factors.snr_db, factors.noise_color, peak=float(rng.uniform(0.4, 0.85)))
    return SynthClip(frames, labels, masks, waveform, factors, n_snd, tuple(i.name for i in idents))
