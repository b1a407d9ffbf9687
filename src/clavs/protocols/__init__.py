"""The four CL-AVS protocols: split strings, class orders and scenario builders.

    scenario = build_scenario("cil", train_records, val_records, test_records, split="11-2", seed=0)
    print(scenario.describe())
    for task in scenario.tasks:
        train_set = train_dataset.subset(task.train)       # indices into train_records
        ...
        for j in scenario.tasks_to_evaluate(task.id):      # seen tasks + the next one
            evaluate(test_dataset.subset(scenario.tasks[j].test))

docs/protocols.md states how each protocol is read.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from clavs.data.records import VideoRecord
from clavs.protocols.features import compute_video_features
from clavs.protocols.incremental import build_class_incremental, build_dil_domains
from clavs.protocols.scenario import PROTOCOLS, Scenario, Task, fingerprint
from clavs.protocols.splits import make_class_order, parse_split, proportional_sizes, split_weights
from clavs.protocols.taskfree import build_tfcl
from clavs.protocols.validation import SPLIT_ARGS, check_split_records

__all__ = [
    "PROTOCOLS", "Scenario", "Task", "build_scenario", "compute_video_features", "fingerprint",
    "make_class_order", "normalize_protocol", "parse_split", "proportional_sizes", "split_weights",
]

_ALIASES = {"til": "til", "taskil": "til", "taskincremental": "til",
            "cil": "cil", "classil": "cil", "classincremental": "cil",
            "dil": "dil", "domainil": "dil", "domainincremental": "dil",
            "tfcl": "tfcl", "taskfree": "tfcl", "taskfreecl": "tfcl"}


def normalize_protocol(protocol: str) -> str:
    """'TF-CL', 'tfcl', 'task-free' -> 'tfcl'; unknown names raise ValueError."""
    key = "".join(ch for ch in str(protocol).lower() if ch.isalnum())
    if key not in _ALIASES:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return _ALIASES[key]


def build_scenario(protocol: str, train_records: Sequence[VideoRecord], val_records: Sequence[VideoRecord],
                   test_records: Sequence[VideoRecord], *, split: str = "11-2", seed: int = 0,
                   class_order: str | Sequence[str] = "random", variant: str | None = None,
                   num_tasks: int | None = None, blur: float = 0.1,
                   domain_order: str | Sequence[str] = "random", grouping: str = "auto",
                   video_features: Mapping[str, np.ndarray] | None = None,
                   num_groups: int | None = None) -> Scenario:
    """Build the task sequence of one protocol. Deterministic in its arguments.

    protocol:      'til' | 'cil' | 'dil' (S4 records) or 'tfcl' (MS3 records).
    *_records:     the VideoRecords of each split, in the order the datasets read them; tasks hold
                   indices into these lists.
    split:         'B-I' (S4: classes; TF-CL: stream shares, '31-5' in the paper).
    seed:          the run seed; drives the 'random' class order, domain order, TF-CL grouping and blur.
    class_order:   'random' | 'alphabetical' | list of category names.
    variant:       DIL only: None (category groups, like TIL/CIL) or 'domains' (one task per domain).
    num_tasks:     S4: force a task count (proportional shares of classes); TF-CL: the stream length
                   in tasks (the paper: 50); None derives it from the split.
    blur:          TF-CL: share of each task's train videos sent to its neighbours (0..0.5).
    domain_order:  DIL 'domains': 'random' (seeded) | 'sorted' | list of domain values.
    grouping:      TF-CL: 'auto' (sources when every video has them, else features) | 'sources' | 'features'.
    video_features: TF-CL 'features' grouping: {video name: vector} for every video of every split
                   (see `compute_video_features`).
    num_groups:    TF-CL 'features' grouping: number of k-means groups (default 23).
    """
    proto = normalize_protocol(protocol)
    recs = [check_split_records(r, split_name, arg)
            for r, (split_name, arg) in zip((train_records, val_records, test_records), SPLIT_ARGS)]
    train, val, test = recs
    if variant is not None and not (proto == "dil" and variant == "domains"):
        raise ValueError(f"unknown variant {variant!r} for protocol {proto!r}; only dil has a variant ('domains')")
    if proto in ("til", "cil", "dil"):
        if video_features is not None:
            raise ValueError(f"video_features only applies to protocol 'tfcl', not {proto!r}")
        if proto == "dil" and variant == "domains":
            return build_dil_domains(train, val, test, split=split, seed=seed, class_order=class_order,
                                     domain_order=domain_order)
        return build_class_incremental(proto, train, val, test, split=split, seed=seed,
                                       class_order=class_order, num_tasks=num_tasks)
    return build_tfcl(train, val, test, split=split, seed=seed, class_order=class_order, num_tasks=num_tasks,
                      blur=blur, grouping=grouping, video_features=video_features, num_groups=num_groups)
