"""How the processes of a multi-device run (Lightning Fabric DDP) share the clips, and how what each
one computed is put back together.

Training: one epoch's order of the task's clips is drawn from the epoch seed, padded (as torch's
DistributedSampler pads) to a multiple of the world size W, and process r takes every W-th clip
from r. With a per-process batch of B clips, step k of every process together covers positions
[k*B*W, (k+1)*B*W) of that order: exactly the batch a single process with batch B*W takes at step
k. DDP averages the W gradients of equal-sized means, so the update is that single process's (up to
float rounding) when the number of clips is a multiple of W (otherwise the padded clips count twice).

Evaluation and statistics passes: the set's clips are cut into blocks of one evaluation batch,
dealt round-robin (block k to process k mod W; no padding: each clip is scored once), so that every
batch a process forms is one a single process forms too: each clip's logits come from the same
batch, bit for bit (batch-size-dependent kernel choices would otherwise change their last bits).
The states are gathered and merged in position order.
"""

from __future__ import annotations

from typing import Any

import torch


def shard_positions(n: int, rank: int, world: int, block: int = 1) -> list[int]:
    """The positions of a set of n items process `rank` takes: blocks of `block` consecutive
    positions dealt round-robin (block k to process k mod world); disjoint, together all n."""
    return [p for p in range(n) if (p // block) % world == rank]


def epoch_order(n: int, seed: int) -> list[int]:
    """The order an epoch visits n clips: the permutation a torch DataLoader with shuffle=True and a
    generator seeded with `seed` draws (it draws its workers' base seed, one int64, first), so that
    single-process runs keep the order they had before processes shared the clips."""
    g = torch.Generator().manual_seed(seed)
    torch.empty((), dtype=torch.int64).random_(generator=g)  # the DataLoader's base seed
    return torch.randperm(n, generator=g).tolist()


def training_share(n: int, seed: int, rank: int, world: int) -> list[int]:
    """Positions (into the task's n training clips) process `rank` trains on this epoch, in order:
    the epoch order padded with its first clips to a multiple of `world`, every world-th from rank."""
    order = epoch_order(n, seed)
    if n and n % world:
        order += order[: world - n % world]
    return order[rank::world]


def fresh_clips_in_step(step: int, batch_size: int, world: int, n: int) -> int:
    """How many of the task's n clips (padding excluded) the processes' step `step` of an epoch
    covers together: the positions [step*B*W, (step+1)*B*W) of the padded order below n."""
    per_step = batch_size * world
    return max(0, min((step + 1) * per_step, n) - min(step * per_step, n))


def all_gather_rows(fabric: Any, tensors: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Every process's `tensors`, on the CPU, in rank order. The first dimension may differ between
    processes (each holds its own number of frames); the other dimensions and dtypes may not.
    Collective: every process must call it with the same keys."""
    if fabric.world_size == 1:
        return [{k: v.detach().cpu() for k, v in tensors.items()}]
    keys = sorted(tensors)
    lengths = torch.tensor([tensors[k].shape[0] for k in keys], dtype=torch.int64)
    all_lengths = fabric.all_gather(lengths).cpu()  # [W, keys]
    longest = dict(zip(keys, all_lengths.max(0).values.tolist()))
    padded = {}
    for k in keys:
        t = tensors[k].detach()
        if longest[k]:  # a key empty on every process is not sent
            pad = torch.zeros((longest[k] - t.shape[0], *t.shape[1:]), dtype=t.dtype, device=t.device)
            padded[k] = torch.cat([t, pad]).contiguous()
    gathered = {k: v.cpu() for k, v in fabric.all_gather(padded).items()} if padded else {}  # [W, longest, ...]
    return [{k: gathered[k][r, : int(all_lengths[r, i])] if k in gathered else tensors[k].detach().cpu()
             for i, k in enumerate(keys)} for r in range(fabric.world_size)]


def gather_stats(fabric: Any, values: dict[str, float]) -> dict[str, list[float]]:
    """Each scalar of `values` from every process, in rank order (profile.json's per-rank numbers)."""
    keys = sorted(values)
    row = torch.tensor([[float(values[k]) for k in keys]], dtype=torch.float64)
    rows = torch.cat([g["v"] for g in all_gather_rows(fabric, {"v": row})])  # [W, keys]
    return {k: rows[:, i].tolist() for i, k in enumerate(keys)}
