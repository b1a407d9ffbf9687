"""Restoring a run for prediction (engine/restore.py) and `clavs predict` on a user's video.

The oracle of a restored run is the run itself: scoring its test clips again with the restored
method must give the numbers matrices.json recorded after that checkpoint's task."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from clavs.batch import Batch
from clavs.config import resolve_config
from clavs.engine.clips import ClipSubset, embed_audio
from clavs.engine.evaluate import evaluate_batches
from clavs.engine.restore import restore_run
from clavs.engine.runner import dataset_root, decode_stores, open_datasets, run_experiment
from clavs.errors import ClavsError, RunDirError
from clavs.methods import available_methods, get_method_class

FAST = ["model.visual_weights=none", "model.audio_weights=none", "protocol.split=11-6"]
LAST = "train.keep_checkpoints=last"  # the ATLAS run keeps only its newest checkpoint


@pytest.fixture(scope="module")
def smoke_run(clavs_home, tmp_path_factory):
    """run(method, protocol, *overrides) -> run directory, each trained once per module (3 S4 tasks;
    tfcl: 3 tasks of the smoke MS3 stream)."""
    done: dict[tuple, object] = {}
    root = tmp_path_factory.mktemp("predict_runs")

    def run(method: str, protocol: str, *overrides: str):
        key = (method, protocol, overrides)
        if key not in done:
            split = ["protocol.split=31-5", "protocol.num_tasks=3"] if protocol == "tfcl" else []
            config = resolve_config(preset="smoke", method=method,
                                    options={"runs_dir": str(root), "progress": False, "protocol.name": protocol},
                                    overrides=[*FAST, *split, *overrides])
            done[key] = run_experiment(config)
        return done[key]

    return run


def _test_clips(config):
    """The run's test clips, decoded as the run decoded them (the clip cache), with their class indices."""
    datasets = open_datasets(config, dataset_root(config, progress=False))
    store = decode_stores(config, {"test": datasets["test"]}, None)["test"]
    return store, datasets["test"].records


def _rescore(restored, store, records, j: int) -> dict[str, float]:
    """Every metric of the restored method on task j's test clips (as engine/loop.Trainer.score does)."""
    scenario = restored.scenario
    class_index = torch.tensor(scenario.class_indices_of(records), dtype=torch.long)
    task_id = j if scenario.tasks[j].task_id_visible else -1
    subset = ClipSubset(store, scenario.tasks[j].test, class_index, task_id)
    loader = DataLoader(subset, batch_size=restored.config["train"]["eval_batch_size"], collate_fn=Batch.collate)
    with restored.fabric.autocast():
        return evaluate_batches(restored.method, (b.prepared() for b in loader), has_classes=scenario.has_class_head)


def _check_rescored(path, checkpoint=None):
    """Restore `checkpoint` of the run at `path` (its audio embeddings equal the run's cached ones); its
    scores on every task scored after that checkpoint's task equal matrices.json's row. Returns it."""
    restored = restore_run(path, checkpoint)
    store, records = _test_clips(restored.config)
    from_cache = dataclasses.replace(store)
    embed_audio(from_cache, restored.audio_encoder, restored.audio_encoder_id)  # the entry the run wrote
    store.audio = restored.embed_waveforms(store.waveforms)
    assert torch.equal(store.audio, from_cache.audio)
    R = {name: m["R"] for name, m in json.loads((path / "matrices.json").read_text())["metrics"].items()}
    t = restored.task
    for j, recorded in enumerate(R["map"][t]):
        if recorded is None:
            continue
        scores = _rescore(restored, store, records, j)
        assert scores["map"] == pytest.approx(recorded, abs=1e-3), (j, scores, recorded)
        if "acc" in R:
            assert scores["acc"] == pytest.approx(R["acc"][t][j], abs=1e-6)
    return restored


# ================================================================== restoring a run

def test_restored_til_run_scores_what_the_run_recorded_with_every_checkpoint(smoke_run):
    path = smoke_run("lwf", "til")
    restored = _check_rescored(path)  # the latest: task 2, every task's mask head and the distillation teacher
    assert restored.task == 2 and restored.checkpoint.name == "task_2.pt"
    assert restored.model.num_task_heads == 3
    first = _check_rescored(path, "task_0")  # after task 0: one head; row 0 holds task 1 (forward transfer)
    assert first.task == 0 and first.model.num_task_heads == 1
    assert len(first.seen_classes) == 11 and len(restored.seen_classes) == 23
    # TIL chooses the mask head by task id: one must be given, among the tasks trained
    with pytest.raises(ClavsError, match="needs the task id"):
        first.task_id(None)
    with pytest.raises(ClavsError, match=r"task id 1 is not among the tasks task_0.pt was trained on"):
        first.task_id(1)
    assert restored.task_id(1) == 1


def test_restored_cil_atlas_run_scores_what_the_run_recorded(smoke_run):
    restored = _check_rescored(smoke_run("atlas", "cil", LAST))
    assert restored.protocol == "cil" and restored.task_id(None) == -1
    with pytest.raises(ClavsError, match="takes no task id"):
        restored.task_id(0)


def test_keep_last_checkpoint_leaves_the_newest_only_in_the_same_run_directory(smoke_run, videos, tmp_path, capsys):
    from clavs.results.store import run_dir_for

    path = smoke_run("atlas", "cil", LAST)
    assert sorted(p.name for p in (path / "checkpoints").iterdir()) == ["task_2.pt"]
    config = restore_run(path).config
    assert config["train"]["keep_checkpoints"] == "last"
    # which files stay on disk changes nothing computed: the run directory is the one `all` names
    every = json.loads(json.dumps(config))
    every["train"]["keep_checkpoints"] = "all"
    assert run_dir_for(every, "r") == run_dir_for(config, "r")
    code, text = _clavs(capsys, "predict", path, videos["3s"], "--out", tmp_path, "--checkpoint", "task_0")
    assert code == 2 and "no checkpoint 'task_0'; there are task_2" in text
    from clavs.config import ConfigError

    with pytest.raises(ConfigError, match="train.keep_checkpoints='some' is not one of all, last"):
        resolve_config(preset="smoke", overrides=["train.keep_checkpoints=some"])


def test_restore_refuses_run_dirs_it_cannot_use_naming_the_file(smoke_run, tmp_path):
    path = smoke_run("lwf", "til")
    with pytest.raises(RunDirError, match="no checkpoint 'task_7'; there are task_0, task_1, task_2"):
        restore_run(path, "task_7")
    copy = tmp_path / path.name
    shutil.copytree(path, copy)
    (copy / "scenario.json").unlink()
    with pytest.raises(RunDirError, match=r"scenario.json: missing"):
        restore_run(copy)
    for ck in (copy / "checkpoints").glob("*.pt"):
        ck.unlink()
    with pytest.raises(RunDirError, match=r"checkpoints: no task checkpoint"):
        restore_run(copy)
    (copy / "checkpoints").rmdir()
    with pytest.raises(RunDirError, match=r"checkpoints: no task checkpoint"):
        restore_run(copy)
    (copy / "config.yaml").unlink()
    with pytest.raises(RunDirError, match=r"config.yaml: missing"):
        restore_run(copy)


@pytest.mark.slow
@pytest.mark.parametrize("method", available_methods())
def test_every_method_restores_to_its_recorded_scores_and_predicts_a_video(smoke_run, method, videos, tmp_path,
                                                                          capsys):
    protocols = get_method_class(method).protocols
    protocol = "cil" if "cil" in protocols else protocols[0]
    run = smoke_run(method, protocol)
    _check_rescored(run)
    code, text = _clavs(capsys, "predict", run, videos["3s"], "--out", tmp_path)
    assert code == 0, text
    assert len(list((tmp_path / "masks").glob("*.png"))) == 3


# ================================================================== clavs predict on a user's video

FPS, SIZE, AUDIO_RATE = 10, (64, 48), 22050


def colour(i: int) -> tuple[int, int, int]:
    """The colour of frame i of the test videos: i in base 16 on red and green, 16 levels apart."""
    return (8 + 16 * (i % 16), 8 + 16 * (i // 16), 128)


def amplitude(second: int) -> float:
    """The sine amplitude of each second of the test videos' sound."""
    return 0.04 * (second + 1)


def make_video(path, seconds: float, *, audio: bool = True, video: bool = True):
    """An mp4 (H.264 + AAC stereo at 22.05 kHz) whose frame i is uniformly colour(i) with a white square,
    and whose second l is a 440 Hz sine of amplitude(l)."""
    import av

    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=FPS) if video else None
        if vs is not None:
            vs.width, vs.height = SIZE
            vs.pix_fmt = "yuv420p"
        as_ = c.add_stream("aac", rate=AUDIO_RATE) if audio else None
        if as_ is not None:
            as_.layout = "stereo"
        for i in range(round(seconds * FPS) if video else 0):
            img = np.full((SIZE[1], SIZE[0], 3), colour(i), np.uint8)
            img[4:12, 4:12] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            c.mux(vs.encode(frame))
        if vs is not None:
            c.mux(vs.encode(None))
        if as_ is not None:
            t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
            wave = (np.array([amplitude(int(s)) for s in t]) * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            for s in range(0, len(wave), 1000):  # chunks of another size than AAC's 1024
                frame = av.AudioFrame.from_ndarray(np.stack([wave[s:s + 1000]] * 2), format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = AUDIO_RATE, s
                c.mux(as_.encode(frame))
            c.mux(as_.encode(None))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    (root / "not_a_video.mp4").write_text("these are words, not frames\n")
    return {"12s": make_video(root / "twelve.mp4", 12), "3s": make_video(root / "three.mp4", 3),
            "silent": make_video(root / "silent.mp4", 3, audio=False), "half": make_video(root / "half.mp4", 0.5),
            "text": root / "not_a_video.mp4"}


def _clavs(capsys, *argv) -> tuple[int, str]:
    from clavs.cli import main

    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_reading_a_video_samples_the_frame_at_15_16_of_each_second_and_each_second_of_sound(videos):
    from clavs.data.video import read_video

    sampled = read_video(videos["12s"], 32)
    assert sampled.seconds == 12 and sampled.frames.shape == (12, 3, 32, 32) and sampled.waveform.shape == (12, 16000)
    assert (sampled.width, sampled.height, float(sampled.fps)) == (64, 48, 10.0)
    levels = np.array([colour(i) for i in range(120)], dtype=np.float64)
    for second in range(12):
        shown = sampled.frames[second, :, 24:, 24:].double().mean((1, 2)).numpy()  # away from the white square
        nearest = int(np.abs(levels - shown).sum(1).argmin())
        assert nearest == int(second * FPS + 15 / 16 * FPS), (second, shown)  # AVSBench's frame index
        rms = float(sampled.waveform[second, 800:-800].pow(2).mean().sqrt())  # the edges blend neighbours
        assert rms == pytest.approx(amplitude(second) / np.sqrt(2), rel=0.08), second


def test_predict_writes_a_mask_for_each_of_12_seconds_an_overlay_video_with_sound_and_a_gif(smoke_run, videos, tmp_path,
                                                                                          capsys):
    import av
    from PIL import Image

    run = smoke_run("lwf", "til")
    code, text = _clavs(capsys, "predict", run, videos["12s"], "--out", tmp_path, "--task-id", 1)
    assert code == 0, text
    report = json.loads((tmp_path / "predictions.json").read_text())
    assert report["seconds"] == 12 and report["task_id"] == 1 and report["checkpoint"] == "task_2.pt"
    spans = [(w["start"], w["end"]) for w in report["windows"]]
    assert spans == [(0, 5), (5, 10), (7, 12)]  # the last window: the final five seconds
    owned = [s for w in report["windows"] for s in w["owns"]]
    assert sorted(owned) == list(range(12)) and len(owned) == 12  # every second exactly once
    for w in report["windows"]:  # TIL: probabilities over task 1's six classes only
        assert len(w["classes"]) == 6 and sum(w["classes"].values()) == pytest.approx(1.0, abs=1e-5)
    masks = sorted((tmp_path / "masks").glob("*.png"))
    assert [p.name for p in masks] == [f"{s:04d}.png" for s in range(12)]
    for p in masks:
        im = Image.open(p)
        assert im.mode == "L" and im.size == SIZE and set(np.unique(np.asarray(im))) <= {0, 255}

    # Seconds 7-9 come from the window [5, 10), not from the overlapping [7, 12): redo that window.
    from clavs.data.video import read_video
    from clavs.engine.predict import masks_at

    restored = restore_run(run)
    sampled = read_video(videos["12s"], restored.config["data"]["image_size"])
    audio = restored.embed_waveforms(sampled.waveform[None])
    out = restored.predict(sampled.frames[None, 5:10], audio[:, 5:10], task_id=1)
    expected = masks_at(out.mask_logits[3:4, 0].float(), SIZE[1], SIZE[0])[0]
    assert np.array_equal(np.asarray(Image.open(masks[8])) > 0, expected)

    with av.open(str(tmp_path / "overlay.mp4")) as c:
        (vs,), (aud,) = c.streams.video, c.streams.audio
        assert aud.codec_context.name == "aac" and aud.rate == AUDIO_RATE
        assert float(aud.duration * aud.time_base) == pytest.approx(12.0, abs=0.05)
        assert float(vs.duration * vs.time_base) == pytest.approx(12.0, abs=0.05) and vs.frames == 120
        assert (vs.codec_context.width, vs.codec_context.height) == SIZE
    gif = Image.open(tmp_path / "overlay.gif")
    assert gif.n_frames == 12 and gif.info["duration"] == 1000


def test_predict_on_a_short_video_and_on_a_clip_folder_pads_one_window(smoke_run, videos, tmp_path, capsys):
    from PIL import Image

    from clavs.data.audio import write_wav

    run = smoke_run("atlas", "cil", LAST)
    code, text = _clavs(capsys, "predict", run, videos["3s"], "--out", tmp_path / "video")
    assert code == 0, text
    report = json.loads((tmp_path / "video" / "predictions.json").read_text())
    assert report["seconds"] == 3 and len(report["windows"]) == 1
    (window,) = report["windows"]
    assert (window["start"], window["end"], window["padded"], window["owns"]) == (0, 3, 2, [0, 1, 2])
    assert len(window["classes"]) == 23 and sum(window["classes"].values()) == pytest.approx(1.0, abs=1e-5)

    clip = tmp_path / "clip"  # an AVSBench-style clip folder: <name>_<k>.png and its wav
    clip.mkdir()
    for k in (1, 2, 3, 10):  # ordered by number, not by name
        Image.new("RGB", (40, 30), (20 * k, 0, 0)).save(clip / f"vid_{k}.png")
    t = np.arange(4 * 22050) / 22050
    write_wav(clip / "audio.wav", 0.2 * np.sin(2 * np.pi * 300 * t), sr=22050)
    code, text = _clavs(capsys, "predict", run, clip, "--out", tmp_path / "clip_out")
    assert code == 0, text
    report = json.loads((tmp_path / "clip_out" / "predictions.json").read_text())
    assert report["kind"] == "clip folder" and report["seconds"] == 4
    assert [Image.open(p).size for p in sorted((tmp_path / "clip_out" / "masks").glob("*.png"))] == [(40, 30)] * 4


def test_predict_refuses_bad_inputs_and_run_dirs_with_exit_code_2_naming_the_file(smoke_run, videos, tmp_path, capsys,
                                                                                  monkeypatch):
    run = smoke_run("lwf", "til")
    out = tmp_path / "out"
    cases = {
        "silent": "has no audio track",
        "half": "its video lasts 0.50 s; clavs predict needs at least one second",
        "text": "not a video file FFmpeg can read",
    }
    for name, message in cases.items():
        code, text = _clavs(capsys, "predict", run, videos[name], "--out", out, "--task-id", 0)
        assert code == 2 and f"error: {videos[name]}: {message}" in text, text
    code, text = _clavs(capsys, "predict", run, videos["12s"], "--out", out)
    assert code == 2 and "a TIL run needs the task id (--task-id K)" in text
    empty = tmp_path / "copy"
    shutil.copytree(run, empty)
    shutil.rmtree(empty / "checkpoints")
    code, text = _clavs(capsys, "predict", empty, videos["12s"], "--out", out, "--task-id", 0)
    assert code == 2 and f"{empty / 'checkpoints'}: no task checkpoint" in text
    (empty / "config.yaml").unlink()
    code, text = _clavs(capsys, "predict", empty, videos["12s"], "--out", out, "--task-id", 0)
    assert code == 2 and f"{empty}: no config.yaml here" in text
    assert not out.exists()  # nothing is written for a refused input

    monkeypatch.setitem(__import__("sys").modules, "av", None)  # PyAV not installed
    code, text = _clavs(capsys, "predict", run, videos["12s"], "--out", out, "--task-id", 0)
    assert code == 2 and "pip install 'clavs[video]'" in text
