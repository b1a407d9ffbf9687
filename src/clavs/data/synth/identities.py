"""Visual and sound identities of SynthAVS categories.

Each category has a visual identity (shape, colour, texture, accent colour) and a sound identity
(fundamental frequency, timbre, rhythm, pitch contour). Attributes are shared between categories, so
no single attribute (one colour channel, one shape) separates a category from all others; every two
benchmark categories differ in at least two visual and at least two sound attributes, which keeps
them learnable by a tiny model.

The attribute vocabularies have a *benchmark* part (used by the 23 AVSBench-named categories) and an
*extra* part, so `make_identities` can draw identities for encoder pretraining that are disjoint
from the benchmark ones.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from functools import lru_cache

from clavs.data.categories import S4_CATEGORIES

# --- visual vocabularies: (benchmark values, extra values) ------------------------------------
SHAPES = (("circle", "square", "triangle", "hexagon", "star", "cross", "ring", "crescent"),
          ("pentagon", "ellipse", "semicircle", "square_ring"))
COLORS = (("red", "yellow", "green", "cyan", "blue", "purple"),
          ("orange", "pink", "brown", "olive", "navy", "grey"))
TEXTURES = (("solid", "stripes", "checker", "dots", "rings"),
            ("grid", "radial_gradient", "spiral"))
ACCENTS = (("light", "dark", "complement"), ("gold",))

COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (205, 55, 50), "yellow": (225, 190, 45), "green": (60, 160, 75), "cyan": (45, 170, 190),
    "blue": (55, 85, 200), "purple": (150, 65, 170), "orange": (235, 125, 35), "pink": (235, 135, 180),
    "brown": (125, 80, 45), "olive": (130, 135, 45), "navy": (35, 45, 115), "grey": (140, 140, 140),
}

# --- sound vocabularies ----------------------------------------------------------------------
# Benchmark pitches: 8 steps of 5 semitones from 165 Hz; extra pitches sit halfway between them.
_F0_STEP = 2.0 ** (5.0 / 12.0)
PITCHES = (tuple(round(165.0 * _F0_STEP**i, 2) for i in range(8)),
           tuple(round(165.0 * _F0_STEP ** (i + 0.5), 2) for i in range(8)))
TIMBRES = (("pure", "odd", "saw", "bright", "noisy"), ("bell", "nasal", "dual"))
RHYTHMS = (("steady", "pulse2", "pulse5", "tremolo", "bursts"), ("triplet", "swell", "gallop"))
CONTOURS = (("flat", "vibrato", "siren", "glide_up"), ("glide_down", "trill"))

_BENCHMARK_TABLE_SEED = 20240601  # fixes the benchmark attribute table; changing it changes the dataset


@dataclass(frozen=True)
class VisualIdentity:
    """How a category looks: shape, base colour, texture pattern, accent (pattern/outline) colour."""

    shape: str
    color: str
    texture: str
    accent: str

    def attributes(self) -> tuple[str, ...]:
        return (self.shape, self.color, self.texture, self.accent)


@dataclass(frozen=True)
class SoundIdentity:
    """How a category sounds: fundamental frequency (Hz), harmonic timbre, amplitude rhythm, pitch contour."""

    f0_hz: float
    timbre: str
    rhythm: str
    contour: str

    def attributes(self) -> tuple[object, ...]:
        return (self.f0_hz, self.timbre, self.rhythm, self.contour)


@dataclass(frozen=True)
class Identity:
    """A category: its name plus its visual and sound identities."""

    name: str
    visual: VisualIdentity
    sound: SoundIdentity


def hamming(a: tuple, b: tuple) -> int:
    """Number of attributes in which two attribute tuples differ."""
    return sum(x != y for x, y in zip(a, b))


def _greedy_code(vocabs: list[tuple], n: int, rng: random.Random, min_dist: int,
                 max_uses: list[int], avoid: list[tuple] = (), avoid_dist: int = 0) -> list[tuple]:
    """Pick n attribute tuples, pairwise >= min_dist apart, each value used at most max_uses[i] times,
    and >= avoid_dist from every tuple in `avoid`. Deterministic for a given rng state."""
    combos = list(itertools.product(*vocabs))
    rng.shuffle(combos)
    chosen: list[tuple] = []
    uses = [dict.fromkeys(v, 0) for v in vocabs]
    for combo in combos:
        if any(uses[i][v] >= max_uses[i] for i, v in enumerate(combo)):
            continue
        if any(hamming(combo, c) < min_dist for c in chosen):
            continue
        if any(hamming(combo, a) < avoid_dist for a in avoid):
            continue
        chosen.append(combo)
        for i, v in enumerate(combo):
            uses[i][v] += 1
        if len(chosen) == n:
            return chosen
    raise ValueError(f"cannot draw {n} identities at distance >= {min_dist} from the attribute vocabularies "
                     f"(got {len(chosen)}); ask for fewer")


@lru_cache(maxsize=1)
def _benchmark_table() -> tuple[Identity, ...]:
    rng = random.Random(_BENCHMARK_TABLE_SEED)
    n = len(S4_CATEGORIES)
    visual = _greedy_code([SHAPES[0], COLORS[0], TEXTURES[0], ACCENTS[0]], n, rng, 2, [3, 4, 5, 8])
    sound = _greedy_code([PITCHES[0], TIMBRES[0], RHYTHMS[0], CONTOURS[0]], n, rng, 2, [3, 5, 5, 6])
    return tuple(Identity(name, VisualIdentity(*v), SoundIdentity(*s))
                 for name, v, s in zip(S4_CATEGORIES, visual, sound))


def benchmark_identities() -> dict[str, Identity]:
    """The 23 SynthAVS benchmark categories, keyed by their AVSBench names (official order)."""
    return {ident.name: ident for ident in _benchmark_table()}


def make_identities(n: int, seed: int, exclude_benchmark: bool = True) -> list[Identity]:
    """Draw `n` extra identities (e.g. for encoder pretraining), deterministic in `seed`.

    The attribute vocabularies are the benchmark values plus extra values. With
    `exclude_benchmark=True`, every returned identity differs from every benchmark category in at
    least two visual and at least two sound attributes (so pretraining never sees a benchmark
    category); the identities differ pairwise in at least one visual and one sound attribute.
    Names are `extra_000`, `extra_001`, ...
    """
    if n < 0:
        raise ValueError(f"make_identities: n must be >= 0, got {n}")
    rng = random.Random(f"synthavs-extra-{seed}")
    bench = _benchmark_table() if exclude_benchmark else ()
    big = 10**9
    vis_vocab = [a + b for a, b in (SHAPES, COLORS, TEXTURES, ACCENTS)]
    snd_vocab = [a + b for a, b in (PITCHES, TIMBRES, RHYTHMS, CONTOURS)]
    visual = _greedy_code(vis_vocab, n, rng, 1, [big] * 4,
                          [b.visual.attributes() for b in bench], 2 if exclude_benchmark else 0)
    sound = _greedy_code(snd_vocab, n, rng, 1, [big] * 4,
                         [b.sound.attributes() for b in bench], 2 if exclude_benchmark else 0)
    return [Identity(f"extra_{i:03d}", VisualIdentity(*v), SoundIdentity(*s))
            for i, (v, s) in enumerate(zip(visual, sound))]


# Coarse semantic groups of the 23 categories: MS3 clips mostly mix sources of one group, as real
# multi-source videos do (a singer with a guitar), so the TF-CL stream has structure to shift along.
CATEGORY_GROUPS: dict[str, tuple[str, ...]] = {
    "people": ("baby_laughter", "female_singing", "male_speech"),
    "animals": ("dog_barking", "cat_meowing", "lions_roaring", "horse_clip-clop", "coyote_howling",
                "mynah_bird_singing"),
    "instruments": ("playing_acoustic_guitar", "playing_tabla", "playing_violin", "playing_piano",
                    "playing_ukulele", "playing_glockenspiel"),
    "vehicles": ("helicopter", "race_car", "driving_buses", "ambulance_siren"),
    "tools": ("typing_on_computer_keyboard", "chainsawing_trees", "cap_gun_shooting", "lawn_mowing"),
}
