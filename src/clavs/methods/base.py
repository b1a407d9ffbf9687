"""The method interface: hooks on the one training loop (engine/loop.py), a registry, declared
hyperparameters. A new method is one file in this folder: subclass `Method`, declare `Hparams`,
override the hooks it needs, decorate with `@register`.

Hook order per task (the engine calls them; a method never copies the loop):
    begin_task(task)                               before the optimiser is built
    for each step:  out = model(batch)
                    terms = loss(batch, out)       dict of named loss terms; the engine sums them
                    backward, gradient clipping
                    after_backward()               gradients present (gradient reweighting, SI's g)
                    optimiser step
                    after_step()                   parameters updated (path integrals)
    after each epoch, model selection on validation data: selection_state() when an epoch is the best
    so far, restore_selection_state() with the best epoch's weights
    end_task(task, loader)                         after model selection (Fisher, prototypes, anchors)
    predict(batch, task_id)                        evaluation (no gradients)
State that must survive a resume lives in `state_dict()` / `load_state_dict()`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from clavs.engine.context import EngineContext
    from clavs.protocols import Scenario, Task

_REGISTRY: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make a method available to `clavs run --method NAME`."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__qualname__} needs a class attribute `name`")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name '{cls.name}' registered twice ({_REGISTRY[cls.name].__qualname__})")
    _REGISTRY[cls.name] = cls
    return cls


def get_method_class(name: str) -> type["Method"]:
    _import_all_methods()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method '{name}'; available: {', '.join(sorted(_REGISTRY))}") from None


def available_methods() -> list[str]:
    _import_all_methods()
    return sorted(_REGISTRY)


def _import_all_methods() -> None:
    import importlib
    import pkgutil

    import clavs.methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("base", "losses"):
            importlib.import_module(f"clavs.methods.{info.name}")


@dataclass
class NoHparams:
    """A method without hyperparameters of its own."""


class Method:
    """Base class: plain supervised training of the parameter groups in `trains`."""

    name: ClassVar[str] = ""
    protocols: ClassVar[tuple[str, ...]] = ("til", "cil", "dil", "tfcl")
    uses_exemplars: ClassVar[bool] = False
    # Parameter groups of the model (see AtlasNet.named_parameter_groups) that the optimiser updates.
    trains: ClassVar[tuple[str, ...]] = ()
    Hparams: ClassVar[type] = NoHparams

    def __init__(self, model: nn.Module, hparams: Any, scenario: "Scenario", ctx: "EngineContext"):
        self.model = model
        self.hp = hparams
        self.scenario = scenario
        self.ctx = ctx
        self.task: "Task | None" = None

    # -- hyperparameters -------------------------------------------------------------------
    @classmethod
    def default_hparams(cls, config: dict[str, Any]) -> dict[str, Any]:
        return dataclasses.asdict(cls.Hparams())

    @classmethod
    def validate_hparams(cls, section: dict[str, Any]) -> None:
        defaults = cls.default_hparams({})
        for key, value in section.items():
            if key == "name":
                continue
            if key not in defaults:
                raise ValueError(
                    f"unknown hyperparameter 'method.{key}' for method '{cls.name}'; "
                    f"valid: {', '.join(sorted(defaults)) or '(none)'}"
                )
            expected = type(defaults[key])
            ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if defaults[key] is not None and not ok:
                raise ValueError(f"method.{key}={value!r} must be of type {expected.__name__} "
                                 f"(default {defaults[key]!r})")

    @classmethod
    def make_hparams(cls, section: dict[str, Any]) -> Any:
        cls.validate_hparams(section)
        return cls.Hparams(**{k: v for k, v in section.items() if k != "name"})

    # -- model -----------------------------------------------------------------------------
    @classmethod
    def build_model(cls, config: dict[str, Any], scenario: "Scenario", audio_dim: int) -> nn.Module:
        """The network this method trains. Default: the ATLAS network of the config's model section."""
        from clavs.models.build import build_atlas_net

        return build_atlas_net(config, scenario, audio_dim)

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        return self.model.named_parameter_groups()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser of the current task updates (also sets requires_grad)."""
        groups = self.parameter_groups()
        unknown = [g for g in self.trains if g not in groups]
        if unknown:
            raise ValueError(f"method '{self.name}' trains unknown parameter groups {unknown}; model has {sorted(groups)}")
        chosen = {id(p) for g in self.trains for _, p in groups[g]}
        params = []
        for p in self.model.parameters():
            p.requires_grad_(id(p) in chosen)
            if id(p) in chosen:
                params.append(p)
        return params

    # -- hooks -----------------------------------------------------------------------------
    def begin_task(self, task: "Task") -> None:
        self.task = task
        if self.scenario.has_class_head and self.model.num_classes < task.num_seen_classes:
            self.model.add_classes(task.num_seen_classes - self.model.num_classes)

    def loss(self, batch: dict[str, Any], out: dict[str, Any]) -> dict[str, torch.Tensor]:
        return task_loss(batch, out, self.scenario, self.task)

    def after_backward(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def end_task(self, task: "Task", loader: Iterable[dict[str, Any]]) -> None:
        pass

    @torch.no_grad()
    def predict(self, batch: dict[str, Any], task_id: int | None = None) -> dict[str, Any]:
        out = self.model(batch["frames"], batch["audio"])
        if task_id is not None and out.get("class_logits") is not None:
            out["class_logits"] = restrict_to_task(out["class_logits"], self.scenario.tasks[task_id])
        return out

    def selection_state(self) -> Any:
        """Called when validation picks a new best epoch: the per-task state to restore with it (e.g.
        a path integral accumulated so far), so that end_task sees state consistent with the weights."""
        return None

    def restore_selection_state(self, state: Any) -> None:
        pass

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """All continual-learning state beyond the model's weights (anchors, importances, ...)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# -- losses shared by methods ----------------------------------------------------------------

def valid_frames(batch: dict[str, Any]) -> torch.Tensor:
    """Boolean [B*T] of the frames that carry ground truth."""
    return batch["mask_valid"].reshape(-1)


def labelled_frames(batch: dict[str, Any], out: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask logits and ground-truth masks [K,1,H,W] of the K frames that carry ground truth."""
    keep = valid_frames(batch)
    return out["mask_logits"][keep], batch["masks"].flatten(0, 1)[keep]


def clip_class_logits(class_logits: torch.Tensor, clips: int) -> torch.Tensor:
    """[B*T, C] frame logits -> [B, C]: one class prediction per clip (the mean over its frames)."""
    return class_logits.reshape(clips, -1, class_logits.shape[-1]).mean(1)


def segmentation_loss(batch: dict[str, Any], out: dict[str, Any]) -> dict[str, torch.Tensor]:
    """BCE + soft Dice on the frames with ground truth (the foreground/background imbalance is heavy)."""
    logits, target = labelled_frames(batch, out)
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    tgt = target.flatten(1)
    dice = 1 - (2 * (prob * tgt).sum(1) + 1) / (prob.sum(1) + tgt.sum(1) + 1)
    return {"bce": bce, "dice": dice.mean()}


def restrict_to_task(class_logits: torch.Tensor, task: "Task") -> torch.Tensor:
    """TIL: only the classes of the given task can be predicted."""
    allowed = torch.zeros(class_logits.shape[-1], dtype=torch.bool, device=class_logits.device)
    idx = [i for i in task.class_indices if i < class_logits.shape[-1]]
    allowed[idx] = True
    return class_logits.masked_fill(~allowed, float("-inf"))


def classification_loss(batch: dict[str, Any], out: dict[str, Any], scenario: "Scenario", task: "Task") -> torch.Tensor | None:
    """Cross-entropy on the clip's class over the classes seen so far (TIL: the task's classes)."""
    logits = out.get("class_logits")
    if logits is None or not scenario.has_class_head:
        return None
    target = batch["class_index"]  # [B], model class index; -1 = unknown
    logits = clip_class_logits(logits, target.shape[0])
    if task is not None and task.task_id_visible:
        logits = restrict_to_task(logits, task)
    keep = target >= 0
    if not bool(keep.any()):
        return None
    return F.cross_entropy(logits[keep].float(), target[keep])


def task_loss(batch: dict[str, Any], out: dict[str, Any], scenario: "Scenario", task: "Task | None") -> dict[str, torch.Tensor]:
    terms = segmentation_loss(batch, out)
    ce = classification_loss(batch, out, scenario, task)
    if ce is not None:
        terms["ce"] = ce
    return terms
