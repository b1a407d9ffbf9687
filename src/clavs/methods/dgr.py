"""DGR, Gradient Reweighting for imbalanced class-incremental learning (He, CVPR 2024), exemplar-free and
adapted to segmentation. Original: JiangpengHe/imbalanced_cil src/approach/DGR.py (a FACIL learner).

Loss (a frozen teacher, parts/teacher.py, after each task; LwF's distillation pair, TIL's old mask
heads in turn):
    BCE + Dice on the masks
  + CE(z + log pi) on the clip's class            logit-adjusted CE; pi_c = n_c / sum n over seen classes
  + w_kd * DAKD(z_old-classes, z_teacher)         distribution-aware KD of the old classes' logits
  + w_kd * KL_Bernoulli(masks at T, teacher's)   ours: the masks are distilled too (LwF's term)
  with w_kd = T^2 * lambda_b * sqrt(n_seen / n_new)  (clip counts of earlier tasks / of this task).

Gradient reweighting (after_backward; the raw gradients, before clipping), on the class head's rows
c (weight row W_c and bias b_c), with G_c = sum over this task's steps of ||dL_CE/dW_c||_2:
    task 0:   grad_c = w_c g_CE,c,   w_c = min_k G_k / G_c
    task t>0: old rows O and new rows N weighted within their group, w_c = min_{k in group} G_k / G_c,
              then w_O *= rs_old = min(1, mean G_N / mean G_O), w_N *= rs_new = min(1, gamma mean G_N / mean G_O),
              gamma = exp(-gamma_r n_seen / (n_seen + n_new));
              grad_c = w_c g_CE,c + r g_KD,c with r = ||(w_c ||g_CE,c||)_c|| / ||(||g_KD,c||)_c||
              (the KD gradient of the head brought to the size of the reweighted CE gradient).
The mask head (TIL: the mask heads) gets the same KD balancing with one "row": grad = g_seg + r g_KD,
r = ||g_seg|| / ||g_KD||. Without a class head (DIL, TF-CL) this and the mask distillation are what
remain of DGR. The CE and KD gradients of the heads are taken separately with torch.autograd.grad on
the heads' parameters only: the graph walked is the head's (a Linear on pooled features; the mask
head's 1x1 conv and resize), not the network's.

Exemplar-free fix: the original takes pi and the old/new gradient groups from a training set that holds
exemplars of the old classes. Without them the old classes' counts are 0 (log pi = -inf) and their
gradient sums G are 0 (min/G = 0/0). Here pi of an old class is its clip count when it was trained
(a statistic kept, not data), and every ratio is guarded by eps: (a + eps) / (b + eps); a KD gradient
of norm 0 (student == teacher at a task's first step) gives r = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from clavs.batch import ModelOutput, clip_class_logits
from clavs.methods.base import classification_loss, register, segmentation_loss
from clavs.methods.lwf import LwF, binary_distillation


@dataclass
class DGRHparams:
    lambda_b: float = 0.7        # weight of the distillation (original lambda_b)
    temperature: float = 2.0     # T of the distillation (original)
    gamma_r: float = 1.0         # gamma = exp(-gamma_r * n_seen / (n_seen + n_new)) (original `gam`; PILOT gammar_r)
    eps: float = 1e-8            # ours: guard of every ratio (exemplar-free: old groups can be all zero)
    consolidate_every: int = 40  # task-free streams: training steps between teacher refreshes


def ratio(a: torch.Tensor | float, b: torch.Tensor | float, eps: float) -> torch.Tensor | float:
    """(a + eps) / (b + eps): a / b where both are large against eps, 1 where both are 0."""
    return (a + eps) / (b + eps)


def dgr_row_weights(G: torch.Tensor, n_old: int, gamma: float, eps: float) -> torch.Tensor:
    """DGR's per-row gradient weights from the accumulated CE gradient norms G [C] (docstring above)."""
    if n_old == 0 or n_old >= G.numel():
        return ratio(G.min(), G, eps)
    old, new = G[:n_old], G[n_old:]
    balance = float(ratio(new.mean(), old.mean(), eps))
    rs_old, rs_new = min(1.0, balance), min(1.0, balance * gamma)
    return torch.cat([ratio(old.min(), old, eps) * rs_old, ratio(new.min(), new, eps) * rs_new])


def normalized_entropy(counts: torch.Tensor) -> float:
    """The original's imbalance ratio: H(p) / log K with p = (counts + 0.001) / sum; 1 = balanced
    (K = 1 gives 1: one class is balanced; the original divides by log 1 = 0)."""
    if counts.numel() < 2:
        return 1.0
    p = (counts.double() + 0.001) / (counts.double() + 0.001).sum()
    return float(-(p * p.log()).sum() / math.log(counts.numel()))


def dakd(student: torch.Tensor, teacher: torch.Tensor, old_counts: torch.Tensor, temperature: float) -> torch.Tensor:
    """Distribution-aware KD of the original (_DAKD) over the old classes' logits [B, K].

    pi = counts / sum, then / ||.||_2;  mixed = pi * z_student + (1 - pi) * z_teacher;  r = the counts'
    normalized entropy;  loss = -mean_b sum_c q_c [r log softmax(z_student/T)_c + (1-r) log softmax(mixed/T)_c]
    with q = softmax(z_teacher / T); minus the teacher's entropy sum_c q_c log q_c (a constant: the
    gradient is the original's, and the term is 0 when the student equals the teacher). `old_counts`
    are the old classes' clip counts missing from this task's data: all of them, without exemplars.
    """
    # float64: at student == teacher the gradient is round-off, which DGR's KD rescaling (r = ||CE|| / ||KD||)
    # would blow up to the CE gradient's size; in float32 that round-off (~1e-8) is not below eps.
    counts = old_counts.to(student.device, torch.float64)
    prior = counts / counts.sum().clamp(min=1)
    prior = prior / prior.norm().clamp(min=1e-12)
    r = normalized_entropy(old_counts)
    student, teacher = student.double(), teacher.double()
    mixed = student * prior + teacher * (1 - prior)
    log_q = F.log_softmax(teacher / temperature, -1)
    p_final = r * F.log_softmax(student / temperature, -1) + (1 - r) * F.log_softmax(mixed / temperature, -1)
    return -(log_q.exp() * (p_final - log_q)).sum(-1).mean().float()


def _grads(loss: torch.Tensor | None, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    """d loss / d params through the graph between them only (zeros where unused or no loss)."""
    if loss is None or not loss.requires_grad:
        return [torch.zeros_like(p) for p in params]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(sum(t.float().pow(2).sum() for t in tensors))


@register
class DGR(LwF):
    """DGR: class-head rows reweighted by accumulated CE gradient norms, distillation balanced on the heads."""

    name = "dgr"
    family = "cl"
    Hparams = DGRHparams

    def __init__(self, model, hparams, scenario, ctx):
        super().__init__(model, hparams, scenario, ctx)
        self.class_counts = torch.zeros(0)       # clips per class when it was trained (seen classes)
        self.counted_task: int | None = None     # the task whose classes class_counts holds
        self.seen_clips = 0                      # n_seen: clips of the earlier tasks / consolidation periods
        self.last_period_clips = 0               # a task-free stream's n_new: the previous period's clips
        self.period: set[int] = set()            # clips seen since the last consolidation (stream)
        self.G = torch.zeros(0)                  # sum over the task's steps of ||dCE/dW_c||
        self.n_old = 0                           # class rows of the earlier tasks
        self._split: dict[str, Any] | None = None

    # -- counts --------------------------------------------------------------------------------
    def begin_task(self, task):
        super().begin_task(task)
        if task is not None and self.scenario.has_class_head:
            self.n_old = task.num_seen_classes - len(task.class_indices)
            self.G = torch.zeros(task.num_seen_classes, device=self.ctx.device)

    def clip_counts(self) -> tuple[int, int]:
        """(n_seen, n_new): clips of the earlier tasks, and of this task (a stream: of the last period)."""
        n_new = len(self.task.train) if self.task is not None else self.last_period_clips
        return self.seen_clips, max(n_new, 1)

    def _count_classes(self) -> None:
        """This task's clips per class, once per task (a pass that reads labels; no forward)."""
        counts = torch.zeros(self.task.num_seen_classes, dtype=torch.float64)
        counts[: self.class_counts.numel()] = self.class_counts
        new = torch.zeros_like(counts)
        for batch in self.ctx.data("train"):
            labels = batch.class_index[batch.class_index >= 0].cpu()
            new += torch.bincount(labels, minlength=counts.numel()).double()[: counts.numel()]
        for c in self.task.class_indices:
            counts[c] = new[c]
        self.class_counts, self.counted_task = counts, self.task.id

    def log_prior(self, device: torch.device) -> torch.Tensor:
        """log pi over the seen classes (a class without clips counts 1: its log-prior stays finite)."""
        counts = self.class_counts.clamp(min=1)
        return (counts / counts.sum()).log().to(device, torch.float32)

    def kd_weight(self) -> float:
        n_seen, n_new = self.clip_counts()
        return self.hp.temperature ** 2 * self.hp.lambda_b * math.sqrt(n_seen / n_new)

    # -- the step ------------------------------------------------------------------------------
    def _head_parameters(self) -> tuple[list, list]:
        net = self.model
        mask = list(net.mask_heads.parameters()) if net.mask_heads is not None else list(net.decoder.head.parameters())
        cls = [net.class_head.weight, net.class_head.bias] if net.class_head is not None else []
        return mask, cls

    def training_step(self, batch, model):
        out = model(batch)
        self.steps += 1
        if self.task is None:
            self.period.update(batch.index.tolist())
        terms = segmentation_loss(batch, out)
        ce = kd_class = kd_mask = None
        has_classes = (self.task is not None and self.scenario.has_class_head and out.class_logits is not None
                       and out.class_logits.shape[-1] > 0)
        if has_classes:
            if self.counted_task != self.task.id:
                self._count_classes()
            adjusted = ModelOutput(out.mask_logits, out.class_logits + self.log_prior(out.class_logits.device))
            ce = classification_loss(batch, adjusted, self.scenario)
            if ce is not None:
                terms["ce"] = ce
        if self.teacher.ready:
            old, new = self.distillation_pair(batch, model, out)
            w, T = self.kd_weight(), self.hp.temperature
            kd_mask = terms["dgr_kd_mask"] = w * binary_distillation(new.mask_logits, old.mask_logits, T)
            if has_classes and old.class_logits is not None and old.class_logits.shape[-1] > 0:
                n_old = old.class_logits.shape[-1]
                kd_class = terms["dgr_kd_class"] = w * dakd(
                    clip_class_logits(out.class_logits, batch.size)[:, :n_old],
                    clip_class_logits(old.class_logits, batch.size), self.class_counts[:n_old], T)
        mask_params, class_params = self._head_parameters()
        self._split = {
            "mask": (mask_params, _grads(terms["bce"] + terms["dice"], mask_params), _grads(kd_mask, mask_params))
            if kd_mask is not None else None,
            "class": (class_params, _grads(ce, class_params), _grads(kd_class, class_params))
            if ce is not None else None,
        }
        return terms

    def _reduce(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """The mean over processes, as DDP gives the .grad these replace."""
        if self.ctx.world_size == 1:
            return grads
        return [self.ctx.all_reduce_sum(g) / self.ctx.world_size for g in grads]

    def after_backward(self):
        split, self._split = self._split, None
        if split is None:
            return
        if split["mask"] is not None:
            params, seg, kd = split["mask"]
            seg, kd = self._reduce(seg), self._reduce(kd)
            r = _norm(seg) / _norm(kd).clamp(min=self.hp.eps)  # 0 * (.) where the KD gradient is 0
            for p, g_seg, g_kd in zip(params, seg, kd):
                if p.grad is not None:
                    p.grad.copy_(g_seg + r * g_kd)
        if split["class"] is not None and split["class"][0][0].grad is not None:
            (W, b), ce, kd = split["class"]
            (ce_w, ce_b), (kd_w, kd_b) = self._reduce(ce), self._reduce(kd)
            row_norms = ce_w.float().norm(dim=1)
            self.G += row_norms
            n_seen, n_new = self.clip_counts()
            gamma = math.exp(-self.hp.gamma_r * n_seen / (n_seen + n_new))
            weights = dgr_row_weights(self.G, self.n_old, gamma, self.hp.eps)
            r = (weights * row_norms).norm() / kd_w.float().norm(dim=1).norm().clamp(min=self.hp.eps)
            W.grad.copy_(weights[:, None] * ce_w + r * kd_w)
            b.grad.copy_(weights * ce_b + r * kd_b)

    # -- consolidation and state ---------------------------------------------------------------
    def consolidate(self, data):
        super().consolidate(data)  # the teacher
        if self.task is not None:
            self.seen_clips += len(self.task.train)
        else:
            count = torch.tensor(float(len(self.period)), device=self.ctx.device)
            self.last_period_clips = int(self.ctx.all_reduce_sum(count).item())
            self.seen_clips += self.last_period_clips
            self.period = set()

    def state_dict(self):
        return {**super().state_dict(), "class_counts": self.class_counts,
                "counted_task": -1 if self.counted_task is None else self.counted_task,
                "seen_clips": self.seen_clips, "last_period_clips": self.last_period_clips,
                "period": torch.tensor(sorted(self.period), dtype=torch.long), "G": self.G, "n_old": self.n_old}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.class_counts = state["class_counts"].cpu()
        self.counted_task = None if int(state["counted_task"]) < 0 else int(state["counted_task"])
        self.seen_clips, self.last_period_clips = int(state["seen_clips"]), int(state["last_period_clips"])
        self.period = set(state["period"].tolist())
        self.G, self.n_old = state["G"].to(self.ctx.device), int(state["n_old"])
