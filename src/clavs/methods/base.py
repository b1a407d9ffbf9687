"""The method interface: hooks on the one training loop (engine/loop.py), a registry, declared
hyperparameters. A new method is one file in this folder: subclass `Method`, declare `Hparams`,
override the hooks it needs, decorate with `@register`. docs/methods.md is the long form.

Hook order (the engine calls them; tests/test_method_api.py pins it):

    __init__(model, hparams, scenario, ctx)        register_module(...) for the method's own modules
    per task (visible boundaries: TIL, CIL, DIL, and TF-CL with protocol.boundaries=visible):
        begin_task(task)                           grow heads, snapshot weights, reset path integrals
        param_groups()                             the optimiser's groups (trained_groups(), learning rates)
        every step:
            batch = augment_batch(batch)           add samples (replayed, generated, grafted)
            terms = training_step(batch, model)    forward(s) through `model`, named loss terms; the
                                                   engine sums them, under autocast. An empty dict:
                                                   nothing to learn from this batch; the engine skips
                                                   backward, after_backward, the optimiser step and
                                                   after_step (the step still counts; every process
                                                   must return {} at the same steps)
            backward of the sum
            after_backward()                       raw gradients (importance, gradient reweighting)
            gradient clipping, optimiser step
            after_step()                           parameters updated (path integrals)
        after every epoch, model selection on the task's validation clips:
            selection_state() when an epoch is the best so far; restore_selection_state(s) at the end
        end_task(task, data)                       model in eval mode, `data` = the task's training
                                                   clips as prepared batches; default: consolidate(data)
    task-free stream (TF-CL, hidden boundaries): begin_task(None) once, one optimiser for the whole
        stream, the same steps, and consolidate(data) every `consolidation_interval()` steps with the
        clips seen since the previous consolidation; end_task is never called. The one boundary a
        method may be told: if told_first_task_end(), consolidate(data) also runs once when the
        stream's first task ends, before it is scored (RanPAC and FeCAM: their first session is by
        definition the first task).
    predict(batch) -> ModelOutput                  evaluation, no gradients
    state_dict() / load_state_dict(state)          everything beyond the network's weights, to resume exactly

Under DDP, `data` holds every clip on every process; a statistics pass over `ctx.shard(data)` (this
process's share) must add its sums up with `ctx.all_reduce_sum` (docs/distributed.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from clavs.batch import Batch, ModelOutput, clip_class_logits, labelled_frames
from clavs.models.architectures.base import METHOD_MODULES
from clavs.protocols.scenario import PROTOCOLS

if TYPE_CHECKING:  # pragma: no cover
    from clavs.methods.context import MethodContext
    from clavs.protocols import Scenario, Task

_REGISTRY: dict[str, type["Method"]] = {}

# The paper's method families (Table 1), recorded in every run and shown in tables.
FAMILIES = {
    "baseline": "lower bound",
    "cl": "(1) exemplar-free CL adapted to AVS",
    "avs": "(2) AVS model trained continually",
    "css": "(3) continual semantic segmentation",
    "replay": "(4) replay CL-AVS",
    "atlas": "ATLAS (ours)",
}


def register(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make a method available to `clavs run --method NAME`."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__qualname__} needs a class attribute `name`")
    if cls.family not in FAMILIES:
        raise TypeError(f"{cls.__qualname__}.family={cls.family!r} is not one of {', '.join(FAMILIES)}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name '{cls.name}' registered twice ({_REGISTRY[cls.name].__qualname__})")
    _REGISTRY[cls.name] = cls
    return cls


def get_method_class(name: str) -> type["Method"]:
    _import_all_methods()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method '{name}'; available: {', '.join(available_methods())}") from None


def available_methods() -> list[str]:
    _import_all_methods()
    return sorted(n for n in _REGISTRY if not n.startswith("_"))


def _import_all_methods() -> None:
    import importlib
    import pkgutil

    import clavs.methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("base", "context") and not info.ispkg:
            importlib.import_module(f"clavs.methods.{info.name}")


@dataclass
class NoHparams:
    """A method without hyperparameters of its own."""


class Method:
    """Base class: plain supervised training of the parameter groups in `trains` (BCE + Dice on the
    labelled frames, cross-entropy on the clip's class where the protocol has classes)."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = "cl"
    protocols: ClassVar[tuple[str, ...]] = PROTOCOLS
    # Protocols the method declines, with the reason (shown by `clavs methods` and in the error).
    declined: ClassVar[dict[str, str]] = {}
    uses_exemplars: ClassVar[bool] = False
    # The network it trains: a key of clavs.models.build.NETWORKS.
    network: ClassVar[str] = "plain"
    # Parameter groups (the network's named_parameter_groups, plus modules the method registers)
    # that the optimiser updates; trained_groups() may change them per task.
    trains: ClassVar[tuple[str, ...]] = ()
    Hparams: ClassVar[type] = NoHparams

    def __init__(self, model: nn.Module, hparams: Any, scenario: "Scenario", ctx: "MethodContext"):
        self.model = model
        self.hp = hparams
        self.scenario = scenario
        self.ctx = ctx
        self.task: "Task | None" = None
        self._own_groups: dict[str, nn.Module] = {}

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

    @classmethod
    def check_protocol(cls, protocol: str) -> None:
        """Raise ValueError naming the reason when the method does not run under `protocol`."""
        if protocol in cls.declined:
            raise ValueError(f"method '{cls.name}' declines protocol '{protocol}': {cls.declined[protocol]}")
        if protocol not in cls.protocols:
            raise ValueError(f"method '{cls.name}' does not support protocol '{protocol}' "
                             f"(supports {', '.join(p for p in cls.protocols if p not in cls.declined)})")

    @classmethod
    def info(cls) -> dict[str, Any]:
        """What every run records about its method (profile.json) and tables show."""
        return {"name": cls.name, "family": cls.family, "uses_exemplars": cls.uses_exemplars,
                "network": cls.network}

    # -- the network and what trains ------------------------------------------------------------
    @classmethod
    def build_model(cls, config: dict[str, Any], scenario: "Scenario", audio_dim: int) -> nn.Module:
        """The network this method trains (default: `network` from the registry of models/build.py)."""
        from clavs.models.build import build_network

        return build_network(cls.network, config, scenario, audio_dim)

    def register_module(self, group: str, module: nn.Module) -> nn.Module:
        """Attach a module of the method's own (prompts, adapters, a generator) to the network, as the
        parameter group `group`: it moves with the network, is saved in its checkpoints, is covered by
        DDP, and trains when `group` is in trained_groups(). Register in __init__ or begin_task."""
        if group in self.model.named_parameter_groups() or group in self._own_groups:
            raise ValueError(f"parameter group '{group}' already exists")
        holder = getattr(self.model, METHOD_MODULES, None)
        if holder is None:
            holder = nn.ModuleDict()
            self.model.add_module(METHOD_MODULES, holder)
        module = module.to(self.ctx.device)
        holder[group] = module
        self._own_groups[group] = module
        return module

    def parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        groups = dict(self.model.named_parameter_groups())
        for group, module in self._own_groups.items():
            groups[group] = [(f"{METHOD_MODULES}.{group}.{n}", p) for n, p in module.named_parameters()]
        return groups

    def trained_groups(self) -> tuple[str, ...]:
        """The groups trained in the current task (default: `trains`)."""
        return self.trains

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser updates (sets requires_grad on every parameter accordingly)."""
        groups = self.parameter_groups()
        wanted = self.trained_groups()
        unknown = [g for g in wanted if g not in groups]
        if unknown:
            raise ValueError(f"method '{self.name}' trains unknown parameter groups {unknown}; model has {sorted(groups)}")
        chosen = {id(p) for g in wanted for _, p in groups[g]}
        params = []
        for p in self.model.parameters():
            p.requires_grad_(id(p) in chosen)
            if id(p) in chosen:
                params.append(p)
        return params

    def anchored_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The parameters a regularisation method protects (default: those of every group in `trains`)."""
        groups = self.parameter_groups()
        return [named for g in self.trains for named in groups[g]]

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """The optimiser's parameter groups (torch.optim format, plus a "name"). Override to give a
        group its own learning rate; the base puts every trainable parameter in one group."""
        return [{"name": "trained", "params": self.trainable_parameters(), "lr": lr, "weight_decay": weight_decay}]

    # -- hooks -----------------------------------------------------------------------------
    def begin_task(self, task: "Task | None") -> None:
        """task is None at the start of a task-free stream (no boundaries are revealed)."""
        self.task = task
        if task is None:
            return
        if self.scenario.has_class_head and self.model.num_classes < task.num_seen_classes:
            self.model.add_classes(task.num_seen_classes - self.model.num_classes)
        while self.model.num_task_heads and self.model.num_task_heads <= task.id:
            self.model.add_task_head()

    def augment_batch(self, batch: Batch) -> Batch:
        """Add samples to a training batch before the forward (replay, generated or grafted clips)."""
        return batch

    def training_step(self, batch: Batch, model: nn.Module) -> dict[str, torch.Tensor]:
        """Forward(s) through `model` (the engine's wrapped network) and named loss terms ({}: nothing to
        learn from this batch, e.g. a method that stopped learning mid-stream; the engine skips the update)."""
        return self.task_loss(batch, model(batch))

    def task_loss(self, batch: Batch, out: ModelOutput) -> dict[str, torch.Tensor]:
        """BCE + Dice on the labelled frames; cross-entropy on the clip class where there are classes."""
        terms = segmentation_loss(batch, out)
        ce = classification_loss(batch, out, self.scenario)
        if ce is not None:
            terms["ce"] = ce
        return terms

    def after_backward(self) -> None:
        """Gradients of the summed terms are present and not yet clipped."""

    def after_step(self) -> None:
        """The optimiser has updated the parameters."""

    def selection_state(self) -> Any:
        """Called when validation picks a new best epoch: the per-task state to restore with it (e.g.
        a path integral accumulated so far), so that end_task sees state consistent with the weights."""
        return None

    def restore_selection_state(self, state: Any) -> None:
        pass

    def end_task(self, task: "Task", data: Iterable[Batch]) -> None:
        """After model selection (model in eval mode); `data` yields the task's training clips."""
        self.consolidate(data)

    def consolidate(self, data: Iterable[Batch]) -> None:
        """Protect what was learnt (importances, anchors, a teacher). Called by end_task, and in a
        task-free stream every consolidation_interval() steps with the clips seen since the last call."""

    def consolidation_interval(self) -> int | None:
        """Training steps between consolidations in a task-free stream (None: never). Methods that
        consolidate declare a hyperparameter `consolidate_every`."""
        value = getattr(self.hp, "consolidate_every", None)
        return int(value) if value else None

    def told_first_task_end(self) -> bool:
        """Task-free stream: whether the engine tells this method where the stream's first task ends
        (by a consolidate call then). False for every method but those whose algorithm is defined by
        its first task; no method is told any later boundary."""
        return False

    @torch.no_grad()
    def predict(self, batch: Batch) -> ModelOutput:
        out = self.model(batch)
        if out.class_logits is not None and bool((batch.task_id >= 0).any()):
            out.class_logits = restrict_to_tasks(out.class_logits, batch, self.scenario)
        return out

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """All continual-learning state beyond the network's weights (anchors, importances, ...)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# -- losses shared by methods ----------------------------------------------------------------

def segmentation_loss(batch: Batch, out: ModelOutput) -> dict[str, torch.Tensor]:
    """BCE + soft Dice on the frames with ground truth (the foreground/background imbalance is heavy)."""
    logits, target = labelled_frames(batch, out)
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    tgt = target.flatten(1)
    dice = 1 - (2 * (prob * tgt).sum(1) + 1) / (prob.sum(1) + tgt.sum(1) + 1)
    return {"bce": bce, "dice": dice.mean()}


def task_class_mask(scenario: "Scenario", num_classes: int, device: torch.device) -> torch.Tensor:
    """[tasks, C] bool: which class outputs each task may predict (its own classes)."""
    allowed = torch.zeros(len(scenario.tasks), num_classes, dtype=torch.bool, device=device)
    for task in scenario.tasks:
        idx = [i for i in task.class_indices if i < num_classes]
        allowed[task.id, idx] = True
    return allowed


def restrict_to_tasks(class_logits: torch.Tensor, batch: Batch, scenario: "Scenario") -> torch.Tensor:
    """TIL: each clip (rows of [B, C] or of [B*t, C]) may only predict the classes of its task id;
    rows with task id -1 are left as they are."""
    per_row = class_logits.shape[0] // batch.size
    tids = batch.task_id.repeat_interleave(per_row)
    allowed = task_class_mask(scenario, class_logits.shape[-1], class_logits.device)[tids.clamp(min=0)]
    allowed[tids < 0] = True
    return class_logits.masked_fill(~allowed, float("-inf"))


def classification_loss(batch: Batch, out: ModelOutput, scenario: "Scenario", *,
                        own_task_only: bool = False) -> torch.Tensor | None:
    """Cross-entropy on the clip's class over the classes seen so far (TIL, or `own_task_only` as
    L2P's train_mask: over the classes of the clip's task)."""
    logits = out.class_logits
    if logits is None or not scenario.has_class_head:
        return None
    target = batch.class_index  # [B], model class index; -1 = unknown
    logits = clip_class_logits(logits, batch.size)
    if scenario.protocol == "til" or own_task_only:
        logits = restrict_to_tasks(logits, batch, scenario)
    keep = target >= 0
    if not bool(keep.any()):
        return None
    return F.cross_entropy(logits[keep].float(), target[keep])
