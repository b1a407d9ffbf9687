"""Seeds: every task and epoch draws from its own seed, so a resumed run repeats an uninterrupted one."""

from __future__ import annotations

import random

import numpy as np
import torch


def task_seed(seed: int, task: int, epoch: int = 0) -> int:
    return (seed * 1_000_003 + task * 1009 + epoch) % (2**31 - 1)


def seed_all(s: int) -> None:
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)
