"""Hand-written LoRA (low-rank adaptation) for nn.Linear and nn.Conv2d.

Why not peft: it pulls in transformers + accelerate, freezes every non-adapter parameter of the
model it touches (our decoder must stay trainable), and adapts a fused ``qkv`` as one block, while
ViT-LoRA adapts only the Q and V parts (see shared/reference/encoders.md, section 3).

Math (Hu et al. 2021): ``y = W0 x + b + (alpha / r) * B A drop(x)`` with ``A: r x in`` initialised
kaiming-uniform(a=sqrt(5)) and ``B: out x r`` initialised to zeros, so an adapted layer starts out
computing exactly what the base layer computes.

Naming. An adapted layer keeps the base's own ``weight``/``bias`` parameters under their original
names (it subclasses nn.Linear / nn.Conv2d), so state_dict keys of the base model do not move, and
adds:
- ``lora_A``, ``lora_B``                   (LoRALinear, LoRAConv2d)
- ``lora_q_A``, ``lora_q_B``, ``lora_v_A``, ...  (LoRASlicedLinear: one pair per adapted output slice,
  e.g. the Q and V thirds of timm's fused ``qkv``; the K slice gets none and is left untouched).

Convolutions use the usual LoRA conv form: ``A`` is a conv with the base's kernel, stride, padding and
dilation but ``r`` output channels, ``B`` a 1x1 conv back to ``out`` channels; the equivalent weight
delta is ``(B @ A.flatten(1)).view_as(W0)``, so merging is exact. Grouped convs are rejected.
"""

from __future__ import annotations

import copy
import math
from typing import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LoRALayer",
    "LoRALinear",
    "LoRASlicedLinear",
    "LoRAQKV",
    "LoRAConv2d",
    "apply_lora",
    "merge_lora",
    "merged_state_dict",
    "lora_parameters",
    "lora_named_parameters",
    "is_lora_parameter_name",
    "freeze_all_but",
]


def _check_rank(r: int, alpha: float, dropout: float) -> None:
    if not isinstance(r, int) or r <= 0:
        raise ValueError(f"LoRA rank r must be a positive int, got {r!r}")
    if alpha <= 0:
        raise ValueError(f"LoRA alpha must be > 0, got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}")


def _init_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    # Same init as the LoRA paper / peft: A random (kaiming-uniform, a=sqrt(5), like nn.Linear's
    # default), B zero, so the adapter's contribution starts at exactly zero.
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))
    nn.init.zeros_(b)


class LoRALayer:
    """Mixin marking a LoRA-adapted layer; every subclass implements ``delta_weight`` and ``merged``."""

    r: int
    alpha: float
    scaling: float

    def delta_weight(self) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def merged(self) -> nn.Module:
        """A plain nn.Linear / nn.Conv2d whose weight is ``W0 + scaling * delta``."""
        raise NotImplementedError  # pragma: no cover - interface

    def _adopt_base(self, base: nn.Module, r: int, alpha: float, dropout: float, freeze_base: bool, *,
                    a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> None:
        """Share the base's weight and bias (no copy), create the A/B pair, optionally freeze the base."""
        self.weight = base.weight
        self.bias = base.bias
        self.r, self.alpha, self.scaling = r, float(alpha), float(alpha) / r
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.Parameter(torch.empty(*a_shape, **factory))
        self.lora_B = nn.Parameter(torch.empty(*b_shape, **factory))
        _init_pair(self.lora_A, self.lora_B)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if freeze_base:
            for p in (self.weight, self.bias):
                if p is not None:
                    p.requires_grad_(False)

    def _fill_merged(self, out: nn.Module) -> nn.Module:
        """Copy ``W0 + scaling * delta`` and the bias into the plain layer `out`, keeping requires_grad."""
        with torch.no_grad():
            out.weight.copy_(self.weight + self.scaling * self.delta_weight())
            if self.bias is not None:
                out.bias.copy_(self.bias)
        out.weight.requires_grad_(self.weight.requires_grad)
        if self.bias is not None:
            out.bias.requires_grad_(self.bias.requires_grad)
        return out


class LoRALinear(nn.Linear, LoRALayer):
    """``y = base(x) + (alpha / r) * B(A(drop(x)))``; shares (does not copy) the base's weight and bias.

    With ``freeze_base`` (default) the base weight and bias get ``requires_grad=False``.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0, freeze_base: bool = True):
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        _check_rank(r, alpha, dropout)
        nn.Module.__init__(self)  # not nn.Linear.__init__: it would allocate a fresh weight
        self.in_features, self.out_features = base.in_features, base.out_features
        self._adopt_base(base, r, alpha, dropout, freeze_base, a_shape=(r, self.in_features),
                         b_shape=(self.out_features, r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        return y + self.scaling * F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        return self.lora_B @ self.lora_A

    def merged(self) -> nn.Linear:
        return self._fill_merged(nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                                           device=self.weight.device, dtype=self.weight.dtype))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, alpha={self.alpha:g}"


class LoRASlicedLinear(nn.Linear, LoRALayer):
    """LoRA on chosen output slices of a fused Linear (e.g. Q and V of ``qkv``), one A/B pair per slice.

    ``slices`` maps a short name to ``(start, stop)`` output rows; rows outside every slice (the K
    part) are computed by the base weight alone and receive no adapter.
    """

    def __init__(self, base: nn.Linear, slices: dict[str, tuple[int, int]], r: int, alpha: float,
                 dropout: float = 0.0, freeze_base: bool = True):
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRASlicedLinear wraps an nn.Linear, got {type(base).__name__}")
        _check_rank(r, alpha, dropout)
        if not slices:
            raise ValueError("LoRASlicedLinear needs at least one output slice")
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.r, self.alpha, self.scaling = r, float(alpha), float(alpha) / r
        ordered = sorted(slices.items(), key=lambda kv: kv[1][0])
        prev_stop = 0
        for name, (start, stop) in ordered:
            if not (name.isidentifier() and 0 <= start < stop <= self.out_features and start >= prev_stop):
                raise ValueError(f"bad LoRA slice {name!r}=({start}, {stop}) for out_features={self.out_features} "
                                 "(slices must be named by identifiers, lie inside the output and not overlap)")
            prev_stop = stop
        self.slices = dict(ordered)
        factory = dict(device=base.weight.device, dtype=base.weight.dtype)
        for name, (start, stop) in self.slices.items():
            a = nn.Parameter(torch.empty(r, self.in_features, **factory))
            b = nn.Parameter(torch.empty(stop - start, r, **factory))
            _init_pair(a, b)
            self.register_parameter(f"lora_{name}_A", a)
            self.register_parameter(f"lora_{name}_B", b)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if freeze_base:
            for p in (self.weight, self.bias):
                if p is not None:
                    p.requires_grad_(False)

    def _pair(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"lora_{name}_A"), getattr(self, f"lora_{name}_B")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        xd = self.lora_dropout(x)
        pieces: list[torch.Tensor] = []
        cursor = 0
        for name, (start, stop) in self.slices.items():
            if start > cursor:  # un-adapted rows (e.g. K) get an exact zero delta
                pieces.append(y.new_zeros(*y.shape[:-1], start - cursor))
            a, b = self._pair(name)
            pieces.append(F.linear(F.linear(xd, a), b))
            cursor = stop
        if cursor < self.out_features:
            pieces.append(y.new_zeros(*y.shape[:-1], self.out_features - cursor))
        return y + self.scaling * torch.cat(pieces, dim=-1)

    def delta_weight(self) -> torch.Tensor:
        delta = torch.zeros_like(self.weight)
        for name, (start, stop) in self.slices.items():
            a, b = self._pair(name)
            delta[start:stop] = b @ a
        return delta

    def merged(self) -> nn.Linear:
        return LoRALinear.merged(self)  # same construction: W0 + scaling * delta, bias copied

    def extra_repr(self) -> str:
        names = ",".join(self.slices)
        return f"{super().extra_repr()}, r={self.r}, alpha={self.alpha:g}, slices={names}"


def LoRAQKV(base: nn.Linear, r: int, alpha: float, dropout: float = 0.0,
            parts: Sequence[str] = ("q", "v"), freeze_base: bool = True) -> LoRASlicedLinear:
    """LoRA for timm's fused ``qkv`` (out = 3 x attn_dim, ordered Q, K, V): adapt only ``parts``.

    Parameters are named ``lora_q_A``, ``lora_q_B``, ``lora_v_A``, ``lora_v_B`` (for the default parts).
    """
    if base.out_features % 3:
        raise ValueError(f"a fused qkv Linear needs out_features divisible by 3, got {base.out_features}")
    third = base.out_features // 3
    offsets = {"q": 0, "k": third, "v": 2 * third}
    unknown = [p for p in parts if p not in offsets]
    if unknown:
        raise ValueError(f"qkv parts must be among 'q', 'k', 'v', got {unknown}")
    return LoRASlicedLinear(base, {p: (offsets[p], offsets[p] + third) for p in parts}, r, alpha, dropout,
                            freeze_base)


def _lora_kv_v_only(base: nn.Linear, r: int, alpha: float, dropout: float, freeze_base: bool) -> LoRASlicedLinear:
    # PVT-v2's attention has a separate `q` Linear and a fused `kv` (out = 2 x dim, ordered K, V).
    if base.out_features % 2:
        raise ValueError(f"a fused kv Linear needs an even out_features, got {base.out_features}")
    half = base.out_features // 2
    return LoRASlicedLinear(base, {"v": (half, base.out_features)}, r, alpha, dropout, freeze_base)


class LoRAConv2d(nn.Conv2d, LoRALayer):
    """LoRA for an nn.Conv2d (any kernel, groups == 1): delta weight ``(B @ A.flatten(1)).view_as(W0)``.

    ``A`` has the base's kernel (so it sees the same receptive field), ``B`` is 1x1. In training with
    dropout the adapter runs on the dropped-out input; otherwise the layer runs one conv with
    ``W0 + scaling * delta``, which is exactly what the merged layer computes.
    """

    def __init__(self, base: nn.Conv2d, r: int, alpha: float, dropout: float = 0.0, freeze_base: bool = True):
        if not isinstance(base, nn.Conv2d):
            raise TypeError(f"LoRAConv2d wraps an nn.Conv2d, got {type(base).__name__}")
        if base.groups != 1:
            raise ValueError(f"LoRAConv2d supports groups == 1 only, got a conv with groups={base.groups}")
        _check_rank(r, alpha, dropout)
        nn.Module.__init__(self)
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                     "transposed", "output_padding", "groups", "padding_mode", "_reversed_padding_repeated_twice"):
            setattr(self, attr, getattr(base, attr))
        kh, kw = base.kernel_size
        self._adopt_base(base, r, alpha, dropout, freeze_base, a_shape=(r, base.in_channels, kh, kw),
                         b_shape=(base.out_channels, r))

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A.flatten(1)).view_as(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        delta = self.scaling * self.delta_weight()
        if self.training and isinstance(self.lora_dropout, nn.Dropout):
            return self._conv_forward(x, self.weight, self.bias) + self._conv_forward(self.lora_dropout(x), delta, None)
        return self._conv_forward(x, self.weight + delta, self.bias)

    def merged(self) -> nn.Conv2d:
        out = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                        self.dilation, self.groups, self.bias is not None, self.padding_mode,
                        device=self.weight.device, dtype=self.weight.dtype)
        return self._fill_merged(out)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, r={self.r}, alpha={self.alpha:g}"


def _matches(qualified_name: str, targets: Sequence[str]) -> bool:
    # A target names a module by its last name component ("qkv") or by a dotted suffix ("attn.proj",
    # needed to tell attention projections from e.g. patch_embed.proj).
    return any(qualified_name == t or qualified_name.endswith("." + t) for t in targets)


def _set_submodule(root: nn.Module, qualified_name: str, new: nn.Module) -> None:
    parent_name, _, child = qualified_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def apply_lora(module: nn.Module, targets: Sequence[str] = ("qkv",), r: int = 8, alpha: float = 16.0,
               dropout: float = 0.0, qv_only: bool = True, freeze_base: bool = True) -> list[str]:
    """Replace, in place, every nn.Linear / nn.Conv2d whose name matches ``targets`` by a LoRA layer.

    - a target matching a fused ``qkv`` Linear with ``qv_only`` -> :func:`LoRAQKV` (Q and V adapted,
      K untouched); without ``qv_only`` -> a plain :class:`LoRALinear` over the whole output (as peft);
    - a fused ``kv`` Linear (PVT-v2) with ``qv_only`` -> only its V half is adapted;
    - any other Linear -> :class:`LoRALinear`; any Conv2d (groups 1) -> :class:`LoRAConv2d`.

    ``freeze_base`` freezes the adapted layers' own weight and bias only; freezing the rest of the
    model is the caller's decision. Layers already adapted are left alone (idempotent).
    Returns the qualified names (relative to ``module``) of every LoRA parameter now in ``module``.
    """
    if isinstance(targets, str):
        targets = (targets,)
    _check_rank(r, alpha, dropout)
    matched = [(n, m) for n, m in module.named_modules() if n and _matches(n, targets)]
    if not matched:
        raise ValueError(f"apply_lora: no submodule matches targets {list(targets)} in {type(module).__name__}")
    for name, layer in matched:
        if isinstance(layer, LoRALayer):
            continue
        last = name.rpartition(".")[2]
        if isinstance(layer, nn.Linear):
            if qv_only and last == "qkv":
                new: nn.Module = LoRAQKV(layer, r, alpha, dropout, ("q", "v"), freeze_base)
            elif qv_only and last == "kv":
                new = _lora_kv_v_only(layer, r, alpha, dropout, freeze_base)
            else:
                new = LoRALinear(layer, r, alpha, dropout, freeze_base)
        elif isinstance(layer, nn.Conv2d):
            new = LoRAConv2d(layer, r, alpha, dropout, freeze_base)
        else:
            raise TypeError(f"apply_lora: target {name!r} is a {type(layer).__name__}; "
                            "only nn.Linear and nn.Conv2d can be LoRA-adapted")
        _set_submodule(module, name, new)
    return [n for n, _ in lora_named_parameters(module)]


def is_lora_parameter_name(name: str) -> bool:
    """True for the names of LoRA matrices (``...lora_A``, ``...lora_q_B``, ...)."""
    leaf = name.rpartition(".")[2]
    return leaf.startswith("lora_") and leaf.endswith(("_A", "_B"))


def lora_named_parameters(module: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(name, parameter) for every LoRA matrix inside ``module``, in registration order."""
    for name, p in module.named_parameters():
        if is_lora_parameter_name(name):
            yield name, p


def lora_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    """Every LoRA matrix inside ``module``."""
    for _, p in lora_named_parameters(module):
        yield p


def merge_lora(module: nn.Module) -> list[str]:
    """Fold every LoRA layer into its base (``W0 += scaling * B @ A``), restoring plain Linear/Conv2d.

    The output of the module is unchanged (up to float rounding). Returns the merged layers' names.
    """
    names = [n for n, m in module.named_modules() if isinstance(m, LoRALayer)]
    if isinstance(module, LoRALayer):
        raise TypeError("merge_lora needs the parent of a LoRA layer (it replaces layers in place); "
                        "call layer.merged() on a single layer")
    for name in names:
        _set_submodule(module, name, module.get_submodule(name).merged())
    return names


def merged_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict ``module`` would have after :func:`merge_lora`, without modifying ``module``."""
    clone = copy.deepcopy(module)
    if isinstance(clone, LoRALayer):
        return clone.merged().state_dict()
    merge_lora(clone)
    return clone.state_dict()


def freeze_all_but(module: nn.Module, keep: Iterable[nn.Parameter]) -> None:
    """Set ``requires_grad`` False on every parameter of ``module`` except those in ``keep``."""
    keep_ids = {id(p) for p in keep}
    for p in module.parameters():
        p.requires_grad_(id(p) in keep_ids)
