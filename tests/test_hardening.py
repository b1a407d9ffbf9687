"""Issue 11, hostile and unlucky inputs: no code runs from data, no stale or mixed results, no tracebacks.

Groups (one test per case): 1 code from data trees, 2 stale or damaged caches, 3 resumes that would
mix configurations, 4 concurrent builds and runs, 5 `data check` of what protocols need, 6 messages
instead of tracebacks, 7 late checks and junk. CLI cases assert the exit code, that the message names
the object, and that no traceback is printed.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from PIL import Image

from avs_tree import write_avs_tree, write_csv
from clavs.cli import main
from clavs.config import resolve_config
from clavs.engine.runner import run_experiment
from clavs.results import RunDir, load_run

FAST = ["model.visual_weights=none", "model.audio_weights=none", "protocol.split=11-6"]
TREE = ["model.visual_weights=none", "model.audio_weights=none", "protocol.split=1-1"]  # the 2-category test tree


def _config(runs: Path, *overrides: str, preset: str = "smoke") -> dict:
    return resolve_config(preset=preset, options={"runs_dir": str(runs), "progress": False}, overrides=[*FAST, *overrides])


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clavs", *args], capture_output=True, text=True,
                          env=env or dict(os.environ), **kw)


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


def _clean_error(capsys, *names: str) -> str:
    """The captured stderr of a failed main(): `error: ...` naming every one of `names`, no traceback."""
    captured = capsys.readouterr()
    err = captured.err
    _no_traceback(captured.out + err)
    assert "error: " in err, err
    for name in names:
        assert str(name) in err, (name, err)
    return err


@pytest.fixture(scope="module")
def lone_run(clavs_home, tmp_path_factory):
    """One uninterrupted smoke run (random tiny encoders) in the module's cache: the reference."""
    return run_experiment(_config(tmp_path_factory.mktemp("lone")))


@pytest.fixture(scope="module")
def clean_tree(tmp_path_factory):
    return write_avs_tree(tmp_path_factory.mktemp("tree"), odd_wav_lengths=False)


@pytest.fixture
def tree(clean_tree, tmp_path):
    root = tmp_path / "avs"
    shutil.copytree(clean_tree.root, root)
    return root


def _tree_file(root: Path, clean_tree, name: str, kind: str, k: int = 0) -> Path:
    return root / clean_tree.videos[name].paths[kind][k].relative_to(clean_tree.root)


# ============================================================================ 1. code from data trees
def _malicious_pickle(path: Path, marker: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps(Evil()))


def test_1_malicious_logmel_pickle_runs_nothing_and_the_checker_names_it(tree, clean_tree, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    pkl = _tree_file(tree, clean_tree, "s4dogT", "pkl")
    _malicious_pickle(pkl, marker)
    assert main(["data", "check", str(tree)]) == 1
    out = capsys.readouterr().out
    assert not marker.exists()
    line = next(line for line in out.splitlines() if line.startswith(str(pkl)))
    assert "refused to load global" in line and "system" in line


def test_1_malicious_pickle_is_refused_by_the_reader_too(tree, clean_tree, tmp_path):
    from clavs.data.avsbench import AVSBenchFileError, AVSBenchS4

    marker = tmp_path / "MARKER"
    _malicious_pickle(_tree_file(tree, clean_tree, "s4dogT", "pkl"), marker)
    with pytest.raises(AVSBenchFileError, match=r"s4dogT\.pkl.*refused"):
        AVSBenchS4(tree, "test", audio="logmel")[0]
    assert not marker.exists()


def test_1_a_pickle_smuggling_code_through_the_storage_loader_is_refused(tmp_path):
    """torch's own `_load_from_bytes` unpickles with weights_only=False; ours reads weights-only."""
    from clavs.data.audio import load_logmel_pickle

    marker = tmp_path / "MARKER"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    class Smuggle:
        def __reduce__(self):
            return (torch.storage._load_from_bytes, (pickle.dumps(Evil(), protocol=2),))

    path = tmp_path / "smuggle.pkl"
    path.write_bytes(pickle.dumps(Smuggle()))
    with pytest.raises(ValueError, match="smuggle.pkl"):
        load_logmel_pickle(path)
    assert not marker.exists()


# ============================================================================ 2. stale or damaged caches
def test_2_overwriting_every_frame_decodes_again_and_changes_the_matrices(clavs_home, tree, tmp_path):
    first = run_experiment(_tree_config(tmp_path / "a", tree))
    for png in (tree / "Single-source").rglob("visual_frames/**/*.png"):
        with Image.open(png) as im:
            size = im.size
        Image.new("RGB", size).save(png)  # black
    second = run_experiment(_tree_config(tmp_path / "b", tree))
    assert load_run(first)["matrices"] != load_run(second)["matrices"]


def _tree_config(runs: Path, root: Path, *overrides: str) -> dict:
    return resolve_config(preset="smoke", options={"runs_dir": str(runs), "progress": False, "data.root": str(root)},
                          overrides=[*TREE, *overrides])


def test_2_the_clip_cache_key_covers_every_frame_and_mask(tree, clean_tree):
    import os as _os

    from clavs.data.avsbench import AVSBenchS4
    from clavs.engine.clips import dataset_key

    ds = AVSBenchS4(tree, "val", image_size=32, audio="wav", normalize=False)
    before = dataset_key(ds, "val", 32)
    mask = _tree_file(tree, clean_tree, "s4heliV", "masks", 2)
    st = mask.stat()
    _os.utime(mask, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # an edited mask, same size
    assert dataset_key(ds, "val", 32) != before
    assert dataset_key(ds, "val", 64) != dataset_key(ds, "val", 32)


def test_2_a_damaged_clip_cache_entry_is_rebuilt_with_a_note(clavs_home, tree, capsys):
    from clavs.data.avsbench import AVSBenchS4
    from clavs.engine.clips import dataset_key, decode_split

    ds = AVSBenchS4(tree, "test", image_size=32, audio="wav", normalize=False)
    key = dataset_key(ds, "test", 32)
    first = decode_split(ds, key)
    frames = first.frames.clone()
    entry = clavs_home / "clips" / f"{key}.pt"
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the tensor data
    entry.write_bytes(bytes(data))
    capsys.readouterr()
    second = decode_split(ds, key)
    err = capsys.readouterr().err
    assert "decoded-clip cache entry" in err and str(entry) in err and "sha256" in err
    assert torch.equal(second.frames, frames)
    assert decode_split(ds, key).frames.equal(frames)


def test_2_a_truncated_audio_embedding_cache_is_rebuilt_with_a_note(tree, tmp_path, monkeypatch, capsys):
    from clavs.data.avsbench import AVSBenchS4
    from clavs.engine.clips import dataset_key, decode_split, embed_audio
    from clavs.models.encoders.audio_tiny import TinyAudioCNN

    monkeypatch.setenv("CLAVS_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    encoder = TinyAudioCNN().eval()
    ds = AVSBenchS4(tree, "val", image_size=32, audio="wav", normalize=False)
    store = decode_split(ds, dataset_key(ds, "val", 32))
    embed_audio(store, encoder, "test-encoder")
    reference = store.audio.clone()
    (entry,) = (tmp_path / "home" / "audio").glob("*.pt")
    entry.write_bytes(entry.read_bytes()[:100])
    capsys.readouterr()
    store.audio = None
    embed_audio(store, encoder, "test-encoder")
    err = capsys.readouterr().err
    assert "audio-embedding cache entry" in err and entry.name in err
    assert torch.equal(store.audio, reference)


def test_2_pretrained_weights_with_flipped_bits_are_pretrained_again(tmp_path, monkeypatch, capsys):
    from test_reproducible_builds import TINY

    from clavs.pretrain import ensure_pretrained

    monkeypatch.setenv("CLAVS_HOME", str(tmp_path / "home"))
    path = ensure_pretrained("audio", progress=False, settings=TINY)
    good = path.read_bytes()
    data = bytearray(good)
    data[-200] ^= 0x01
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert ensure_pretrained("audio", progress=False, settings=TINY) == path
    assert "damaged" in capsys.readouterr().err
    assert path.read_bytes() == good  # pretrained again, deterministically


def test_2_a_damaged_synthavs_build_is_rebuilt_with_a_note(tmp_path, capsys):
    from clavs.data.synth import SynthPreset, generate
    from clavs.data.synth.build import verify_build

    tiny = SynthPreset(s4_train=0, s4_val=0, s4_test=0, ms3_train=2, ms3_val=1, ms3_test=1)
    root = generate(tmp_path / "synth", preset=tiny, seed=0, workers=1, progress=False)
    assert verify_build(root) is None
    frame = next((root / "Multi-sources").rglob("*.mp4_3.png"))
    good = frame.read_bytes()
    frame.write_bytes(good[: len(good) // 2])
    wav = next((root / "Multi-sources").rglob("*.wav"))
    wav.unlink()
    assert frame.name in verify_build(root) and wav.name in verify_build(root)
    capsys.readouterr()
    generate(root, preset=tiny, seed=0, workers=1, progress=False)
    assert "damaged" in capsys.readouterr().err
    assert verify_build(root) is None and frame.read_bytes() == good and wav.is_file()


# ============================================================================ 3. resumes that would mix configs
def _killed_copy(lone_run: Path, tmp_path: Path, keep: int = 1) -> Path:
    """A copy of the finished lone run as a kill after task `keep - 1` leaves it (same folder name)."""
    killed = tmp_path / "runs" / lone_run.name
    shutil.copytree(lone_run, killed)
    (killed / "DONE").unlink()
    for ck in (killed / "checkpoints").glob("task_*.pt"):
        if int(ck.stem.split("_")[1]) >= keep:
            ck.unlink()
    return killed


def test_3_resume_after_editing_config_yaml_is_refused_naming_the_changed_key(lone_run, tmp_path, capsys):
    killed = _killed_copy(lone_run, tmp_path)
    config = yaml.safe_load((killed / "config.yaml").read_text())
    config["train"]["lr"] = 0.5
    config["train"]["epochs"] = 2
    (killed / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["run", "--resume", str(killed)]) == 2
    err = _clean_error(capsys, "config.yaml", "train.lr", "train.epochs", "0.5")
    assert "edited" in err
    assert not (killed / "DONE").exists() and not (killed / "checkpoints" / "task_1.pt").exists()


def test_3_a_new_run_into_a_folder_whose_config_was_edited_is_refused(lone_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    target = runs / lone_run.relative_to(lone_run.parents[3])
    shutil.copytree(lone_run, target)
    (target / "DONE").unlink()
    config = yaml.safe_load((target / "config.yaml").read_text())
    config["train"]["weight_decay"] = 0.3
    (target / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["run", "--preset", "smoke", "--runs-dir", str(runs), "--no-progress", *FAST]) == 2
    _clean_error(capsys, "train.weight_decay")


def test_3_another_runs_checkpoint_dropped_into_checkpoints_is_refused(lone_run, tmp_path, capsys):
    killed = _killed_copy(lone_run, tmp_path)
    payload = torch.load(lone_run / "checkpoints" / "task_2.pt", weights_only=True)
    payload["config"]["train"]["lr"] = 0.25  # as another run (another config) wrote it
    from clavs.results import config_hash

    payload["run_hash"] = config_hash(payload["config"])
    torch.save(payload, killed / "checkpoints" / "task_2.pt")
    assert main(["run", "--resume", str(killed)]) == 2
    _clean_error(capsys, "task_2.pt", "another run", "train.lr")
    assert not (killed / "DONE").exists()


def test_3_a_renamed_checkpoint_is_refused(lone_run, tmp_path, capsys):
    killed = _killed_copy(lone_run, tmp_path)
    shutil.copy(lone_run / "checkpoints" / "task_0.pt", killed / "checkpoints" / "task_2.pt")
    assert main(["run", "--resume", str(killed)]) == 2
    _clean_error(capsys, "task_2.pt", "holds task 0")


def test_3_resume_cleans_temporary_files_and_finishes_identically(lone_run, tmp_path):
    killed = _killed_copy(lone_run, tmp_path)
    junk = [killed / "checkpoints" / ".task_1.pt.x1y2.tmp", killed / ".matrices.json.a1b2.tmp"]
    for j in junk:
        j.write_bytes(b"torn")
    config = RunDir(killed).config()
    config["progress"] = False
    run_experiment(config, run_dir=killed)
    assert not any(j.exists() for j in junk)
    assert load_run(killed)["matrices"] == load_run(lone_run)["matrices"]
    assert "resumed from task_0.pt" in (killed / "log.txt").read_text()


# ============================================================================ 4. concurrent builds and runs
def test_4_a_held_lock_names_its_holder_and_the_second_process_waits(tmp_path):
    lock = tmp_path / "entry.lock"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys
from clavs.utils.locks import file_lock
with file_lock({str(lock)!r}, 'x'):
    print('held', flush=True)
    sys.stdin.readline()
"""], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    waiter = subprocess.Popen([sys.executable, "-c", f"""
from clavs.utils.locks import file_lock
with file_lock({str(lock)!r}, 'the test entry'):
    print('got it', flush=True)
"""], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = waiter.stderr.readline()  # written while the holder still holds the lock
    assert f"waiting for the test entry: locked by pid {holder.pid}" in line
    assert waiter.poll() is None
    holder.communicate("\n", timeout=60)
    out, _ = waiter.communicate(timeout=60)
    assert waiter.returncode == 0 and "got it" in out


def test_4_a_lock_of_a_killed_process_does_not_block(tmp_path):
    from clavs.utils.locks import file_lock

    lock = tmp_path / "entry.lock"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import time
from clavs.utils.locks import file_lock
with file_lock({str(lock)!r}, 'x'):
    print('held', flush=True)
    time.sleep(600)
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with file_lock(lock, "the entry"):
        pass


def test_4_two_synth_builds_into_one_folder_both_finish_with_an_intact_tree(tmp_path):
    from clavs.data.check import check_tree
    from clavs.data.synth.build import verify_build

    out = tmp_path / "synth"
    build = (f"from clavs.data.synth import SynthPreset, generate; "
             f"generate({str(out)!r}, preset=SynthPreset(0, 0, 0, 12, 3, 3), workers=1, progress=False)")
    procs = [subprocess.Popen([sys.executable, "-c", build], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    for out_text, err_text, code in results:
        assert code == 0, err_text
        _no_traceback(out_text + err_text)
    assert sum("waiting for the SynthAVS build" in err for _, err, _ in results) == 1  # they did meet
    assert verify_build(out) is None
    assert [p for p in check_tree(out, progress=False) if p.severity == "error"] == []


def test_4_two_runs_on_a_fresh_cache_started_2s_apart_both_finish_like_a_lone_run(lone_run, tmp_path):
    env = dict(os.environ, CLAVS_HOME=str(tmp_path / "fresh_cache"), HOME=str(tmp_path / "home"))
    procs = []
    for name in ("one", "two"):
        args = [sys.executable, "-m", "clavs", "run", "--preset", "smoke", "--runs-dir", str(tmp_path / name), *FAST]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        time.sleep(2.0)
    reference = load_run(lone_run)["matrices"]
    for name, proc in zip(("one", "two"), procs):
        out, err = proc.communicate(timeout=1200)
        assert proc.returncode == 0, err[-3000:]
        _no_traceback(out + err)
        assert "Warning" not in err, err[-3000:]  # e.g. no torch UserWarning from the progress bars
        run_dir = next((tmp_path / name).rglob("DONE")).parent
        assert load_run(run_dir)["matrices"] == reference, name


# ============================================================================ 5. data check: what protocols need
def _drop_rows(csv_path: Path, keep) -> None:
    lines = csv_path.read_text().splitlines()
    rows = [line.split(",") for line in lines[1:]]
    write_csv(csv_path, lines[0].split(","), [r for r in rows if keep(r)])


def test_5_clean_tree_says_which_protocols_it_serves(clean_tree, capsys):
    from clavs.data.check import check_main

    assert check_main(clean_tree.root) == 0
    out = capsys.readouterr().out
    assert "S4: can serve til, cil, dil" in out and "--split 1-1" in out and "MS3: can serve tfcl" in out


def test_5_a_category_without_test_videos_fails_the_check(tree, capsys):
    csv_path = tree / "Single-source" / "s4_meta_data.csv"
    _drop_rows(csv_path, lambda r: not (r[2] == "helicopter" and r[3] == "test"))
    assert main(["data", "check", str(tree)]) == 1
    out = capsys.readouterr().out
    assert f"{csv_path}: category(ies) 'helicopter' have no test videos" in out
    assert "S4: cannot serve til, cil, dil" in out and "FAILED" in out


def test_5_a_split_without_training_videos_fails_the_check_and_the_run(clavs_home, tree, tmp_path, capsys):
    csv_path = tree / "Multi-sources" / "ms3_meta_data.csv"
    _drop_rows(csv_path, lambda r: r[1] != "train")
    assert main(["data", "check", str(tree)]) == 1
    out = capsys.readouterr().out
    assert f"{csv_path}: no train videos" in out and "MS3: cannot serve tfcl" in out
    code = main(["run", "--preset", "smoke", "--protocol", "tfcl", "--data-root", str(tree), "--runs-dir",
                 str(tmp_path / "runs"), "--no-progress", "model.visual_weights=none", "model.audio_weights=none"])
    assert code == 2
    _clean_error(capsys, str(csv_path), "no train videos", "tfcl")
    assert not (tmp_path / "runs").exists()


# ============================================================================ 6. messages instead of tracebacks
def _run_tree(tree: Path, tmp_path: Path, *extra: str) -> int:
    return main(["run", "--preset", "smoke", "--data-root", str(tree), "--runs-dir", str(tmp_path / "runs"),
                 "--no-progress", *TREE, *extra])


def test_6_missing_frame(clavs_home, tree, clean_tree, tmp_path, capsys):
    frame = _tree_file(tree, clean_tree, "s4heliV", "frames", 2)
    frame.unlink()
    assert _run_tree(tree, tmp_path) == 2
    _clean_error(capsys, frame)


def test_6_unreadable_frame(clavs_home, tree, clean_tree, tmp_path, capsys):
    frame = _tree_file(tree, clean_tree, "s4dogB", "frames", 0)
    frame.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    assert _run_tree(tree, tmp_path) == 2
    _clean_error(capsys, frame, "cannot decode frame")


def test_6_decompression_bomb_png(clavs_home, tree, clean_tree, tmp_path, capsys):
    frame = _tree_file(tree, clean_tree, "s4dogT", "frames", 1)
    Image.new("1", (15000, 15000)).save(frame)  # a few KB on disk, 225 Mpixels decoded
    assert _run_tree(tree, tmp_path) == 2
    _clean_error(capsys, frame)
    assert main(["data", "check", str(tree)]) == 1
    assert str(frame) in capsys.readouterr().out


def test_6_wav_at_44_1_khz(clavs_home, tree, clean_tree, tmp_path, capsys):
    wav = _tree_file(tree, clean_tree, "s4dogA", "wav")
    sf.write(wav, np.zeros(44100 * 5, dtype=np.float32), 44100)
    assert _run_tree(tree, tmp_path) == 2
    _clean_error(capsys, wav, "44100 Hz")


def test_6_nan_audio_is_named_not_blamed_on_the_learning_rate(clavs_home, tree, clean_tree, tmp_path, capsys):
    wav = _tree_file(tree, clean_tree, "s4heliA", "wav")
    wave = np.zeros(16000 * 5, dtype=np.float32)
    wave[100] = np.nan
    sf.write(wav, wave, 16000, subtype="FLOAT")
    assert _run_tree(tree, tmp_path) == 2
    err = _clean_error(capsys, wav, "NaN")
    assert "train.lr" not in err


def test_6_binary_csv(clavs_home, tree, tmp_path, capsys):
    csv_path = tree / "Single-source" / "s4_meta_data.csv"
    csv_path.write_bytes(b"\xff\xfe\x00\x01binary\x00\x89")
    assert _run_tree(tree, tmp_path) == 2
    err = _clean_error(capsys, csv_path, "not a UTF-8 text file")
    assert "codec" not in err
    assert main(["data", "check", str(tree)]) == 1
    assert f"{csv_path}: line 1: not a UTF-8 text file" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["empty", "self-linked", "file"])
def test_6_data_root_that_is_not_a_tree(tmp_path, capsys, case):
    root = tmp_path / "root"
    if case == "empty":
        root.mkdir()
    elif case == "self-linked":
        root.symlink_to(root)
    else:
        root.write_text("not a folder")
    assert main(["run", "--preset", "smoke", "--data-root", str(root), "--runs-dir", str(tmp_path / "runs")]) == 2
    _clean_error(capsys, root)
    assert not (tmp_path / "runs").exists()


def test_6_unreadable_checkpoint(lone_run, tmp_path, capsys):
    killed = _killed_copy(lone_run, tmp_path, keep=2)
    (killed / "checkpoints" / "task_1.pt").write_bytes(b"PK\x03\x04 truncated")
    assert main(["run", "--resume", str(killed)]) == 2
    _clean_error(capsys, "task_1.pt", "cannot read checkpoint")


def test_6_unreadable_weights_file(clavs_home, tree, tmp_path, capsys):
    weights = tmp_path / "audio.pt"
    weights.write_bytes(b"not a checkpoint")
    assert _run_tree(tree, tmp_path, f"model.audio_weights={weights}") == 2
    _clean_error(capsys, weights)


def test_6_runs_dir_that_is_a_file(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.write_text("a file")
    assert main(["run", "--preset", "smoke", "--runs-dir", str(runs), *FAST]) == 2
    _clean_error(capsys, runs, "is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_6_read_only_runs_dir(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)
    try:
        assert main(["run", "--preset", "smoke", "--runs-dir", str(runs), *FAST]) == 2
        _clean_error(capsys, runs, "not writable")
    finally:
        runs.chmod(0o755)


def test_6_cache_home_that_cannot_be_written(tmp_path, monkeypatch, capsys):
    home = tmp_path / "cache"
    home.write_text("a file where the cache folder should be")
    monkeypatch.setenv("CLAVS_HOME", str(home))
    assert main(["run", "--preset", "smoke", "--runs-dir", str(tmp_path / "runs"), "--no-progress", *FAST]) == 2
    _clean_error(capsys, home)


def test_6_debug_shows_the_traceback(tmp_path):
    from clavs.config import ConfigError

    with pytest.raises(ConfigError, match="train.lr"):
        main(["--debug", "run", "--runs-dir", str(tmp_path), "train.lr=-1"])


def test_6_ctrl_c_stops_cleanly_keeps_finished_tasks_and_resumes_identically(clavs_home, tmp_path):
    # Seven tasks, so that Ctrl-C after the first one lands while the run is still working (with warm
    # caches the two tasks of FAST finish within a second of task 0's checkpoint: the signal came late).
    many_tasks = "protocol.split=11-2"
    reference = run_experiment(_config(tmp_path / "reference", many_tasks))
    env = dict(os.environ, CLAVS_HOME=str(clavs_home))
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "clavs", "run", "--preset", "smoke", "--runs-dir", str(runs), *FAST,
                             many_tasks], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # A shell that starts a job in the background ignores SIGINT, and the child
                            # would inherit that: give the run the default, as a terminal's Ctrl-C finds it.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not list(runs.rglob("task_0.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    _no_traceback(out + err)
    run_dir = next(runs.rglob("config.yaml")).parent
    assert "interrupted: tasks 0.." in err and f"clavs run --resume {run_dir}" in err
    assert not list(run_dir.rglob("*.tmp"))
    done = _cli("run", "--resume", str(run_dir), "--no-progress", env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_run(run_dir)["matrices"] == load_run(reference)["matrices"]


# ============================================================================ 7. late checks and junk
@pytest.mark.parametrize("override,key", [
    ("train.lr=0", "train.lr"), ("train.lr=.nan", "train.lr"), ("train.weight_decay=-0.1", "train.weight_decay"),
    ("train.grad_clip=0", "train.grad_clip"), ("train.epochs=true", "train.epochs"),
    ("experiment=/abs/path", "experiment"), ("experiment=../up", "experiment"), ("engine.devices=0", "engine.devices"),
    ("data.synth_preset=huge", "data.synth_preset"), ("protocol.blur=2", "protocol.blur"),
])
def test_7_bad_values_are_refused_before_anything_is_written(tmp_path, capsys, override, key):
    runs = tmp_path / "runs"
    assert main(["run", "--preset", "smoke", "--runs-dir", str(runs), override]) == 2
    _clean_error(capsys, key)
    assert not runs.exists()


def test_7_runs_and_table_of_a_missing_folder_fail(tmp_path, capsys):
    for command in ("runs", "table"):
        assert main([command, str(tmp_path / "nonexistent")]) == 2
        _clean_error(capsys, "nonexistent", "no such folder")


def _fake_run(path: Path, seed: int) -> Path:
    run = RunDir(path).create()
    run.write_config({"experiment": "x", "seed": seed, "protocol": {"name": "cil"}, "method": {"name": "atlas"}})
    run.write_matrices(1, {"map": {"R": [[50.0 + seed]], "b": [1.0]}})
    run.write_summary({"map": {"la": 50.0 + seed, "aa": 50.0 + seed, "a_inc": 50.0, "forgetting": None, "bwt": None,
                               "fwt": None}})
    run.mark_done()
    return run.path


def test_7_table_runs_and_show_skip_and_name_a_damaged_run(tmp_path, capsys):
    good = [_fake_run(tmp_path / f"good{s}", s) for s in (0, 2)]
    bad_matrices = _fake_run(tmp_path / "bad_matrices", 4)
    (bad_matrices / "matrices.json").write_text("{ torn")
    bad_config = _fake_run(tmp_path / "bad_config", 6)
    (bad_config / "config.yaml").write_text("seed: [unclosed")
    assert main(["table", str(tmp_path), "--format", "md", "--layout", "runs"]) == 0
    captured = capsys.readouterr()
    assert "| x | cil | atlas |  | 0,2 | 51.00 ± 1.41 |" in captured.out
    assert f"skipped damaged run {bad_matrices}" in captured.err and "matrices.json" in captured.err
    assert f"skipped damaged run {bad_config}" in captured.err and "config.yaml" in captured.err
    _no_traceback(captured.out + captured.err)
    assert main(["runs", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("atlas") == 3 and f"skipped damaged run {bad_config}" in captured.err
    assert main(["show", str(bad_matrices)]) == 2
    _clean_error(capsys, bad_matrices / "matrices.json")
    assert main(["show", str(good[0])]) == 0


def test_7_files_get_the_users_umask(tmp_path):
    from clavs.utils.io import atomic_write_text

    old = os.umask(0o027)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    old = os.umask(0o022)
    try:
        run = RunDir(tmp_path / "run").create()
        run.write_config({"seed": 0})
    finally:
        os.umask(old)
    assert (run.path / "config.yaml").stat().st_mode & 0o777 == 0o644
