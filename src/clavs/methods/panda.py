"""PANDA, Patch-and-Distribution-Aware augmentation (Raghavan, He, Zhu, AAAI 2026), adapted to AVS: in
each training batch, sounding objects of under-represented classes are grafted, with their audio, into
other clips of the current task. No data of past tasks is stored; Finetune is the base learner.

Graft (donor d, recipient r; the original's x' = (M^h)' x^h + M^t x^t, y' = y^t):
    on the frames where d has ground truth:  x' = M_d x_d + (1 - M_d) x_r      mask' = M_d
    on d's other frames:                       x' = x_d  (no mask tells where d's object is)
    audio' = audio_d, class' = class_d, mask_valid' = mask_valid_d, task' = task_d
The grafted clip is appended to the batch. The recipient's own object stays visible in x' but is
silent (its audio was replaced), so it becomes background, as SynthAVS's silent distractors are.

Which clips donate (intra-task balancing with inter-task smoothing): n_c = clips of class c seen so far
in this task (running counts of the real clips, summed over processes), r_c = n_c / mean_k n_k. The
smoothed bounds m = beta m_prev + (1 - beta) min_c r_c and M = beta M_prev + (1 - beta) max_c r_c (m_prev,
M_prev: the previous task's final values). When M - m > q, every clip of class c donates
q_c = (M - r_c) / r_c grafts (floor(q_c), plus one with probability frac(q_c)), so that in expectation
each class reaches M times the mean count; at most max_graft_fraction * B grafts a batch (a random
subset). Recipients: clips of another class, chosen with probability proportional to their class's r
(frequent classes give their background, as in the original). Without class labels (MS3, TF-CL) every
clip donates with probability classless_graft_fraction and recipients are uniform.

Randomness comes from a generator seeded by (run seed, step), so a resumed run grafts as an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from clavs.batch import Batch
from clavs.methods.base import register
from clavs.methods.finetune import Finetune


@dataclass
class PandaHparams:
    beta: float = 0.5                      # inter-task smoothing of the min/max class ratios (paper: adaptive; fixed here)
    gap_threshold: float = 0.0             # q: graft only when the smoothed max - min ratio exceeds it (validation: 0.0 over 0.1)
    max_graft_fraction: float = 1.0        # ours: grafts per batch at most this share of its clips
    classless_graft_fraction: float = 0.25  # ours: without class labels, each clip donates with this probability


def graft(batch: Batch, donors: torch.Tensor, recipients: torch.Tensor) -> Batch:
    """The grafted clips: donor objects (pixels under the donor's mask, on its labelled frames) pasted
    onto the recipients' frames, with every other field (audio, masks, class, ...) the donor's."""
    donor = batch.select(donors)
    keep = donor.masks.clone()  # [G,T,1,H,W]: 1 where the donor's pixel is kept
    keep[~donor.mask_valid] = 1.0
    frames = keep * donor.frames + (1 - keep) * batch.frames[recipients]
    return dataclasses.replace(donor, frames=frames)


def step_generator(seed: int, step: int) -> torch.Generator:
    """A generator of its own for (run seed, step): the same draws on an uninterrupted and a resumed run."""
    state = np.random.SeedSequence([int(seed), int(step)]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def stochastic_round(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """floor(x) + Bernoulli(frac(x)), elementwise (an unbiased integer count)."""
    base = x.floor()
    return (base + (torch.rand(x.shape, generator=gen) < (x - base)).float()).long()


@register
class Panda(Finetune):
    """PANDA: donor objects of under-represented classes grafted with their audio into other clips of the batch."""

    name = "panda"
    family = "cl"
    Hparams = PandaHparams

    def __init__(self, model, hparams, scenario, ctx):
        super().__init__(model, hparams, scenario, ctx)
        self.counts = torch.zeros(len(scenario.class_order), dtype=torch.float64)
        self.prior: tuple[float, float] | None = None  # (m_prev, M_prev) of the previous task
        self.steps = 0
        self.grafts = 0  # grafted clips so far (the run's log reports them per task)

    def begin_task(self, task):
        super().begin_task(task)
        self.counts.zero_()

    def end_task(self, task, data):
        ratios = self.ratios()
        if ratios is not None:
            self.prior = (float(ratios.min()), float(ratios.max()))
        self.ctx.log(f"panda: {self.grafts} grafted clips so far")
        super().end_task(task, data)

    # -- balancing -----------------------------------------------------------------------------
    def ratios(self) -> torch.Tensor | None:
        """r over the classes seen in this task (in class order), None before any."""
        seen = self.counts[self.counts > 0]
        return seen / seen.mean() if seen.numel() else None

    def bounds(self) -> tuple[float, float]:
        """The smoothed (m, M): beta * previous task's + (1 - beta) * this task's running min / max ratio."""
        ratios = self.ratios()
        m, M = float(ratios.min()), float(ratios.max())
        if self.prior is not None:
            b = self.hp.beta
            m, M = b * self.prior[0] + (1 - b) * m, b * self.prior[1] + (1 - b) * M
        return m, M

    def class_ratio(self, labels: torch.Tensor) -> torch.Tensor:
        """r_c of each clip's class (labels >= 0, classes seen in this task)."""
        return self.counts[labels] / self.counts[self.counts > 0].mean()

    def grafts_per_clip(self, labels: torch.Tensor) -> torch.Tensor:
        """q_c = (M - r_c) / r_c for each labelled clip's class (0 when the task is balanced enough)."""
        m, M = self.bounds()
        if M - m <= self.hp.gap_threshold:
            return torch.zeros(labels.shape, dtype=torch.float64)
        r = self.class_ratio(labels)
        return ((M - r) / r).clamp(min=0)

    def _count(self, labels: torch.Tensor) -> None:
        """Add the batch's real clips to the running counts (every process calls it every step)."""
        hist = torch.bincount(labels, minlength=self.counts.numel()).to(self.ctx.device, torch.float64)
        self.counts += self.ctx.all_reduce_sum(hist).cpu()

    def choose(self, batch: Batch, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(donors, recipients): positions in the batch of each graft's two clips."""
        labels = batch.class_index.cpu()
        labelled = labels >= 0
        self._count(labels[labelled])
        weight = torch.ones(batch.size, dtype=torch.float64)  # of a clip as a recipient
        if bool(labelled.any()):
            copies = torch.zeros(batch.size, dtype=torch.long)
            copies[labelled] = stochastic_round(self.grafts_per_clip(labels[labelled]), gen)
            weight[labelled] = self.class_ratio(labels[labelled])
        else:  # no classes (MS3): uniform donors and recipients
            copies = (torch.rand(batch.size, generator=gen) < self.hp.classless_graft_fraction).long()
        donors = torch.arange(batch.size).repeat_interleave(copies)
        cap = int(self.hp.max_graft_fraction * batch.size)
        if donors.numel() > cap:
            donors = donors[torch.randperm(donors.numel(), generator=gen)[:cap]].sort().values
        keep, recipients = [], []
        for d in donors.tolist():
            other = (labels != labels[d]) if labels[d] >= 0 else torch.arange(batch.size) != d
            if not bool(other.any()):
                continue  # every clip of the batch is of the donor's class: nowhere to graft it
            recipients.append(int(torch.multinomial(weight * other, 1, generator=gen)))
            keep.append(d)
        return torch.tensor(keep, dtype=torch.long), torch.tensor(recipients, dtype=torch.long)

    def augment_batch(self, batch: Batch) -> Batch:
        self.steps += 1
        gen = step_generator(self.ctx.config.get("seed", 0), self.steps)
        donors, recipients = self.choose(batch, gen)
        if donors.numel() == 0:
            return batch
        self.grafts += donors.numel()
        device = batch.frames.device
        return Batch.cat([batch, graft(batch, donors.to(device), recipients.to(device))])

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self):
        return {"counts": self.counts, "prior": torch.tensor(self.prior if self.prior else [], dtype=torch.float64),
                "steps": self.steps, "grafts": self.grafts}

    def load_state_dict(self, state):
        self.counts = state["counts"].cpu().to(torch.float64)
        prior = state["prior"].tolist()
        self.prior = (prior[0], prior[1]) if prior else None
        self.steps, self.grafts = int(state["steps"]), int(state["grafts"])
