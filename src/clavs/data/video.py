"""A user's video, or an AVSBench-style clip folder, sampled as AVSBench samples its clips (for
`clavs predict`).

Second l = 0..N-1 of the input gives (AVSBench's preprocess scripts, reference/avsbench.md):
  * one frame: the frame on screen at l + 15/16 s. AVSBench keeps frame int(l*fps + 15/16*fps), the
    last of 16 positions in the second; by time rather than index, the same frame at a constant
    frame rate, and the right one at a variable frame rate;
  * one second of audio: samples [l, l+1) s of the track, resampled by FFmpeg to 16 kHz (AVSBench's
    wav files are written at 16 kHz, and the clip cache holds them so) and downmixed to mono as the
    mean of the channels (as data/audio.read_wav does for the dataset's wavs).
N = floor(video duration): a trailing part-second is dropped; an audio track that ends early (or
starts late) is zero-filled, as data/avsbench.wav_per_second pads a short wav. Times are measured
from the video stream's start. Frames are resized to the run's image size by data/avsbench.fit_frame,
the resize the dataset's frames go through (a non-square video is squeezed, as AVSBench's 224x224
frames are).

A clip folder is the AVSBench layout of one clip: frames `<name>_<k>.png` (or .jpg), k = 1.., one per
second, and the clip's wav beside them (`audio.wav`, or the folder's only .wav file).
PyAV (`pip install clavs[video]`) is imported only when a video file is read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

from clavs.data.avsbench import SAMPLE_RATE, fit_frame
from clavs.errors import ClavsError

FRAME_POSITION = 15 / 16  # where in each second AVSBench takes its frame
PREVIEW_SIDE = 320  # longest side of the frames kept for the GIF
_EPS = 1e-6  # seconds: timestamps are rounded to the stream's time base
_FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
_TRAILING_NUMBER = re.compile(r"(\d+)$")


class VideoInputError(ClavsError):
    """The input cannot be predicted on (not a video, no audio, too short); the message names the file."""


@dataclass
class SampledInput:
    """N seconds of a video or clip folder, sampled for the model.

    frames    [N,3,S,S] uint8: the frame of each second at the run's image size
    waveform  [N,16000] float32: each second's audio, mono 16 kHz
    previews  the frame of each second, longest side <= PREVIEW_SIDE (for the GIF)
    """

    path: Path
    kind: str  # "video" or "clip folder"
    frames: torch.Tensor
    waveform: torch.Tensor
    previews: list[Image.Image]
    width: int
    height: int
    fps: Fraction  # frames per second of the input (a clip folder: 1)
    duration: float  # seconds of video in the input (N <= duration < N + 1 for a video)

    @property
    def seconds(self) -> int:
        return int(self.frames.shape[0])


def import_av() -> Any:
    """PyAV, or a clear error saying how to install it."""
    try:
        import av
    except ImportError:
        raise ClavsError("reading video files needs PyAV, an optional dependency: pip install 'clavs[video]'") from None
    return av


def read_input(path: str | Path, image_size: int) -> SampledInput:
    """A video file or an AVSBench-style clip folder, sampled one frame and one second of audio per second."""
    path = Path(path)
    if path.is_dir():
        return read_clip_folder(path, image_size)
    if not path.exists():
        raise VideoInputError(f"{path}: no such file or folder (a video file with sound, or a clip folder)")
    return read_video(path, image_size)


# ----------------------------------------------------------------------------------- video files

def open_video(path: Path) -> Any:
    """The PyAV container of `path`, holding a video and an audio stream; errors name the file."""
    av = import_av()
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise VideoInputError(f"{path}: not a video file FFmpeg can read ({type(e).__name__}: {e.strerror or e})") from None
    if not container.streams.video:
        container.close()
        raise VideoInputError(f"{path}: holds no video stream (is it an audio file?); clavs predict needs a video "
                              f"with sound")
    if not container.streams.audio:
        container.close()
        raise VideoInputError(f"{path}: has no audio track; clavs predict segments the objects that sound, so it "
                              f"needs the video's sound")
    return container


def _preview(im: Image.Image) -> Image.Image:
    scale = PREVIEW_SIDE / max(im.size)
    if scale >= 1:
        return im.convert("RGB")
    return im.convert("RGB").resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                                    Image.Resampling.BILINEAR)


class _SecondFrames:
    """Keeps, for every second l, the frame on screen at l + FRAME_POSITION, from frames in time order."""

    def __init__(self, image_size: int):
        self.size_hw = (image_size, image_size)
        self.frames: list[np.ndarray] = []
        self.previews: list[Image.Image] = []
        self._last: tuple[float, Any] | None = None  # the latest decoded frame not yet past a target
        self._last_kept: tuple[np.ndarray, Image.Image] | None = None
        self.end = 0.0  # time the last frame stops being shown

    def add(self, t: float, frame: Any, duration: float) -> None:
        while self._last is not None and t > len(self.frames) + FRAME_POSITION + _EPS:
            self._keep()  # the previous frame is on screen at this second's target
        self._last = (t, frame)
        self._last_kept = None
        self.end = max(self.end, t + duration)

    def _keep(self) -> None:
        if self._last_kept is None:  # convert a frame once, however many seconds it covers
            im = self._last[1].to_image()
            self._last_kept = (fit_frame(im, self.size_hw), _preview(im))
        self.frames.append(self._last_kept[0])
        self.previews.append(self._last_kept[1])

    def finish(self, seconds: int) -> None:
        while len(self.frames) < seconds and self._last is not None:
            self._keep()
        del self.frames[seconds:], self.previews[seconds:]


def _frame_duration(stream: Any, frame: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate
    if rate:
        return float(1 / rate)
    if frame.duration and frame.time_base:
        return float(frame.duration * frame.time_base)
    return 0.0


def read_video(path: Path, image_size: int) -> SampledInput:
    """Decode `path` once (video and audio together) and sample it as the module docstring says."""
    av = import_av()
    container = open_video(path)
    try:
        vstream, astream = container.streams.video[0], container.streams.audio[0]
        origin = float(vstream.start_time * vstream.time_base) if vstream.start_time is not None else None
        picker = _SecondFrames(image_size)
        resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)  # keeps the layout: mono is the mean below
        audio: list[np.ndarray] = []
        audio_start: float | None = None
        width = height = 0
        try:
            for packet in container.demux(vstream, astream):
                for frame in packet.decode():
                    if frame.time is None:
                        continue
                    if origin is None:
                        origin = float(frame.time)
                    if packet.stream.type == "video":
                        width, height = frame.width, frame.height
                        picker.add(float(frame.time) - origin, frame, _frame_duration(vstream, frame))
                    else:
                        if audio_start is None:
                            audio_start = float(frame.time) - origin
                        audio.extend(f.to_ndarray().mean(0) for f in resampler.resample(frame))
            audio.extend(f.to_ndarray().mean(0) for f in resampler.resample(None))
        except av.FFmpegError as e:
            raise VideoInputError(f"{path}: cannot decode ({type(e).__name__}: {e.strerror or e}); the file is "
                                  f"damaged or truncated") from None
        fps = vstream.average_rate or vstream.guessed_rate or Fraction(0)
    finally:
        container.close()
    duration = picker.end
    seconds = int(math.floor(duration + _EPS))
    if seconds < 1:
        raise VideoInputError(f"{path}: its video lasts {duration:.2f} s; clavs predict needs at least one second "
                              f"(one frame and one second of sound per prediction)")
    picker.finish(seconds)
    wave = np.concatenate(audio).astype(np.float32) if audio else np.zeros(0, np.float32)
    return SampledInput(path=path, kind="video", frames=torch.from_numpy(np.stack(picker.frames)).permute(0, 3, 1, 2),
                        waveform=per_second(wave, seconds, offset=audio_start or 0.0), previews=picker.previews,
                        width=width, height=height, fps=Fraction(fps), duration=duration)


def per_second(wave: np.ndarray, seconds: int, offset: float = 0.0) -> torch.Tensor:
    """[seconds, 16000]: a 16 kHz waveform starting `offset` s into the video, cut into seconds; what the
    track does not cover is zero."""
    out = np.zeros(seconds * SAMPLE_RATE, dtype=np.float32)
    shift = int(round(offset * SAMPLE_RATE))
    src = wave[max(0, -shift):]
    start = max(0, shift)
    n = max(0, min(len(src), len(out) - start))
    out[start:start + n] = src[:n]
    return torch.from_numpy(out.reshape(seconds, SAMPLE_RATE))


def video_frames(path: Path) -> Iterator[tuple[np.ndarray, float]]:
    """Every frame of the video file as (uint8 RGB [H,W,3], seconds from the stream's start)."""
    container = open_video(path)
    try:
        stream = container.streams.video[0]
        origin = None if stream.start_time is None else float(stream.start_time * stream.time_base)
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            origin = float(frame.time) if origin is None else origin
            yield frame.to_ndarray(format="rgb24"), float(frame.time) - origin
    finally:
        container.close()


def video_audio(path: Path) -> Iterator[tuple[np.ndarray, int, str]]:
    """The video's audio track as planar float32 chunks ([channels, samples], rate, layout name)."""
    av = import_av()
    container = open_video(path)
    try:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")  # rate and layout unchanged
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                yield out.to_ndarray(), out.sample_rate, out.layout.name
        for out in resampler.resample(None):
            yield out.to_ndarray(), out.sample_rate, out.layout.name
    finally:
        container.close()


# ----------------------------------------------------------------------------------- clip folders

def clip_folder_files(folder: Path) -> tuple[list[Path], Path]:
    """The frames of an AVSBench-style clip folder in order (by the number ending their name) and its wav."""
    frames = [p for p in folder.iterdir() if p.suffix.lower() in _FRAME_SUFFIXES and p.is_file()]
    if not frames:
        raise VideoInputError(f"{folder}: no frames (<name>_<k>.png or .jpg) in this folder; a clip folder holds "
                              f"one frame per second and the clip's audio.wav")

    def order(p: Path) -> tuple[int, str]:
        m = _TRAILING_NUMBER.search(p.stem)
        return (int(m.group(1)) if m else -1, p.name)

    frames.sort(key=order)
    wavs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav")
    named = [p for p in wavs if p.name == "audio.wav"]
    if named or len(wavs) == 1:
        return frames, (named or wavs)[0]
    listing = f"found {', '.join(p.name for p in wavs)}" if wavs else "found none"
    raise VideoInputError(f"{folder}: a clip folder needs its sound as audio.wav (or a single .wav file); {listing}")


def read_wav_16k(path: Path) -> np.ndarray:
    """A wav file as a mono 16 kHz float32 waveform (data/audio.read_wav, then resampled if needed)."""
    from clavs.data.audio import read_wav
    from clavs.models.encoders.cnn14 import resample_audio

    try:
        wave, sr = read_wav(path)
    except ValueError as e:
        raise VideoInputError(str(e)) from None
    if sr != SAMPLE_RATE:
        wave = resample_audio(torch.from_numpy(wave), sr, SAMPLE_RATE).numpy()
    return wave


def read_clip_folder(folder: Path, image_size: int) -> SampledInput:
    frames, wav = clip_folder_files(folder)
    images = []
    for p in frames:
        try:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise VideoInputError(f"{p}: cannot decode this frame ({e})") from None
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        raise VideoInputError(f"{folder}: its frames differ in size ({', '.join(f'{w}x{h}' for w, h in sorted(sizes))})")
    width, height = images[0].size
    size_hw = (image_size, image_size)
    return SampledInput(path=folder, kind="clip folder",
                        frames=torch.from_numpy(np.stack([fit_frame(im, size_hw) for im in images])).permute(0, 3, 1, 2),
                        waveform=per_second(read_wav_16k(wav), len(images)), previews=[_preview(im) for im in images],
                        width=width, height=height, fps=Fraction(1), duration=float(len(images)))
