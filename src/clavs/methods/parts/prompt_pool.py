"""L2P's prompt pool (Wang et al., CVPR 2022): M prompts P_i of L_p tokens each, with M learnable keys
k_i, matched to a query q (the frozen encoder's class token of the unprompted image):

    s_i = <q / |q|, k_i / |k_i|>                cosine similarity to every key
    K_x = top-N of s                            the selected prompts, per clip
    batch-wise (the original's `batchwise_prompt`): the N ids that occur most often among the
                clips' K_x, ties to the lower id, used for every clip of the batch
    prompt tokens = [P_{K_x,1}; ...; P_{K_x,N}]  [N * L_p, C], prepended to the visual tokens
    pull  = sum_{i in K_x} s_i                  per clip; the loss adds -lambda * mean over clips

The selection is made without gradients by the method (from the frozen query); the tokens and the
pull term are computed in the network's forward (`forward`), so that the prompts and keys are used
where DDP sees them. Initialisation U(-1, 1) for both, as the PyTorch ports (mammoth, PILOT).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clavs.batch import Batch

# Batch.extra keys the method fills: the clip's query [B, C] and its selected prompt ids [B, N].
QUERY = "prompt_query"
SELECTED = "prompt_ids"


class PromptPool(nn.Module):
    def __init__(self, pool_size: int, length: int, dim: int, top_k: int):
        super().__init__()
        if not 1 <= top_k <= pool_size:
            raise ValueError(f"top_k={top_k} must be in [1, pool_size={pool_size}]")
        if length < 1:
            raise ValueError(f"prompt length must be >= 1, got {length}")
        self.top_k = top_k
        self.prompts = nn.Parameter(torch.empty(pool_size, length, dim).uniform_(-1, 1))
        self.keys = nn.Parameter(torch.empty(pool_size, dim).uniform_(-1, 1))

    @property
    def pool_size(self) -> int:
        return self.prompts.shape[0]

    def similarity(self, query: torch.Tensor) -> torch.Tensor:
        """[B, C] queries -> [B, M] cosine similarities to the keys."""
        return F.normalize(query.float(), dim=-1) @ F.normalize(self.keys.float(), dim=-1).T

    @torch.no_grad()
    def select(self, query: torch.Tensor, batchwise: bool = False) -> torch.Tensor:
        """[B, C] queries -> [B, N] prompt ids: each clip's N most similar keys (most similar first), or
        with `batchwise` the batch's N most frequent ids (ties to the lower id) for every clip."""
        ids = self.similarity(query).topk(self.top_k, dim=-1).indices
        if not batchwise:
            return ids
        counts = torch.bincount(ids.flatten(), minlength=self.pool_size)
        major = torch.argsort(counts, descending=True, stable=True)[: self.top_k]
        return major.expand(ids.shape[0], -1).clone()

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        """The selected prompts of every clip as tokens [B, N * L_p, C], and features: the ids and the
        pull term [B] (sum over the selected keys of their cosine similarity to the query)."""
        missing = [k for k in (QUERY, SELECTED) if k not in batch.extra]
        if missing:
            raise ValueError(f"the prompt pool needs batch.extra {missing}: the method that owns it (l2p) "
                             "selects the prompts; run the network through its training_step / predict")
        ids = batch.extra[SELECTED]
        tokens = self.prompts[ids].flatten(1, 2)
        keys = F.normalize(self.keys.float(), dim=-1)[ids]
        query = F.normalize(batch.extra[QUERY].float(), dim=-1)
        pull = (keys * query[:, None, :]).sum(dim=(1, 2))
        return tokens, {"prompt_ids": ids, "prompt_pull": pull}
