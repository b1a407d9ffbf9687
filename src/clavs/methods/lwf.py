"""LwF, Learning without Forgetting (Li & Hoiem, 2017), adapted to segmentation: a frozen copy of the
network after the previous task (parts/teacher.py) labels the current batch, and the loss adds

    alpha * [ mean over decoded pixels of KL(Bernoulli(sigmoid(z_old/T)) || Bernoulli(sigmoid(z_new/T)))
              + KL(softmax(c_old/T) || softmax(c_new/T)) over the old classes of each clip ]

(mask distillation, and class distillation where the protocol has classes). T = 2 as in the original
and Avalanche; alpha = 3 was chosen on validation data over their alpha = 1 (docs/reproducibility.md).
TIL (one mask head per task): the old heads are distilled on the new data, one old head per step in
rotation (a second forward).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clavs.batch import clip_class_logits
from clavs.methods.base import register
from clavs.methods.finetune import Finetune
from clavs.methods.parts import FrozenTeacher


@dataclass
class LwFHparams:
    alpha: float = 3.0           # weight of the distillation terms: 3, chosen on validation data over the original 1
    temperature: float = 2.0
    consolidate_every: int = 40  # task-free streams: training steps between teacher refreshes


def binary_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean per-pixel KL between the teacher's and the student's Bernoulli(sigmoid(z / T)); exactly 0
    when the logits are equal."""
    target = torch.sigmoid(teacher.float() / temperature)
    cross = F.binary_cross_entropy_with_logits(student.float() / temperature, target)
    entropy = F.binary_cross_entropy_with_logits(teacher.float() / temperature, target)
    return cross - entropy


def class_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)) averaged over rows."""
    return F.kl_div(F.log_softmax(student.float() / temperature, -1), F.log_softmax(teacher.float() / temperature, -1),
                    reduction="batchmean", log_target=True)


@register
class LwF(Finetune):
    name = "lwf"
    family = "cl"
    Hparams = LwFHparams

    def __init__(self, model, hparams, scenario, ctx):
        super().__init__(model, hparams, scenario, ctx)
        self.teacher = FrozenTeacher(autocast=ctx.autocast)
        self.steps = 0

    def training_step(self, batch, model):
        out = model(batch)
        terms = self.task_loss(batch, out)
        self.steps += 1
        if not self.teacher.ready:
            return terms
        T, alpha = self.hp.temperature, self.hp.alpha
        old, new = self.distillation_pair(batch, model, out)
        terms["lwf_mask"] = alpha * binary_distillation(new.mask_logits, old.mask_logits, T)
        if old.class_logits is not None and out.class_logits is not None and old.class_logits.shape[-1] > 0:
            n_old = old.class_logits.shape[-1]
            terms["lwf_class"] = alpha * class_distillation(
                clip_class_logits(out.class_logits, batch.size)[:, :n_old],
                clip_class_logits(old.class_logits, batch.size), T)  # class logits do not depend on the mask head
        return terms

    def distillation_pair(self, batch, model, out):
        """(teacher output, student output) to distil this step: on the batch itself (`out`), or, in
        multi-head TIL where the teacher has no head for this task, on the batch decoded by one of the
        old heads in turn (a second forward of the student)."""
        old_heads = self.teacher.net.num_task_heads
        if old_heads:
            replay = dataclasses.replace(batch, task_id=torch.full_like(batch.task_id, self.steps % old_heads))
            return self.teacher(replay), model(replay)
        return self.teacher(batch), out

    def consolidate(self, data):
        self.teacher.refresh(self.model)

    def state_dict(self):
        return {"teacher": self.teacher.state_dict(), "steps": self.steps}

    def load_state_dict(self, state):
        self.teacher.load_state_dict(state["teacher"], self.model)
        self.steps = int(state["steps"])

