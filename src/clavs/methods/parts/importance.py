"""Per-parameter importance from one pass over data, gradient by gradient, one clip at a time.

fisher_diagonal:    F_i = mean over clips of (d L_task / d theta_i)^2      (empirical Fisher; EWC)
output_sensitivity: Omega_i = mean over clips of |d ||f(x)||^2 / d theta_i| (MAS; f = the outputs:
                    mask logits, averaged over pixels, and class logits, averaged over classes)

Both are sums over clips divided by a count; `reduce` (e.g. MethodContext.all_reduce_sum) adds the
sums and counts of other processes when each process saw its own shard of the data.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from clavs.batch import Batch, ModelOutput


def clip_gradient_statistic(model: nn.Module, data: Iterable[Batch], params: dict[str, nn.Parameter],
                            clip_loss: Callable[[Batch, ModelOutput], torch.Tensor],
                            transform: Callable[[torch.Tensor], torch.Tensor],
                            reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
                            autocast: Callable[[], object] | None = None) -> dict[str, torch.Tensor]:
    """mean over clips of transform(d clip_loss / d theta) for every parameter in `params`."""
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count = 0
    wanted = [p for p in params.values()]
    with torch.enable_grad():
        for batch in data:
            for i in range(batch.size):
                clip = batch.select([i])
                if autocast is not None:
                    with autocast():
                        loss = clip_loss(clip, model(clip))
                else:
                    loss = clip_loss(clip, model(clip))
                grads = torch.autograd.grad(loss, wanted, allow_unused=True)
                for (n, _), g in zip(params.items(), grads):
                    if g is not None:
                        sums[n] += transform(g.detach().float())
                count += 1
    total = torch.tensor(float(count), device=next(iter(sums.values())).device) if sums else torch.tensor(0.0)
    if reduce is not None:
        sums = {n: reduce(s) for n, s in sums.items()}
        total = reduce(total)
    return {n: s / total.clamp(min=1) for n, s in sums.items()}


def fisher_diagonal(model: nn.Module, data: Iterable[Batch], params: dict[str, nn.Parameter],
                    task_loss: Callable[[Batch, ModelOutput], dict[str, torch.Tensor]], **kw) -> dict[str, torch.Tensor]:
    """Empirical Fisher diagonal: mean over clips of the squared gradient of the summed task loss."""
    return clip_gradient_statistic(model, data, params, lambda b, o: sum(task_loss(b, o).values()),
                                   torch.square, **kw)


def output_norm(batch: Batch, out: ModelOutput) -> torch.Tensor:
    """MAS's ||f(x)||^2 for segmentation: the mean squared mask logit plus the mean squared class logit."""
    value = out.mask_logits.float().pow(2).mean()
    if out.class_logits is not None and out.class_logits.shape[-1] > 0:
        value = value + out.class_logits.float().pow(2).mean()
    return value


def output_sensitivity(model: nn.Module, data: Iterable[Batch], params: dict[str, nn.Parameter], **kw) -> dict[str, torch.Tensor]:
    """MAS importance: mean over clips of |gradient of the squared output norm| (labels unused)."""
    return clip_gradient_statistic(model, data, params, output_norm, torch.abs, **kw)
