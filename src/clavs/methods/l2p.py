"""L2P, Learning to Prompt (Wang et al., CVPR 2022), on the plain AVS network: the visual encoder stays
frozen, a pool of prompts with learned keys (parts/prompt_pool.py) is matched to the frozen class token
of the unprompted frames, and the N best prompts are prepended to the visual tokens.

    q_b   = normalise( mean over the clip's decoded frames f of cls(f) / |cls(f)| )   frozen, no gradient
    K_b   = the N keys most similar to q_b (training: the batch's N most frequent, `batchwise_prompt`)
    loss  = BCE + Dice (+ CE over the clip's task's classes, the original's train_mask)
            - lambda_pull * (1/B) sum_b sum_{i in K_b} cos(q_b, k_i)

Prompts and keys train with their own learning rate (Adam, the original's 0.03 at batch 128, scaled
linearly to the run's global batch, no weight decay); the audio projection, fusion, decoder and heads
that AVS adds train at train.lr. Prediction selects per clip (docs/methods.md says why).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from clavs.batch import Batch
from clavs.methods.base import Method, classification_loss, register, segmentation_loss
from clavs.methods.parts.prompt_pool import QUERY, SELECTED, PromptPool

POOL = "prompt_pool"


@dataclass
class L2PHparams:
    # The original's first release (google-research/l2p 8cfb210, configs/cifar100_l2p.py), as mammoth and PILOT.
    pool_size: int = 10            # M
    prompt_length: int = 5         # L_p, tokens per prompt
    top_k: int = 5                 # N, prompts per clip: N * L_p = 25 tokens
    pull_lambda: float = 0.1       # lambda of the key-matching (pull) term
    batchwise_prompt: bool = True  # training: the batch's N most frequent prompts for every clip
    train_mask: bool = True        # CE over the current task's classes only (CIL/TIL)
    prompt_lr: float = 0.03        # Adam learning rate of prompts and keys at a global batch of ...
    prompt_lr_batch: int = 128     # ... this many clips; scaled linearly to the run's global batch


@register
class L2P(Method):
    """L2P: frozen ViT, a prompt pool with keys matched to the frozen class token."""

    name = "l2p"
    family = "cl"
    network = "plain"
    trains = (POOL, "audio_proj", "fusion", "decoder", "mask_head", "class_head")
    Hparams = L2PHparams

    def __init__(self, model, hparams, scenario, ctx):
        super().__init__(model, hparams, scenario, ctx)
        pool = PromptPool(hparams.pool_size, hparams.prompt_length, model.visual.token_dim, hparams.top_k)
        self.pool = self.register_module(POOL, pool)
        model.use_visual_prompts(POOL)

    @classmethod
    def validate_hparams(cls, section: dict[str, Any]) -> None:
        super().validate_hparams(section)
        hp = {**cls.default_hparams({}), **section}
        for key in ("pool_size", "prompt_length", "prompt_lr_batch"):
            if hp[key] < 1:
                raise ValueError(f"method.{key}={hp[key]} must be >= 1")
        if not 1 <= hp["top_k"] <= hp["pool_size"]:
            raise ValueError(f"method.top_k={hp['top_k']} must be in [1, method.pool_size={hp['pool_size']}]")
        if hp["prompt_lr"] <= 0 or hp["pull_lambda"] < 0:
            raise ValueError(f"method.prompt_lr={hp['prompt_lr']} must be > 0 and method.pull_lambda="
                             f"{hp['pull_lambda']} >= 0")

    # -- prompt selection ----------------------------------------------------------------------
    @torch.no_grad()
    def query(self, batch: Batch) -> torch.Tensor:
        """[B, C]: mean over the clip's decoded frames of the unit class tokens of the frozen encoder,
        run on the frames without prompts."""
        frames = batch.frames[:, batch.decoded_frames].flatten(0, 1)
        cls = F.normalize(self.model.visual.forward_pooled(frames).float(), dim=-1)
        return cls.reshape(batch.size, -1, cls.shape[-1]).mean(dim=1)

    def with_prompts(self, batch: Batch, batchwise: bool) -> Batch:
        """The batch with its clips' queries and selected prompt ids in `extra` (for the pool's forward)."""
        query = self.query(batch)
        ids = self.pool.select(query, batchwise=batchwise)
        return dataclasses.replace(batch, extra={**batch.extra, QUERY: query, SELECTED: ids})

    # -- training ------------------------------------------------------------------------------
    def prompt_lr(self) -> float:
        """The original's learning rate scaled linearly to the run's global batch (clips per step)."""
        batch = self.ctx.config.get("train", {}).get("batch_size", self.hp.prompt_lr_batch)
        return self.hp.prompt_lr * batch * self.ctx.world_size / self.hp.prompt_lr_batch

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        params = self.trainable_parameters()
        pool = {id(p) for p in self.pool.parameters()}
        return [{"name": POOL, "params": [p for p in params if id(p) in pool], "lr": self.prompt_lr(),
                 "weight_decay": 0.0},
                {"name": "trained", "params": [p for p in params if id(p) not in pool], "lr": lr,
                 "weight_decay": weight_decay}]

    def training_step(self, batch, model):
        batch = self.with_prompts(batch, batchwise=self.hp.batchwise_prompt)
        out = model(batch)
        terms = self.task_loss(batch, out)
        if self.hp.pull_lambda:
            terms["l2p_pull"] = -self.hp.pull_lambda * out.features["prompt_pull"].mean()
        return terms

    def task_loss(self, batch, out):
        terms = segmentation_loss(batch, out)
        ce = classification_loss(batch, out, self.scenario, own_task_only=self.hp.train_mask)
        if ce is not None:
            terms["ce"] = ce
        return terms

    @torch.no_grad()
    def predict(self, batch):
        return super().predict(self.with_prompts(batch, batchwise=False))
