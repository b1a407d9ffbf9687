"""Closed-form heads on frozen features: RanPAC's ridge regression on random projections and FeCAM's
class-wise Gaussians with Mahalanobis scores. Both keep sums only (counts, sums, Gram and outer
products, in float64), so statistics gathered on shards add up with `all_reduce(reduce)`, and a ridge
head adds another task's with `merge`.

RidgeHead (RanPAC, McDonnell et al. 2023; RanPAC.py: setup_RP, replace_fc, optimise_ridge_parameter):

    h = relu(x W_rand)                    W_rand [d, M] ~ N(0, 1), drawn once (random_projection)
    G = sum h h^T  [M, M]                 Q = sum h y^T  [M, K]   (y one-hot over K classes, or one
                                          0/1 column for a binary mask)
    W = (G + lambda I)^-1 Q               scores = h W
    lambda in 10^-8 .. 10^8 minimises the mean squared error on held-out data, computed from the
    held-out sums alone:  sum ||H_h W - Y_h||^2 = tr(W^T G_h W) - 2 tr(W^T Q_h) + sum ||y_h||^2,
    divided by n_h K. The 17 candidates share one eigendecomposition G = V diag(s) V^T:
    W(lambda) = V diag(1 / (s + lambda)) V^T Q. The chosen W is then solved directly (as the original).
    The sums are float64 products of the float32 features (the original keeps G in float32).

GaussianHead (FeCAM, Goswami et al. 2023; the ViT variant FeCAM_vit_*.py, utils/maha_utils.py):

    x <- x / ||x||                         per class c: mu_c = mean x, S_c = unbiased covariance
    S_c <- S_c + a1 mean(diag S_c) I + a2 mean(offdiag S_c) (1 - I)       (shrinkage; a1=1, a2=0)
    S_c <- D^-1/2 S_c D^-1/2,  D = diag(S_c)                              (correlation; norm_cov)
    d_c(x) = (x - mu_c)^T pinv(S_c) (x - mu_c)                            scores = -d_c / 2

so that the argmax of the scores is FeCAM's argmin of the Mahalanobis distances.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from clavs.methods.parts.statistics import RunningMoments

RIDGES = tuple(10.0 ** k for k in range(-8, 9))  # the original's grid, 10^-8 .. 10^8
_ROWS = 256  # rows per chunk when scoring every pixel of a batch: the [rows, M] block stays in cache

Reduce = Callable[[torch.Tensor], torch.Tensor]


def random_projection(dim_in: int, dim_out: int, generator: torch.Generator,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """W_rand [dim_in, dim_out] ~ N(0, 1) drawn on the CPU from a seeded generator: the same on every
    process and every device."""
    return torch.randn(dim_in, dim_out, generator=generator).to(device)


def probability_logit(p: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """A logit whose sigmoid is the regressed probability p: log(p / (1 - p)) on [eps, 1 - eps], continued
    linearly with the end slopes outside (a ridge output may leave [0, 1]). Strictly increasing, so the
    ranking metrics (mAP, AUPR, Max-F) see the regression's own order, and sigmoid > 0.5 iff p > 0.5."""
    inside = p.clamp(eps, 1 - eps)
    return torch.log(inside) - torch.log1p(-inside) + (p - inside) / (eps * (1 - eps))


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    if x.shape[0] <= _ROWS:
        return fn(x)
    return torch.cat([fn(part) for part in x.split(_ROWS)])


class RidgeHead:
    """RanPAC's head over `outputs` targets (binary: one 0/1 column, the foreground of a mask)."""

    def __init__(self, w_rand: torch.Tensor, outputs: int, binary: bool = False):
        if binary and outputs != 1:
            raise ValueError(f"a binary ridge head has one output, got outputs={outputs}")
        self.w_rand = w_rand
        self.outputs = outputs
        self.binary = binary
        m, dev = w_rand.shape[1], w_rand.device
        self.count = torch.zeros((), dtype=torch.float64, device=dev)
        self.G: torch.Tensor | None = torch.zeros(m, m, dtype=torch.float64, device=dev)
        self.Q: torch.Tensor | None = torch.zeros(m, outputs, dtype=torch.float64, device=dev)
        self.yy: torch.Tensor | None = torch.zeros(outputs, dtype=torch.float64, device=dev)
        self.weight: torch.Tensor | None = None  # [M, K] float64 once fitted
        self.ridge: float | None = None
        self.losses: list[float] = []  # held-out MSE of every candidate lambda (the last fit)

    # -- statistics ----------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() @ self.w_rand).clamp_(min=0)  # relu, in place: this block dominates scoring

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return labels.to(torch.float64)[:, None]
        return F.one_hot(labels.long(), self.outputs).to(torch.float64)

    def update(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """x [N, d] features, labels [N] (0/1 for a binary head, else output indices)."""
        self._check_statistics()
        h = self.features(x).double()
        y = self.targets(labels)
        self.count += h.shape[0]
        self.G += h.T @ h
        self.Q += h.T @ y
        self.yy += (y * y).sum(0)

    def _sums(self) -> list[str]:
        return ["count", "G", "Q", "yy"]

    def all_reduce(self, reduce: Reduce) -> None:
        self._check_statistics()
        for name in self._sums():
            setattr(self, name, reduce(getattr(self, name)))

    def grow(self, outputs: int) -> None:
        """More classes: new zero columns (the rows seen so far are negatives of the new classes)."""
        self._check_statistics()
        if outputs < self.outputs or self.binary and outputs != 1:
            raise ValueError(f"cannot shrink or widen this ridge head from {self.outputs} to {outputs} outputs")
        extra = outputs - self.outputs
        self.Q = F.pad(self.Q, (0, extra))
        self.yy = F.pad(self.yy, (0, extra))
        self.outputs = outputs

    def merge(self, other: "RidgeHead") -> None:
        """Add another head's sums (more data: another task, or the held-out part)."""
        if other.outputs > self.outputs:
            self.grow(other.outputs)
        elif other.outputs < self.outputs:
            other.grow(self.outputs)
        for name in self._sums():
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def release_statistics(self) -> None:
        """Drop G, Q (a head that is never refitted keeps only its weights: checkpoints stay small)."""
        self.G = self.Q = self.yy = None

    def _check_statistics(self) -> None:
        if self.G is None:
            raise RuntimeError("this ridge head's statistics were released after its final fit")

    # -- fitting -------------------------------------------------------------------------------
    def held_out_losses(self, held_out: "RidgeHead") -> torch.Tensor:
        """Held-out mean squared error of W(lambda) = (G + lambda I)^-1 Q for every lambda in RIDGES."""
        self._check_statistics()
        held_out._check_statistics()
        if held_out.outputs < self.outputs:
            held_out.grow(self.outputs)
        s, V = torch.linalg.eigh(self.G)
        s = s.clamp(min=0)  # G is positive semi-definite; rounding can leave eigenvalues at -1e-12
        P = V.T @ self.Q  # W(lambda) = V diag(1/(s+lambda)) P, every lambda side by side: [M, R, K]
        ridges = torch.tensor(RIDGES, dtype=s.dtype, device=s.device)
        W = (V @ (P[:, None, :] / (s[:, None, None] + ridges[None, :, None])).flatten(1)).view(-1, len(RIDGES), self.outputs)
        GW = (held_out.G @ W.flatten(1)).view_as(W)
        sse = (W * GW).sum((0, 2)) - 2 * (W * held_out.Q[:, None, :]).sum((0, 2)) + held_out.yy.sum()
        return sse / (held_out.count * self.outputs)

    def fit(self, held_out: "RidgeHead", merge_held_out: bool = False) -> float:
        """Choose lambda on `held_out` (candidates fitted on this head's sums), then W = (G + lambda I)^-1 Q.
        merge_held_out: the final fit also uses the held-out sums (the original's 80/20 split of the
        training features: lambda on the 20 %, the head on all). Returns lambda."""
        if float(held_out.count) == 0:
            raise ValueError("RanPAC's ridge parameter is chosen on held-out data, but the held-out set is empty "
                             "(no validation clips, and no training clip to hold out)")
        losses = self.held_out_losses(held_out)
        self.losses = [float(v) for v in losses]
        self.ridge = RIDGES[int(torch.argmin(losses))]  # the first (smallest) lambda among equals, as np.argmin
        if merge_held_out:
            self.merge(held_out)
        eye = torch.eye(self.G.shape[0], dtype=self.G.dtype, device=self.G.device)
        self.weight = torch.linalg.solve(self.G + self.ridge * eye, self.Q)
        return self.ridge

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """[N, d] -> [N, K] = relu(x W_rand) W (float32; in chunks of rows)."""
        if self.weight is None:
            raise RuntimeError("the ridge head is not fitted")
        weight = self.weight.float()
        return _chunked(lambda part: self.features(part) @ weight, x)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"outputs": self.outputs, "binary": self.binary, "count": self.count, "G": self.G, "Q": self.Q,
                "yy": self.yy, "weight": self.weight, "ridge": self.ridge, "losses": list(self.losses)}

    @classmethod
    def from_state(cls, state: dict[str, Any], w_rand: torch.Tensor) -> "RidgeHead":
        head = cls(w_rand, int(state["outputs"]), bool(state["binary"]))
        for name in ("count", "G", "Q", "yy", "weight"):
            value = state[name]
            setattr(head, name, None if value is None else value.to(w_rand.device))
        head.ridge = state["ridge"]
        head.losses = list(state["losses"])
        return head


def shrink_covariance(cov: torch.Tensor, shrink1: float, shrink2: float) -> torch.Tensor:
    """S + a1 mean(diag S) I + a2 mean(offdiag S) (1 - I); the off-diagonal mean is over the non-zero
    entries, as FeCAM's shrink_cov."""
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    off = cov * (1 - eye)
    nonzero = off != 0
    off_mean = off.sum() / nonzero.sum() if bool(nonzero.any()) else off.sum()
    return cov + shrink1 * torch.diagonal(cov).mean() * eye + shrink2 * off_mean * (1 - eye)


def correlation(cov: torch.Tensor) -> torch.Tensor:
    """D^-1/2 S D^-1/2 with D = diag(S) (FeCAM's normalize_cov)."""
    sd = torch.sqrt(torch.diagonal(cov))
    return cov / (sd[:, None] * sd[None, :])


class GaussianHead:
    """FeCAM's head over `outputs` classes: per class the moments of the L2-normalised features."""

    def __init__(self, dim: int, outputs: int, shrink1: float = 1.0, shrink2: float = 0.0, normalize_cov: bool = True,
                 device: torch.device | str = "cpu"):
        self.dim, self.outputs, self.device = dim, outputs, torch.device(device)
        self.shrink1, self.shrink2, self.normalize_cov = shrink1, shrink2, normalize_cov
        self.moments: list[RunningMoments] | None = [RunningMoments(dim, device=device) for _ in range(outputs)]
        self.means: torch.Tensor | None = None       # [K, d] float64
        self.precisions: torch.Tensor | None = None  # [K, d, d] float64
        self.present: torch.Tensor | None = None     # [K] bool: classes with at least one row

    @staticmethod
    def features(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), dim=-1)

    def update(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        if self.moments is None:
            raise RuntimeError("this Gaussian head's statistics were released after its final fit")
        x = self.features(x)
        for k in labels.unique().tolist():
            self.moments[k].update(x[labels == k])

    def all_reduce(self, reduce: Reduce) -> None:
        for m in self.moments:
            m.all_reduce(reduce)

    def class_covariance(self, k: int) -> torch.Tensor:
        """The shrunk (and normalised) covariance of class k; a class of one row gets the identity
        (Euclidean distance to its mean, FeCAM's rule where there is no covariance)."""
        m = self.moments[k]
        if float(m.count) < 2:
            return torch.eye(self.dim, dtype=torch.float64, device=m.sum.device)
        cov = shrink_covariance(m.covariance(), self.shrink1, self.shrink2)
        return correlation(cov) if self.normalize_cov else cov

    def fit(self) -> None:
        counts = torch.stack([m.count for m in self.moments])
        self.present = counts > 0
        self.means = torch.stack([m.sum / m.count.clamp(min=1) for m in self.moments])
        self.precisions = torch.stack([torch.linalg.pinv(self.class_covariance(k), hermitian=True)
                                       for k in range(self.outputs)])

    def mahalanobis(self, x: torch.Tensor) -> torch.Tensor:
        """[N, d] raw features -> [N, K] squared Mahalanobis distances (float32)."""
        if self.means is None:
            raise RuntimeError("the Gaussian head is not fitted")
        means, precisions = self.means.float(), self.precisions.float()

        def distances(part: torch.Tensor) -> torch.Tensor:
            diff = self.features(part)[:, None, :] - means[None]  # [n, K, d]
            return torch.einsum("nkd,kde,nke->nk", diff, precisions, diff)

        return _chunked(distances, x)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """-d_c / 2 (a class without rows: -inf)."""
        s = -0.5 * self.mahalanobis(x)
        return s.masked_fill(~self.present.to(s.device)[None], float("-inf"))

    def release_statistics(self) -> None:
        self.moments = None

    def state_dict(self) -> dict[str, Any]:
        return {"outputs": self.outputs, "moments": None if self.moments is None else [m.state_dict() for m in self.moments],
                "means": self.means, "precisions": self.precisions, "present": self.present}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """From a checkpoint (read on the CPU): onto this head's device."""
        def here(value):
            if isinstance(value, dict):
                return {k: here(v) for k, v in value.items()}
            return value.to(self.device) if isinstance(value, torch.Tensor) else value

        if state["moments"] is None:
            self.moments = None
        else:
            for m, s in zip(self.moments, state["moments"]):
                m.load_state_dict(here(s))
        self.means, self.precisions, self.present = here(state["means"]), here(state["precisions"]), here(state["present"])

