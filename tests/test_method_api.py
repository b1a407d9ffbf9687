"""The method contract (methods/base.py): the order of the hooks and the data each one receives,
pinned with toy methods on SynthAVS `smoke` (random tiny encoders)."""


import pytest
import torch
from torch import nn

from clavs.batch import Batch, ModelOutput
from clavs.config import resolve_config
from clavs.engine.runner import run_experiment
from clavs.methods.base import Method, register
from clavs.methods.parts import FrozenTeacher
from clavs.results import load_run

FAST = ["model.visual_weights=none", "model.audio_weights=none", "protocol.split=11-6"]


def _config(tmp_path, *overrides, method):
    return resolve_config(preset="smoke", method=method, options={"runs_dir": str(tmp_path / "runs"), "progress": False},
                          overrides=[*FAST, *overrides])


class _Adapter(nn.Module):
    """A method-owned module: one scale per mask logit map."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))


@register
class _Recorder(Method):
    """Test-only method: records every hook with what it received."""

    name = "_test_recorder"
    trains = ("decoder", "mask_head", "class_head", "toy_adapter")
    calls: list = []
    seen: dict = {}

    def __init__(self, model, hparams, scenario, ctx):
        super().__init__(model, hparams, scenario, ctx)
        self.adapter = self.register_module("toy_adapter", _Adapter())
        self.teacher = FrozenTeacher(autocast=ctx.autocast)
        self.teacher.refresh(model)
        self.calls.append(("init",))

    def begin_task(self, task):
        super().begin_task(task)
        self.calls.append(("begin_task", None if task is None else task.id))

    def param_groups(self, lr, weight_decay):
        groups = super().param_groups(lr, weight_decay)
        own = {id(p) for p in self.adapter.parameters()}
        rest = [p for p in groups[0]["params"] if id(p) not in own]
        self.calls.append(("param_groups",))
        return [{"name": "network", "params": rest, "lr": lr, "weight_decay": weight_decay},
                {"name": "toy_adapter", "params": list(self.adapter.parameters()), "lr": 10 * lr, "weight_decay": 0.0}]

    def augment_batch(self, batch):
        self.seen["batch_size_before"] = batch.size
        self.calls.append(("augment_batch",))
        return Batch.cat([batch, batch.select([0])])  # one more sample: a copy of the first clip

    def training_step(self, batch, model):
        out = model(batch)
        teacher_out = self.teacher(batch)  # a second forward on the same (S4 training) batch
        self.seen.setdefault("train", []).append({
            "size": batch.size, "frame_ids": batch.frame_ids, "frames": tuple(batch.frames.shape),
            "mask_rows": out.mask_logits.shape[0], "teacher_rows": teacher_out.mask_logits.shape[0],
            "dtype": batch.frames.dtype, "max": float(batch.frames.max()), "labelled": bool(batch.mask_valid[:, batch.decoded_frames].all()),
            "task_id": sorted(set(batch.task_id.tolist()))})
        terms = self.task_loss(batch, out)
        terms["adapter"] = (self.adapter.scale - 2).pow(2).sum()
        self.calls.append(("training_step",))
        return terms

    def after_backward(self):
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        self.seen.setdefault("grad_norms", []).append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        self._before = self.adapter.scale.detach().clone()
        self._decoder_before = {n: p.detach().clone() for n, p in self.model.decoder.named_parameters() if p.grad is not None}
        self.calls.append(("after_backward",))

    def after_step(self):
        if "adapter_step" not in self.seen:  # Adam's first step moves every parameter by about its lr
            self.seen["adapter_step"] = float((self.adapter.scale.detach() - self._before).abs().max())
            self.seen["decoder_step"] = max(float((p.detach() - self._decoder_before[n]).abs().max())
                                            for n, p in self.model.decoder.named_parameters() if n in self._decoder_before)
        self.calls.append(("after_step",))

    def selection_state(self):
        self.calls.append(("selection_state",))
        return len(self.calls)

    def restore_selection_state(self, state):
        self.calls.append(("restore_selection_state", state))

    def end_task(self, task, data):
        batches = list(data)
        val = list(self.ctx.data("val"))
        self.seen.setdefault("end", []).append({
            "training": self.model.training, "n": sum(b.size for b in batches),
            "expected": len(task.train), "val_n": sum(b.size for b in val), "val_expected": len(task.val),
            "float": all(b.frames.dtype == torch.float32 and float(b.frames.max()) <= 1.0 for b in batches),
            "device": {b.frames.device.type for b in batches}})
        self.calls.append(("end_task", task.id))

    def consolidate(self, data):
        self.seen.setdefault("consolidate", []).append(sum(b.size for b in data))
        self.seen.setdefault("consolidate_train", []).append(sum(b.size for b in self.ctx.data("train")))
        try:
            self.ctx.data("val")
        except ValueError as e:
            self.seen["stream_val_error"] = str(e)
        self.calls.append(("consolidate",))

    def consolidation_interval(self):
        return 2

    def predict(self, batch):
        out = super().predict(batch)
        assert isinstance(out, ModelOutput)
        return out


def test_hook_order_and_data_with_visible_boundaries(clavs_home, tmp_path):
    _Recorder.calls.clear()
    _Recorder.seen.clear()
    lr = 1e-3
    path = run_experiment(_config(tmp_path, f"train.lr={lr}", "train.grad_clip=1e-6", method="_test_recorder"))
    calls = [c[0] for c in _Recorder.calls]
    seen = _Recorder.seen
    assert calls[0] == "init"
    # Per task: begin_task, param_groups, then (augment, step, after_backward, after_step)*, selection
    # states between epochs, the restore of the best epoch's, end_task last.
    starts = [i for i, c in enumerate(_Recorder.calls) if c[0] == "begin_task"]
    assert [_Recorder.calls[i][1] for i in starts] == [0, 1, 2]
    for k, i in enumerate(starts):
        end = calls.index("end_task", i)
        assert _Recorder.calls[end] == ("end_task", k)
        block = calls[i:end + 1]
        assert block[1] == "param_groups"
        steps = [c for c in block[2:-1] if c not in ("selection_state", "restore_selection_state")]
        assert steps and len(steps) % 4 == 0
        assert steps == ["augment_batch", "training_step", "after_backward", "after_step"] * (len(steps) // 4)
        assert block[-2] == "restore_selection_state"  # after the last epoch, before end_task
        restored = _Recorder.calls[end - 1][1]
        assert _Recorder.calls[restored - 1][0] == "selection_state"  # the state taken with the best epoch
    assert "consolidate" not in calls  # end_task is overridden; nothing calls consolidate directly
    # samples added before the forward reach the model; the teacher's forward works on S4 training batches
    for rec in seen["train"]:
        assert rec["frame_ids"] == [0] and rec["frames"][1] == 5  # all 5 frames kept; only the labelled first is decoded
        assert rec["mask_rows"] == rec["teacher_rows"] == rec["size"]
        assert rec["labelled"] and rec["dtype"] == torch.float32 and rec["max"] <= 1.0
        assert len(rec["task_id"]) == 1 and rec["task_id"][0] >= 0
    assert seen["train"][0]["size"] == seen["batch_size_before"] + 1 or any(
        r["size"] == seen["batch_size_before"] + 1 for r in seen["train"])
    # after_backward sees the raw gradients: clipping to 1e-6 happens after it
    assert min(seen["grad_norms"]) > 1e-3
    # the method-owned group has its own learning rate (10x): Adam's first step is ~lr per parameter
    assert seen["adapter_step"] == pytest.approx(10 * lr, rel=0.1)
    assert seen["decoder_step"] == pytest.approx(lr, rel=0.1)
    # end_task: eval mode, the whole task's training clips, prepared; ctx.data gives the other splits
    for rec in seen["end"]:
        assert rec["training"] is False and rec["n"] == rec["expected"] and rec["float"]
        assert rec["val_n"] == rec["val_expected"] and rec["device"] == {"cpu"}
    ck = torch.load(path / "checkpoints" / "task_2.pt", weights_only=True)
    assert "method_modules.toy_adapter.scale" in ck["model"]  # saved with the network
    assert float(ck["model"]["method_modules.toy_adapter.scale"]) > 1.0  # and trained towards 2


def _run_stream(tmp_path, method: str, anytime_every: int):
    """A recorder on a 3-task TF-CL stream, 2 passes per task: the run directory and the hook names."""
    _Recorder.calls.clear()
    _Recorder.seen.clear()
    config = _config(tmp_path, "protocol.split=31-5", "protocol.num_tasks=3", f"protocol.anytime_every={anytime_every}",
                     "train.epochs=2", method=method)
    config["protocol"]["name"] = "tfcl"
    path = run_experiment(config)
    return path, [c[0] for c in _Recorder.calls]


def test_task_free_stream_reveals_no_boundary(clavs_home, tmp_path):
    path, calls = _run_stream(tmp_path, "_test_recorder", anytime_every=1)
    assert [c for c in _Recorder.calls if c[0] == "begin_task"] == [("begin_task", None)]
    assert calls.count("param_groups") == 1  # one optimiser for the whole stream
    assert "end_task" not in calls and "selection_state" not in calls
    steps = calls.count("training_step")
    assert calls.count("consolidate") == steps // 2  # on the method's schedule: every 2 steps
    assert all(n > 0 for n in _Recorder.seen["consolidate"])
    assert _Recorder.seen["consolidate_train"] == _Recorder.seen["consolidate"]  # ctx.data: the same window
    # a stream has no validation clips of its window: asking for them is an error, not training positions
    assert "ctx.data('val')" in _Recorder.seen["stream_val_error"]
    assert all(r["task_id"] == [-1] for r in _Recorder.seen["train"])  # the task is hidden from the batch
    run = load_run(path)
    points = run["anytime"]["points"]
    assert len(points) == steps and [p["step"] for p in points] == list(range(1, steps + 1))
    assert "a_auc" in run["summary"]["map"]
    # hidden tasks still fill the accuracy matrix (evaluation is the benchmark's)
    assert len(run["matrices"]["metrics"]["map"]["R"]) == 3


def test_visible_boundaries_in_tfcl_keep_per_task_training(clavs_home, tmp_path):
    _Recorder.calls.clear()
    config = _config(tmp_path, "protocol.split=31-5", "protocol.num_tasks=3", "protocol.boundaries=visible",
                     method="_test_recorder")
    config["protocol"]["name"] = "tfcl"
    run_experiment(config)
    assert [c[1] for c in _Recorder.calls if c[0] == "begin_task"] == [0, 1, 2]
    assert [c[0] for c in _Recorder.calls].count("end_task") == 3


@register
class _FirstTaskRecorder(_Recorder):
    """Asks for the stream's first task end (as RanPAC and FeCAM do) and keeps no step schedule."""

    name = "_test_first_task_recorder"

    def told_first_task_end(self):
        return True

    def consolidation_interval(self):
        return None

    def predict(self, batch):
        self.calls.append(("predict",))
        return super().predict(batch)


def test_a_stream_tells_the_first_task_end_only_to_a_method_that_asks_before_scoring_it(clavs_home, tmp_path):
    path, calls = _run_stream(tmp_path, "_test_first_task_recorder", anytime_every=0)
    assert calls.count("consolidate") == 1  # the first task's end and no later boundary
    first_task_steps = load_run(path)["profile"]["tasks"][0]["steps"]
    steps = [i for i, c in enumerate(calls) if c == "training_step"]
    at = calls.index("consolidate")
    assert steps[first_task_steps - 1] < at < steps[first_task_steps]  # after the first task's last step
    assert "predict" not in calls[steps[first_task_steps - 1]:at]  # and before the first task is scored
    assert "predict" in calls[at:steps[first_task_steps]]
    # the clips it is given: the first task's, each once though the stream showed them twice
    first = load_run(path)["profile"]["tasks"][0]
    assert _Recorder.seen["consolidate"] == [first["train_frames"] // (2 * 5)]  # 2 passes of 5-frame clips
