"""Started by tests/test_distributed.py as `python tests/ddp_worker.py DEVICES OUT_DIR`: under Lightning
Fabric with DEVICES CPU processes (DDP over gloo), the engine's own code scores sets of clips
(Trainer.score), deals out one training epoch (Trainer.loader), gathers stream windows and takes an
EWC Fisher over the clips with ctx.shard + all_reduce_sum. Every process writes what it saw to
OUT_DIR/rank<r>.pt; the test compares 1 process with 2."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch
from lightning_fabric import Fabric
from method_helpers import tiny_plain

from clavs.engine.clips import ClipStore
from clavs.engine.loop import SplitStores, Trainer
from clavs.methods.context import MethodContext
from clavs.methods.ewc import EWC

CLIPS, FRAMES, SIZE, AUDIO_DIM, CLASSES = 13, 2, 32, 8, 3
# Sets to score: all clips in a shuffled order, and 3 clips (one evaluation batch: the 2nd process scores none).
SETS = {"all": [7, 3, 12, 0, 5, 9, 1, 11, 2, 8, 4, 10, 6], "few": [5, 2, 11]}
CONFIG = {"seed": 0, "train": {"batch_size": 2, "eval_batch_size": 4, "num_workers": 0, "val_matrix": "last"}}


def synthetic_store() -> ClipStore:
    """Random frames and masks (one clip without foreground), and clips that label only their second
    frame among clips that label both (frame positions with gaps)."""
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (CLIPS, FRAMES, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)
    masks = (torch.rand(CLIPS, FRAMES, 1, SIZE, SIZE, generator=g) > 0.7).to(torch.uint8)
    masks[4] = 0
    valid = torch.ones(CLIPS, FRAMES, dtype=torch.bool)
    valid[[1, 6, 10], 0] = False
    store = ClipStore(frames=frames, masks=masks, mask_valid=valid, labels=torch.arange(CLIPS) % CLASSES,
                      video_ids=[f"v{i}" for i in range(CLIPS)], key="synthetic")
    store.audio = torch.randn(CLIPS, FRAMES, AUDIO_DIM, generator=g)
    return store


def main(devices: int, out: Path) -> None:
    fabric = Fabric(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto")
    fabric.launch()
    store = synthetic_store()
    stores = SplitStores(train=store, val=store, test=store, class_index={s: store.labels for s in ("train", "val", "test")})
    scenario = types.SimpleNamespace(protocol="cil", has_class_head=True, tasks=[None])
    ctx = MethodContext(fabric=fabric, config=CONFIG, log=lambda m: None)
    method = EWC(tiny_plain(seed=0, num_classes=CLASSES, use_class_head=True), EWC.Hparams(), scenario, ctx)
    predicted: list[list[int]] = []
    plain_predict = method.predict
    method.predict = lambda batch: (predicted[-1].extend(batch.index.tolist()), plain_predict(batch))[1]
    trainer = Trainer(method, scenario, stores, ctx)

    scores = {}
    for name, clips in SETS.items():
        predicted.append([])
        scores[name] = trainer.score("test", clips, -1)
    epoch = [b.index.tolist() for b in trainer.loader("train", list(range(CLIPS)), task_id=0, train=True, seed=5)]
    window = trainer._all_windows([fabric.global_rank, 10 + fabric.global_rank, 3])
    assert trainer._all_windows([]) == []  # empty everywhere (right after a consolidation)
    ctx.data_source = lambda split: trainer.task_data(split, list(range(CLIPS)), 0)
    method.model.eval()
    method.consolidate(ctx.data("train"))
    torch.save({"rank": fabric.global_rank, "world_size": fabric.world_size, "scores": scores, "predicted": predicted,
                "epoch": epoch, "window": window, "fisher": method.anchor.importance}, out / f"rank{fabric.global_rank}.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)  # as the test's own process when it runs main(1, ...)
    main(int(sys.argv[1]), Path(sys.argv[2]))
