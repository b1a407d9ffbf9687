"""Predicted masks drawn over a video: an MP4 with the input's sound, and a GIF (`clavs predict`).

The MP4 is H.264 (libx264) when this FFmpeg build has the encoder, else MPEG-4 part 2; yuv420p, so an
odd width or height loses its last pixel column or row. Its sound is the input's track, re-encoded as
AAC at its own rate and channel layout, cut where the video is cut (after the last whole second).
Both files are written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from PIL import Image

from clavs.utils.io import atomic_write

TINT = np.array([255, 40, 40], dtype=np.float32)  # the mask's colour
ALPHA = 0.5  # its opacity
GIF_SECOND_MS = 1000  # a GIF frame per sampled second, shown for a second


def draw_mask(rgb: np.ndarray, mask: np.ndarray, tint: np.ndarray | tuple[int, int, int] = TINT) -> np.ndarray:
    """uint8 [H,W,3] with the pixels of bool `mask` [H,W] blended towards `tint` (0-255):
    (1-ALPHA)*rgb + ALPHA*tint. The one mask overlay: predicted videos and the report's Figure 3."""
    out = rgb.astype(np.float32)
    out[mask] = (1 - ALPHA) * out[mask] + ALPHA * np.asarray(tint, dtype=np.float32)
    return out.round().astype(np.uint8)


def video_codec() -> str:
    """libx264 where this FFmpeg build has it, else mpeg4 (every build has it)."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _even(rgb: np.ndarray) -> np.ndarray:
    """Crop to even sides (yuv420p), padding a one-pixel side to two."""
    h, w = rgb.shape[:2]
    if h < 2 or w < 2:
        rgb = np.pad(rgb, ((0, max(0, 2 - h)), (0, max(0, 2 - w)), (0, 0)), mode="edge")
        h, w = rgb.shape[:2]
    return rgb[: h - h % 2, : w - w % 2]


def write_overlay_video(path: Path, frames: Iterable[tuple[np.ndarray, float]], fps: Fraction,
                        mask_at: Callable[[float], np.ndarray], audio: Iterable[tuple[np.ndarray, int, str]],
                        seconds: int) -> dict[str, Any]:
    """Write `frames` ((uint8 RGB [H,W,3], time in s)) before `seconds`, each with the mask `mask_at(time)`
    drawn over it, and `audio` (planar float32 [channels, n], rate, layout) up to `seconds`, as an MP4.
    Returns what was written: codecs, frame count, audio samples and rate."""
    import av

    info: dict[str, Any] = {}

    def write(f: Any) -> None:
        with av.open(f, "w", format="mp4") as out:
            info.update(_encode(out, frames, fps, mask_at, audio, seconds))

    atomic_write(path, write, "wb")
    return info


def _encode(out: Any, frames: Iterable[tuple[np.ndarray, float]], fps: Fraction,
            mask_at: Callable[[float], np.ndarray], audio: Iterable[tuple[np.ndarray, int, str]],
            seconds: int) -> dict[str, Any]:
    """Both streams are added before the first packet (the MP4 header is written then); the video's
    packets go first, then the sound's."""
    import av

    rate = Fraction(fps) if fps and fps > 0 else Fraction(25)
    codec = video_codec()
    pictures = ((_even(draw_mask(rgb, mask_at(t))), t) for rgb, t in frames if t < seconds)
    chunks = iter(audio)
    first_picture, first_chunk = next(pictures, None), next(chunks, None)
    if first_picture is None or first_chunk is None:
        raise ValueError(f"an overlay video needs frames and sound before {seconds} s")
    vstream = out.add_stream(codec, rate=rate)
    vstream.height, vstream.width = first_picture[0].shape[:2]
    vstream.pix_fmt = "yuv420p"
    sample_rate, layout = first_chunk[1], first_chunk[2]
    astream = out.add_stream("aac", rate=sample_rate)
    astream.layout = layout

    written, last_pts = 0, -1
    for picture, t in itertools.chain([first_picture], pictures):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
        # Presentation time from the input's own timestamps (a variable frame rate keeps its timing).
        frame.pts = last_pts = max(last_pts + 1, round(t * rate))
        out.mux(vstream.encode(frame))
        written += 1
    out.mux(vstream.encode(None))

    limit, done = seconds * sample_rate, 0
    for chunk, _, _ in itertools.chain([first_chunk], chunks):
        chunk = np.ascontiguousarray(chunk[:, : limit - done], dtype=np.float32)
        if chunk.shape[1] == 0:
            break
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate, frame.pts = sample_rate, done
        done += chunk.shape[1]
        out.mux(astream.encode(frame))
    out.mux(astream.encode(None))
    return {"video_codec": codec, "frames": written, "audio_codec": "aac", "audio_samples": done,
            "audio_rate": sample_rate}


def write_gif(path: Path, images: list[Image.Image]) -> Path:
    """An animated GIF of `images`, one per second, looping."""
    frames = [im.convert("RGB") for im in images]

    def write(f: Any) -> None:
        frames[0].save(f, format="GIF", save_all=True, append_images=frames[1:], duration=GIF_SECOND_MS, loop=0)

    return atomic_write(path, write, "wb")
