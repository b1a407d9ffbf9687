"""`clavs predict`: segment the sounding objects of a user's video (or clip folder) with a run's checkpoint.

The input is sampled as AVSBench samples its clips (data/video.py: one frame and one second of
16 kHz audio per second), the audio embedded by the run's frozen encoder as the clip cache embeds it,
and the seconds cut into windows of five, the clip length the model was trained on:

    windows = [0,5), [5,10), ..., and, when N is not a multiple of 5, the final five seconds [N-5, N)
    (overlapping the previous window, so no window is shorter than the training clips); a video
    shorter than five seconds is one window padded by repeating its last second (frame and audio),
    as AVSBench pads a short clip's audio by repeating its last second.

Every second takes its mask from the first window that holds it, so each of the N seconds appears
exactly once in the outputs. Outputs under --out (all written atomically):

    masks/<second:04d>.png   uint8 0/255 at the video's resolution: the logits, bilinearly resized
                             from the model's S x S to H x W, > 0 (sigmoid > 0.5, as AVSBench scores)
    overlay.mp4              every frame of the input up to N s with its second's mask drawn over it,
                             and the input's sound (reports/overlay_video.py)
    overlay.gif              the sampled frame of each second with its mask, a second each
    predictions.json         the sampling, the windows and, where the run has a class head, each
                             window's class probabilities (softmax of the clip's class logits, the mean
                             over its five frames, over the classes seen up to the checkpoint's task;
                             TIL: over the given task's classes)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clavs.batch import clip_class_logits
from clavs.data.avsbench import NUM_FRAMES
from clavs.utils.io import atomic_write, atomic_write_json

MASK_DIR = "masks"


def windows(seconds: int, length: int = NUM_FRAMES) -> list[tuple[int, int]]:
    """[start, end) of each window of `length` seconds covering seconds 0..seconds-1 (module docstring)."""
    if seconds < 1:
        raise ValueError(f"no second to cover (seconds={seconds})")
    starts = list(range(0, seconds - length + 1, length)) or [0]
    if starts[-1] + length < seconds:
        starts.append(seconds - length)
    return [(s, min(s + length, seconds)) for s in starts]


def window_rows(start: int, end: int, length: int = NUM_FRAMES) -> list[int]:
    """The seconds a window feeds the model: start..end-1, the last repeated up to `length`."""
    return list(range(start, end)) + [end - 1] * (length - (end - start))


@dataclass
class Prediction:
    """mask_logits [N,S,S] float (one per second); per window: [start, end), the seconds it gives
    (`owns`) and its class probabilities {class name: p} (None without a class head)."""

    mask_logits: torch.Tensor
    windows: list[dict[str, Any]]


def predict_seconds(restored: Any, frames: torch.Tensor, waveform: torch.Tensor, task_id: int) -> Prediction:
    """Run the restored method over the windows of N seconds: frames [N,3,S,S] uint8, waveform [N,16000]."""
    seconds = frames.shape[0]
    audio = restored.embed_waveforms(waveform[None])[0]  # [N, D], the clip cache's embedding
    spans = windows(seconds)
    names = restored.seen_classes
    logits = torch.empty(seconds, *frames.shape[-2:])
    owner = [-1] * seconds
    out_windows = []
    batch_size = int(restored.config["train"]["eval_batch_size"])
    for first in range(0, len(spans), batch_size):
        part = spans[first:first + batch_size]
        rows = torch.tensor([window_rows(s, e) for s, e in part])  # [B, 5]
        out = restored.predict(frames[rows], audio[rows], task_id=task_id)
        mask = out.mask_logits[:, 0].float().cpu().reshape(len(part), NUM_FRAMES, *frames.shape[-2:])
        probs = allowed = None
        if out.class_logits is not None and names:
            clip_logits = clip_class_logits(out.class_logits.float(), len(part)).cpu()
            allowed = torch.isfinite(clip_logits)  # TIL: only the given task's classes
            probs = torch.softmax(clip_logits, -1)
        for i, (s, e) in enumerate(part):
            owns = [sec for sec in range(s, e) if owner[sec] < 0]
            for sec in owns:
                owner[sec] = first + i
                logits[sec] = mask[i, sec - s]
            entry: dict[str, Any] = {"window": first + i, "start": s, "end": e, "owns": owns,
                                     "padded": NUM_FRAMES - (e - s)}
            if probs is not None:
                entry["classes"] = {names[c]: float(probs[i, c]) for c in range(min(len(names), probs.shape[1]))
                                    if allowed[i, c]}
                entry["top"] = max(entry["classes"], key=entry["classes"].get) if entry["classes"] else None
            out_windows.append(entry)
    return Prediction(mask_logits=logits, windows=out_windows)


def masks_at(logits: torch.Tensor, height: int, width: int) -> np.ndarray:
    """bool [n,H,W]: the logits [n,S,S] resized bilinearly to H x W, > 0 (sigmoid > 0.5)."""
    big = F.interpolate(logits[:, None].float(), size=(height, width), mode="bilinear", align_corners=False)
    return (big[:, 0] > 0).numpy()


def _save_png(path: Path, image: Image.Image) -> None:
    atomic_write(path, lambda f: image.save(f, format="PNG"), "wb")


def write_outputs(out_dir: Path, sampled: Any, restored: Any, prediction: Prediction, task_id: int) -> dict[str, Any]:
    """Masks, overlay video and GIF, predictions.json (module docstring); returns predictions.json's content."""
    from clavs.data.video import video_audio, video_frames
    from clavs.reports.overlay_video import draw_mask, write_gif, write_overlay_video

    out_dir = Path(out_dir)
    seconds = sampled.seconds
    mask_dir = out_dir / MASK_DIR
    mask_dir.mkdir(parents=True, exist_ok=True)
    for stale in mask_dir.glob("*.png"):  # an earlier prediction of a longer video into the same folder
        if stale.stem.isdigit() and int(stale.stem) >= seconds:
            stale.unlink()
    files = []
    foreground = []
    for sec in range(seconds):
        mask = masks_at(prediction.mask_logits[sec:sec + 1], sampled.height, sampled.width)[0]
        name = f"{MASK_DIR}/{sec:04d}.png"
        _save_png(out_dir / name, Image.fromarray((mask * 255).astype(np.uint8), mode="L"))
        files.append(name)
        foreground.append(float(mask.mean()))

    cache: dict[int, np.ndarray] = {}

    def mask_at(t: float) -> np.ndarray:
        sec = min(max(int(math.floor(t)), 0), seconds - 1)
        if sec not in cache:
            cache.clear()  # frames come in time order: one second's mask at a time
            cache[sec] = masks_at(prediction.mask_logits[sec:sec + 1], sampled.height, sampled.width)[0]
        return cache[sec]

    if sampled.kind == "video":
        frames, audio = video_frames(sampled.path), video_audio(sampled.path)
    else:
        frames, audio = _folder_frames(sampled), _folder_audio(sampled)
    video = write_overlay_video(out_dir / "overlay.mp4", frames, sampled.fps, mask_at, audio, seconds)
    previews = [Image.fromarray(draw_mask(np.asarray(im), masks_at(prediction.mask_logits[sec:sec + 1],
                                                                   im.height, im.width)[0]))
                for sec, im in enumerate(sampled.previews)]
    write_gif(out_dir / "overlay.gif", previews)

    report = {
        "input": str(sampled.path), "kind": sampled.kind, "width": sampled.width, "height": sampled.height,
        "fps": float(sampled.fps), "duration": sampled.duration, "seconds": seconds,
        "run": str(restored.path), "method": restored.config["method"]["name"], "protocol": restored.protocol,
        "checkpoint": restored.checkpoint.name, "tasks_trained": restored.task + 1,
        "task_id": task_id if task_id >= 0 else None,
        "sampling": "second l: the frame on screen at l + 15/16 s (AVSBench) and the audio of [l, l+1) s, "
                    "mono 16 kHz; a trailing part-second is dropped",
        "window_seconds": NUM_FRAMES,
        "windows_rule": "consecutive windows of 5 s; the last is the final 5 s (overlapping); shorter videos "
                        "repeat their last second; each second's mask comes from the first window holding it",
        "masks": {"files": files, "resolution": [sampled.height, sampled.width], "threshold": "sigmoid > 0.5",
                  "foreground_fraction": foreground},
        "class_head": bool(restored.seen_classes),
        "windows": prediction.windows,
        "overlay": {"video": "overlay.mp4", **video, "gif": "overlay.gif"},
    }
    atomic_write_json(out_dir / "predictions.json", report)
    return report


def _folder_frames(sampled: Any):
    from clavs.data.video import clip_folder_files

    frames, _ = clip_folder_files(sampled.path)
    for sec, p in enumerate(frames[: sampled.seconds]):
        with Image.open(p) as im:
            yield np.asarray(im.convert("RGB")), float(sec)


def _folder_audio(sampled: Any):
    from clavs.data.audio import read_wav
    from clavs.data.video import clip_folder_files

    _, wav = clip_folder_files(sampled.path)
    wave, rate = read_wav(wav)
    yield wave[None, :].astype(np.float32), rate, "mono"


def predict_input(run_dir: str | Path, input_path: str | Path, out_dir: str | Path, *, task_id: int | None = None,
                  checkpoint: str | None = None, accelerator: str = "cpu") -> dict[str, Any]:
    """`clavs predict`: the run's config and checkpoint are checked, then the input is read (cheap
    failures first), then the run is restored and the outputs written. Returns predictions.json."""
    from clavs.data.video import read_input
    from clavs.engine.restore import choose_task_id, find_checkpoint, read_scenario, restore_run
    from clavs.results.checkpoints import SCENARIO_FILE, check_run_binding
    from clavs.results.store import RunDir

    run = RunDir(Path(run_dir))
    config = check_run_binding(run)  # names config.yaml when it is missing or edited
    trained, _ = find_checkpoint(run, checkpoint)
    choose_task_id(run.path, read_scenario(run.path / SCENARIO_FILE), trained, task_id)
    sampled = read_input(input_path, int(config["data"]["image_size"]))
    restored = restore_run(run.path, checkpoint, accelerator=accelerator)
    tid = restored.task_id(task_id)
    prediction = predict_seconds(restored, sampled.frames, sampled.waveform, tid)
    return write_outputs(Path(out_dir), sampled, restored, prediction, tid)
