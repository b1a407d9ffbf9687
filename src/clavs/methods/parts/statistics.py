"""Running first and second moments of features, as sums that all-reduce across processes
(class prototypes and covariances of FeCAM, the Gram matrix of RanPAC)."""

from __future__ import annotations

from typing import Any, Callable

import torch


class RunningMoments:
    """count, sum x [D] and (optionally) sum x x^T [D, D] of the rows seen, in float64.

    mean = sum / count;  covariance = (sum xx^T - count * mean mean^T) / (count - 1)  (unbiased).
    """

    def __init__(self, dim: int, second_order: bool = True, device: torch.device | str = "cpu"):
        self.dim = dim
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device) if second_order else None

    def update(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"RunningMoments.update expects [N, {self.dim}], got {tuple(x.shape)}")
        x = x.detach().to(self.sum.device, torch.float64)
        self.count += x.shape[0]
        self.sum += x.sum(0)
        if self.outer is not None:
            self.outer += x.T @ x

    def all_reduce(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Add the sums of every process (reduce = MethodContext.all_reduce_sum)."""
        self.count = reduce(self.count)
        self.sum = reduce(self.sum)
        if self.outer is not None:
            self.outer = reduce(self.outer)

    @property
    def mean(self) -> torch.Tensor:
        if float(self.count) == 0:
            raise ValueError("no rows seen yet")
        return self.sum / self.count

    def covariance(self) -> torch.Tensor:
        if self.outer is None:
            raise ValueError("built with second_order=False")
        n = float(self.count)
        if n < 2:
            raise ValueError(f"a covariance needs at least 2 rows, got {int(n)}")
        mu = self.mean
        return (self.outer - n * torch.outer(mu, mu)) / (n - 1)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sum": self.sum, "outer": self.outer}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.sum, self.outer = state["count"], state["sum"], state["outer"]
