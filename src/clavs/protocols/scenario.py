"""The `Task` and `Scenario` data structures every protocol builder returns.

Task indices (`train`, `val`, `test`) are positions in the record lists given to the builder, in
the order given; the datasets read the same lists in the same order, so a task's subset of a split
is `dataset.subset(task.train)` (or `Subset(dataset, task.train)`).

Model class index = position of a category in `Scenario.class_order`: the classes of task 0 get
0..B-1, those of task 1 the next I indices, and so on. `label_to_class_index[label]` maps an S4
label (index in S4_CATEGORIES) to it, `class_index_to_label[c]` back.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from clavs.data.categories import CATEGORY_INDEX, S4_CATEGORIES
from clavs.data.records import VideoRecord

PROTOCOLS = ("til", "cil", "dil", "tfcl")
PROTOCOL_NAMES = {"til": "Task-Incremental", "cil": "Class-Incremental", "dil": "Domain-Incremental",
                  "tfcl": "Task-Free"}


@dataclass
class Task:
    """One task of a scenario.

    id:               position in the stream (0-based).
    name:             short human label (its classes, domain or stream group).
    classes:          category names introduced by this task (empty for TF-CL).
    class_indices:    their model class indices (positions in the class order).
    train/val/test:   indices into the train/val/test record lists given to the builder.
    task_id_visible:  the task id may be used at test time (TIL only).
    label_space:      model class indices the classifier may predict after this task:
                      TIL = this task's classes, CIL = every class seen so far, DIL/TF-CL = [].
    num_seen_classes: size of the class head after this task (0 without a class head).
    domain:           DIL `domains` variant: the domain value of this task, else None.
    meta:             protocol details (TF-CL: groups, blurred-in videos, stream positions).
    """

    id: int
    name: str
    classes: list[str]
    class_indices: list[int]
    train: list[int]
    val: list[int]
    test: list[int]
    task_id_visible: bool
    label_space: list[int]
    num_seen_classes: int
    domain: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scenario:
    """An ordered list of tasks plus everything needed to interpret them."""

    protocol: str
    tasks: list[Task]
    class_order: list[str]
    has_class_head: bool
    dataset: str
    split: str
    seed: int
    variant: str | None = None
    anytime_inference: bool = False
    warnings: list[str] = field(default_factory=list)
    record_fingerprints: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    # ---- class indices -------------------------------------------------------------------------
    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def num_classes(self) -> int:
        """Classes in the class order (the class head's final size for TIL/CIL)."""
        return len(self.class_order)

    def class_index(self, category: str) -> int:
        """Model class index of a category name."""
        try:
            return self.class_order.index(category)
        except ValueError:
            raise KeyError(f"category {category!r} is not in this scenario's class order "
                           f"({len(self.class_order)} classes)") from None

    @property
    def label_to_class_index(self) -> list[int]:
        """For every S4 label 0..22, its model class index (-1 if not in the class order)."""
        pos = {c: i for i, c in enumerate(self.class_order)}
        return [pos.get(c, -1) for c in S4_CATEGORIES]

    @property
    def class_index_to_label(self) -> list[int]:
        """For every model class index, the S4 label (index in S4_CATEGORIES)."""
        return [CATEGORY_INDEX[c] for c in self.class_order]

    def class_indices_of(self, records: Sequence[VideoRecord]) -> list[int]:
        """Model class index of each record (-1 where the record has no category, as in MS3)."""
        table = self.label_to_class_index
        return [table[r.label] if r.label >= 0 else -1 for r in records]

    # ---- evaluation schedule -------------------------------------------------------------------
    def tasks_to_evaluate(self, after_task: int | None) -> list[int]:
        """Task ids whose test sets are scored after training `after_task`.

        None (before the first task): every task, giving the initial scores b[j]. After task t:
        every seen task 0..t and the next unseen task t+1 when there is one (forward transfer).
        """
        if after_task is None:
            return list(range(self.num_tasks))
        if not 0 <= after_task < self.num_tasks:
            raise ValueError(f"after_task={after_task} is outside 0..{self.num_tasks - 1}")
        return list(range(min(after_task + 2, self.num_tasks)))

    # ---- presentation and storage --------------------------------------------------------------
    def describe(self) -> str:
        """A readable summary: one header line, then one row per task."""
        head = (f"{PROTOCOL_NAMES[self.protocol]} ({self.protocol}) on {self.dataset.upper()}"
                f"{' / ' + self.variant if self.variant else ''}: split {self.split}, "
                f"{self.num_tasks} tasks, seed {self.seed}, "
                f"{'class head' if self.has_class_head else 'binary masks only'}"
                f"{', task id at test' if self.protocol == 'til' else ''}"
                f"{', anytime inference' if self.anytime_inference else ''}")
        lines = [head]
        if self.has_class_head or self.protocol == "dil" and not self.variant:
            lines.append("class order: " + ", ".join(f"{i}:{c}" for i, c in enumerate(self.class_order)))
        for key, value in self.details.items():
            lines.append(f"{key}: {value}")
        name_w = min(max([len("task")] + [len(t.name) for t in self.tasks]), 60)
        lines.append(f"{'id':>3}  {'task':<{name_w}}  {'train':>6} {'val':>5} {'test':>5}  label space")
        for t in self.tasks:
            space = _ranges(t.label_space) if t.label_space else "-"
            name = t.name if len(t.name) <= name_w else t.name[: name_w - 3] + "..."
            lines.append(f"{t.id:>3}  {name:<{name_w}}  {len(t.train):>6} {len(t.val):>5} {len(t.test):>5}  {space}")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (for the run directory); `Scenario.from_dict` reverses it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scenario":
        data = dict(data)
        data["tasks"] = [Task(**t) for t in data["tasks"]]
        return cls(**data)

    def check_records(self, train: Sequence[VideoRecord], val: Sequence[VideoRecord],
                      test: Sequence[VideoRecord]) -> None:
        """Raise if these record lists are not the ones the scenario was built from (e.g. on resume)."""
        for split, recs in (("train", train), ("val", val), ("test", test)):
            got = fingerprint(recs)
            want = self.record_fingerprints.get(split)
            if want is not None and got != want:
                raise ValueError(f"the {split} records ({len(recs)} videos) differ from those this scenario "
                                 f"was built from (fingerprint {got} != {want})")


def fingerprint(records: Sequence[VideoRecord]) -> str:
    """Short hash of the video names in order: identifies the record list a scenario indexes."""
    h = hashlib.sha1()
    for r in records:
        h.update(r.name.encode())
        h.update(b"\n")
    return f"{len(records)}:{h.hexdigest()[:12]}"


def _ranges(indices: Sequence[int]) -> str:
    """[0,1,2,5] -> '0-2,5'."""
    out: list[str] = []
    start = prev = indices[0]
    for i in list(indices[1:]) + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(out)
