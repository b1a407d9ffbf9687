"""End-to-end runs of the one training loop on SynthAVS `smoke` (random tiny encoders: no pretraining)."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest

from clavs.config import resolve_config
from clavs.engine.loop import TrainingDiverged
from clavs.engine.runner import run_experiment
from clavs.methods.base import Method, register
from clavs.metrics import continual_summary
from clavs.results import RunDir, load_run

FAST = ["model.visual_weights=none", "model.audio_weights=none", "protocol.split=11-6"]


def _config(tmp_path, *overrides, method=None):
    return resolve_config(preset="smoke", method=method, options={"runs_dir": str(tmp_path / "runs"), "progress": False},
                          overrides=[*FAST, *overrides])


def test_smoke_run_writes_complete_run_dir(clavs_home, tmp_path):
    path = run_experiment(_config(tmp_path))
    run = load_run(path)
    assert run["done"]
    T = run["matrices"]["tasks"]
    assert T == 3
    for name in ("map", "maxf", "maxf_official", "miou", "aupr", "dice", "f1", "acc"):
        R = run["matrices"]["metrics"][name]["R"]
        b = run["matrices"]["metrics"][name]["b"]
        assert len(R) == T and all(len(row) == T for row in R)
        assert all(v is not None for v in b)
        for t in range(T):  # after task t: seen tasks and the next one; nothing beyond
            for j in range(T):
                assert (R[t][j] is not None) == (j <= t + 1), (name, t, j)
        expected = continual_summary([[math.nan if v is None else v for v in row] for row in R], b)
        for key, value in expected.items():
            got = run["summary"][name][key]
            assert (got is None and (value is None or math.isnan(value))) or got == pytest.approx(value)
    prof = run["profile"]
    assert len(prof["tasks"]) == T and prof["tasks"][0]["train_frames_per_s"] > 0
    assert prof["tasks"][0]["trainable_parameters"] < prof["tasks"][0]["total_parameters"]  # ATLAS: LoRA, frozen base
    assert sorted(p.name for p in (path / "checkpoints").iterdir()) == [f"task_{t}.pt" for t in range(T)]
    assert run["config"]["method"]["name"] == "atlas"


def test_same_seed_same_numbers(clavs_home, tmp_path):
    a = load_run(run_experiment(_config(tmp_path / "a")))["matrices"]
    b = load_run(run_experiment(_config(tmp_path / "b")))["matrices"]
    assert a == b


def test_validation_matrix_last_row_or_full(clavs_home, tmp_path):
    """train.val_matrix: `last` scores the validation clips after the final task only (the AA that
    hyperparameters are chosen on); `full` fills every row and b like the test matrix. Training, the
    test matrix and the run's hash are the same either way."""
    last = run_experiment(_config(tmp_path / "a"))
    full = run_experiment(_config(tmp_path / "b", "train.val_matrix=full"))
    assert last.name == full.name  # same hash: the key records, it does not change what is learned
    a, b = load_run(last), load_run(full)
    assert a["matrices"] == b["matrices"] and a["profile"]["tasks"][-1]["best_epoch"] == b["profile"]["tasks"][-1]["best_epoch"]
    T = a["matrices"]["tasks"]
    for name, m in a["matrices_val"]["metrics"].items():
        full_m = b["matrices_val"]["metrics"][name]
        assert m["b"] is None and all(v is not None for v in full_m["b"])
        assert m["R"][T - 1] == full_m["R"][T - 1] and all(v is not None for v in m["R"][T - 1])
        assert all(v is None for row in m["R"][:T - 1] for v in row)
        assert all(full_m["R"][t][j] is not None for t in range(T) for j in range(min(t + 2, T)))
    assert a["summary_val"]["map"]["aa"] == b["summary_val"]["map"]["aa"]
    assert a["summary_val"]["map"]["forgetting"] is None  # needs the earlier rows: not measured


def _cli(*args, env):
    return [sys.executable, "-m", "clavs.cli", *args]


def test_sigkill_after_first_task_then_resume_gives_identical_matrices(clavs_home, tmp_path):
    env = dict(os.environ, CLAVS_HOME=str(clavs_home))
    args = ["run", "--preset", "smoke", "--no-progress", "--runs-dir", str(tmp_path / "killed"), *FAST]
    proc = subprocess.Popen(_cli(*args, env=env), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    ck = None
    while time.time() < deadline and proc.poll() is None:
        found = list((tmp_path / "killed").rglob("task_0.pt"))
        if found:
            ck = found[0]
            break
        time.sleep(0.05)
    assert ck is not None, f"no checkpoint appeared: {proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ''}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = ck.parent.parent
    assert not (run_dir / "DONE").exists()
    done = subprocess.run(_cli("run", "--resume", str(run_dir), "--no-progress", env=env), env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed from task_" in (run_dir / "log.txt").read_text()
    resumed = load_run(run_dir)["matrices"]
    straight = load_run(run_experiment(_config(tmp_path / "straight")))["matrices"]
    assert resumed == straight


@register
class _ExplodesAtTaskOne(Method):
    """Test-only method: a NaN loss in task 1."""

    name = "_test_explodes"
    trains = ("decoder",)

    def training_step(self, batch, model):
        terms = super().training_step(batch, model)
        if self.task.id == 1:
            terms["bce"] = terms["bce"] * float("nan")
        return terms


def test_nan_loss_stops_with_task_epoch_step_and_keeps_finished_tasks(clavs_home, tmp_path):
    config = _config(tmp_path, method="_test_explodes")
    with pytest.raises(TrainingDiverged, match=r"task 1 .*epoch 0, step 0"):
        run_experiment(config)
    run_dir = next((tmp_path / "runs").rglob("config.yaml")).parent
    run = RunDir(run_dir)
    assert not run.done
    assert run.latest_checkpoint()[0] == 0
    R = run.matrices()["metrics"]["map"]["R"]
    assert R[0][0] is not None and R[1][1] is None
    assert "STOPPED" in (run_dir / "log.txt").read_text()


@register
class _ExplodesAtTaskZero(Method):
    """Test-only method: a NaN loss in the very first step."""

    name = "_test_explodes_first"
    trains = ("decoder",)

    def training_step(self, batch, model):
        return {"bce": super().training_step(batch, model)["bce"] * float("nan")}


def test_nan_in_the_first_task_keeps_the_initial_scores(clavs_home, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"task 0 .*epoch 0, step 0.*no task was finished"):
        run_experiment(_config(tmp_path, method="_test_explodes_first"))
    run_dir = next((tmp_path / "runs").rglob("config.yaml")).parent
    m = RunDir(run_dir).matrices()["metrics"]["map"]
    assert all(v is not None for v in m["b"]) and all(v is None for row in m["R"] for v in row)


def test_resume_refuses_data_that_now_splits_differently(clavs_home, tmp_path):
    import json

    path = run_experiment(_config(tmp_path))
    (path / "DONE").unlink()
    scenario = json.loads((path / "scenario.json").read_text())
    scenario["tasks"][0]["train"] = scenario["tasks"][0]["train"][:-1]
    (path / "scenario.json").write_text(json.dumps(scenario))
    with pytest.raises(ValueError, match="scenario.json: the tasks built from the data now differ"):
        run_experiment(_config(tmp_path), run_dir=path)


@pytest.mark.parametrize("method", ["si", "lwf"])
def test_task_free_stream_resumes_exactly_mid_stream(clavs_home, tmp_path, method):
    """Hidden boundaries: the stream's optimiser, the step count, the consolidation window, the
    running path integral / teacher and the anytime curve are all in the checkpoint."""
    import shutil

    config = _config(tmp_path, "protocol.split=31-5", "protocol.num_tasks=3", "protocol.anytime_every=1",
                     "method.consolidate_every=3", "train.epochs=2", method=method)
    config["protocol"]["name"] = "tfcl"
    straight = run_experiment(config)
    killed = tmp_path / "killed"
    shutil.copytree(straight, killed)
    (killed / "DONE").unlink()
    for t in (1, 2):  # what a kill after the first hidden task leaves
        (killed / "checkpoints" / f"task_{t}.pt").unlink()
    run_experiment(config, run_dir=killed)
    assert "resumed from task_0.pt" in (killed / "log.txt").read_text()
    a, b = load_run(straight), load_run(killed)
    assert a["matrices"] == b["matrices"] and a["matrices_val"] == b["matrices_val"]
    assert [p["scores"] for p in a["anytime"]["points"]] == [p["scores"] for p in b["anytime"]["points"]]
