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
from clavs.methods.base import Method, register, task_loss
from clavs.metrics import continual_summary
from clavs.results import RunDir, load_run

FAST = ["model.visual_weights=none", "model.audio_weights=none", "protocol.split=11-6"]


@pytest.fixture(scope="module")
def clavs_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("clavs_home")
    old = os.environ.get("CLAVS_HOME")
    os.environ["CLAVS_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("CLAVS_HOME", None)
    else:
        os.environ["CLAVS_HOME"] = old


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

    def loss(self, batch, out):
        terms = task_loss(batch, out, self.scenario, self.task)
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

    def loss(self, batch, out):
        return {"bce": task_loss(batch, out, self.scenario, self.task)["bce"] * float("nan")}


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


def test_lra_groups_typo_is_an_error(clavs_home, tmp_path):
    with pytest.raises(ValueError, match=r"method.lra_groups names unknown parameter groups \['decodr'\]"):
        run_experiment(_config(tmp_path, "method.lra_groups=[decodr]"))


@register
class _RecordsHooks(Method):
    """Test-only method: records the order of the hooks the engine calls."""

    name = "_test_hooks"
    trains = ("decoder",)
    calls: list = []

    def begin_task(self, task):
        super().begin_task(task)
        self.calls.append(("begin", task.id))

    def after_backward(self):
        assert any(p.grad is not None for p in self.model.decoder.parameters())
        self.calls.append("after_backward")

    def after_step(self):
        self.calls.append("after_step")

    def selection_state(self):
        self.calls.append("selection_state")
        return len(self.calls)

    def restore_selection_state(self, state):
        self.calls.append(("restore", state))

    def end_task(self, task, loader):
        n = sum(1 for _ in loader)
        self.calls.append(("end", task.id, n > 0))


def test_hooks_called_in_order_and_only_declared_groups_train(clavs_home, tmp_path):
    _RecordsHooks.calls.clear()
    run_experiment(_config(tmp_path, method="_test_hooks"))
    calls = _RecordsHooks.calls
    assert calls[0] == ("begin", 0)
    first_end = calls.index(("end", 0, True))
    middle = [c for c in calls[1:first_end] if c != "selection_state"]
    assert isinstance(middle[-1], tuple) and middle[-1][0] == "restore"  # best epoch's state restored
    assert calls[middle[-1][1] - 1] == "selection_state"  # ... the one taken when that epoch was chosen
    middle = middle[:-1]
    assert middle and all(c in ("after_backward", "after_step") for c in middle)
    assert middle[0::2] == ["after_backward"] * len(middle[0::2]) and middle[1::2] == ["after_step"] * len(middle[1::2])
    assert [c for c in calls if isinstance(c, tuple) and c[0] == "begin"] == [("begin", t) for t in range(3)]
