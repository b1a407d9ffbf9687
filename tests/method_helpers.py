"""Small builders for the method tests (tests/test_methods.py): tiny networks, random batches, a fake
MethodContext, a minimal scenario, the engine's training step without the engine, and smoke runs of the
whole pipeline with checks of their run directories."""

from __future__ import annotations

import contextlib
import json
import types
from pathlib import Path
from typing import Any, Callable

import torch
from helpers import av_batch

from clavs.models.architectures.atlas import AtlasNet, AtlasNetConfig
from clavs.models.architectures.plain import PlainAVSNet, PlainAVSNetConfig
from clavs.protocols.scenario import Task

IMG, FRAMES, AUDIO_DIM = 32, 2, 8
# The `tiny` ViT preset shrunk further (width 32, two blocks): the mechanisms do not need capacity.
SMALL_VIT = {"visual": "tiny", "img_size": IMG, "visual_out_indices": (0, 1),
             "visual_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2}}


def tiny_plain(seed: int = 0, **overrides: Any) -> PlainAVSNet:
    torch.manual_seed(seed)
    cfg = dict(SMALL_VIT, audio_dim=AUDIO_DIM, dim=16, decoder_dim=16, num_classes=0, use_class_head=False)
    cfg.update(overrides)
    return PlainAVSNet(PlainAVSNetConfig(**cfg))


def tiny_atlas(seed: int = 0, **overrides: Any) -> AtlasNet:
    torch.manual_seed(seed)
    cfg = dict(SMALL_VIT, audio_dim=AUDIO_DIM, dim=16, num_heads=2, decoder_dim=16, num_classes=0,
               use_class_head=False, lora_r=2, lora_alpha=4.0)
    cfg.update(overrides)
    return AtlasNet(AtlasNetConfig(**cfg))


def random_batch(seed: int, b: int = 3, *, masks: str = "random", task_id: int = -1):
    """A prepared float Batch of b clips with random frames, audio and (random or all-zero) masks."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(b, FRAMES, 3, IMG, IMG, generator=g)
    audio = torch.randn(b, FRAMES, AUDIO_DIM, generator=g)
    if masks == "random":
        m = (torch.rand(b, FRAMES, 1, IMG, IMG, generator=g) > 0.6).float()
    elif masks == "zeros":
        m = torch.zeros(b, FRAMES, 1, IMG, IMG)
    else:
        raise ValueError(masks)
    return av_batch(frames, audio, masks=m, task_id=torch.full((b,), task_id, dtype=torch.long))


def fake_ctx(task_free: bool = False) -> types.SimpleNamespace:
    """What a method reads of MethodContext, without Fabric."""
    return types.SimpleNamespace(device=torch.device("cpu"), autocast=contextlib.nullcontext, task_free=task_free,
                                 all_reduce_sum=lambda t: t, shard=lambda data: data, world_size=1, rank=0,
                                 config={}, log=lambda m: None,
                                 data_source=None)


def make_task(i: int) -> Task:
    return Task(id=i, name=f"t{i}", classes=[], class_indices=[], train=[], val=[], test=[],
                task_id_visible=False, label_space=[], num_seen_classes=0)


def fake_scenario(num_tasks: int = 3, protocol: str = "dil") -> types.SimpleNamespace:
    """The attributes methods read: protocol, has_class_head (none here), tasks."""
    return types.SimpleNamespace(protocol=protocol, has_class_head=False,
                                 tasks=[make_task(i) for i in range(num_tasks)])


def make_method(cls, model, **hparams):
    return cls(model, cls.Hparams(**hparams), fake_scenario(), fake_ctx())


def engine_step(method, optimizer, batch) -> dict[str, torch.Tensor]:
    """One training step in the engine's hook order (engine/loop.py Trainer.step, without Fabric and
    without gradient clipping): training_step, backward, after_backward, optimizer.step, after_step."""
    batch = method.augment_batch(batch)
    terms = method.training_step(batch, method.model)
    total = sum(terms.values())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    method.after_backward()
    optimizer.step()
    method.after_step()
    return {k: v.detach() for k, v in terms.items()}


# -- end-to-end smoke runs (the `smoke_run` fixture of tests/conftest.py) ----------------------------
FAST = ["model.visual_weights=none", "model.audio_weights=none"]
SPLIT = {"til": ["protocol.split=11-6"], "cil": ["protocol.split=11-6"], "dil": ["protocol.split=11-6"],
         # the smoke MS3 data is tiny: three hidden tasks; consolidate often enough to exercise it
         "tfcl": ["protocol.split=31-5", "protocol.num_tasks=3"]}


def smoke_runner(root: Path) -> Callable[..., Path]:
    """run(method, protocol, *overrides, runs_dir=None) -> run directory: a smoke-preset run with random
    encoders under `root`; each distinct run is trained once per runner."""
    from clavs.config import resolve_config
    from clavs.engine.runner import run_experiment

    done: dict[tuple, Path] = {}

    def run(method: str, protocol: str, *overrides: str, runs_dir=None) -> Path:
        key = (method, protocol, overrides, str(runs_dir))
        if key not in done:
            config = resolve_config(preset="smoke", method=method,
                                    options={"runs_dir": str(runs_dir or root / f"r{len(done)}"), "progress": False,
                                             "protocol.name": protocol},
                                    overrides=[*FAST, *SPLIT[protocol], *overrides])
            done[key] = run_experiment(config)
        return done[key]

    return run


def read_json(path: Path, name: str) -> Any:
    return json.loads((path / name).read_text())


def check_finished(path: Path, method: str, num_tasks: int | None = None) -> int:
    """Assert a run directory is complete (DONE, full matrices, summaries, profile); returns its tasks."""
    assert (path / "DONE").exists()
    matrices = read_json(path, "matrices.json")
    T = matrices["tasks"]
    assert T >= 2 and (num_tasks is None or T == num_tasks)
    for name, m in matrices["metrics"].items():
        R = m["R"]
        assert len(R) == T and all(len(row) == T for row in R), name
        assert all(R[t][t] is not None for t in range(T)), name
    for name in ("summary.json", "summary_val.json", "matrices_val.json", "profile.json"):
        assert (path / name).exists(), name
    assert "map" in read_json(path, "summary.json") and "map" in read_json(path, "summary_val.json")
    profile = read_json(path, "profile.json")
    assert profile["method"]["name"] == method and profile["method"]["uses_exemplars"] is False
    assert profile["tasks_done"] == T
    return T
