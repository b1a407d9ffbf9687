"""TIL, CIL and DIL on S4: tasks are groups of categories (or, for DIL `domains`, domain values)."""

from __future__ import annotations

from typing import Sequence

from clavs.data.categories import CATEGORY_INDEX, S4_CATEGORIES
from clavs.data.records import VideoRecord
from clavs.protocols.scenario import Scenario, Task, fingerprint
from clavs.protocols.splits import make_class_order, parse_split, rng_for
from clavs.protocols.validation import check_s4_records


def s4_class_order(class_order: str | Sequence[str], seed: int, train: Sequence[VideoRecord]) -> list[str]:
    """The class order over the categories present in the train records (all 23 for real S4).

    The universe is taken in S4_CATEGORIES order before a 'random' permutation, so the order only
    depends on the seed and on which categories exist, not on record order.
    """
    present = {r.category for r in train}
    universe = [c for c in S4_CATEGORIES if c in present]
    if not isinstance(class_order, str):
        names = list(class_order)
        unknown = [c for c in names if c not in CATEGORY_INDEX]
        if unknown:
            raise ValueError(f"class_order names unknown categories {unknown}; S4 categories are "
                             f"{list(S4_CATEGORIES)}")
        absent = [c for c in names if c not in present]
        if absent:
            raise ValueError(f"class_order names {absent}, which have no videos in train_records")
    return make_class_order(class_order, seed, universe)


def build_class_incremental(protocol: str, train: list[VideoRecord], val: list[VideoRecord],
                            test: list[VideoRecord], *, split: str, seed: int,
                            class_order: str | Sequence[str], num_tasks: int | None) -> Scenario:
    """TIL / CIL / DIL (category groups): task t holds the videos of its classes in each split."""
    for recs, arg in ((train, "train_records"), (val, "val_records"), (test, "test_records")):
        check_s4_records(recs, arg)
    if not train:
        raise ValueError("train_records is empty")
    order = s4_class_order(class_order, seed, train)
    _check_other_splits_known(order, val, test)
    sizes = parse_split(split, len(order), num_tasks)
    warnings: list[str] = []
    if not val:
        warnings.append("val_records is empty: no validation data for model selection")
    tasks: list[Task] = []
    start = 0
    for t, size in enumerate(sizes):
        classes = order[start:start + size]
        indices = list(range(start, start + size))
        start += size
        members = set(classes)
        tr = [i for i, r in enumerate(train) if r.category in members]
        va = [i for i, r in enumerate(val) if r.category in members]
        te = [i for i, r in enumerate(test) if r.category in members]
        _check_class_coverage(classes, t, test, "test_records", error=True)
        if val:
            warnings.extend(_check_class_coverage(classes, t, val, "val_records", error=False))
        if protocol == "til":
            space, seen = indices, start
        elif protocol == "cil":
            space, seen = list(range(start)), start
        else:  # dil: fixed binary label space
            space, seen = [], 0
        tasks.append(Task(id=t, name=", ".join(classes), classes=classes, class_indices=indices,
                          train=tr, val=va, test=te, task_id_visible=protocol == "til",
                          label_space=space, num_seen_classes=seen))
    return Scenario(protocol=protocol, tasks=tasks, class_order=order, has_class_head=protocol != "dil",
                    dataset="s4", split=split, seed=seed, variant=None, warnings=warnings,
                    record_fingerprints=_fingerprints(train, val, test),
                    details={"task sizes (classes)": "-".join(map(str, sizes))})


def build_dil_domains(train: list[VideoRecord], val: list[VideoRecord], test: list[VideoRecord], *,
                      split: str, seed: int, class_order: str | Sequence[str],
                      domain_order: str | Sequence[str]) -> Scenario:
    """DIL `domains`: one task per value of the `domain` column; binary masks only.

    Task order: 'random' = a permutation of the sorted domain values drawn from the seed (its own
    stream, independent of the class order); 'sorted' = sorted values; or an explicit list.
    """
    for recs, arg in ((train, "train_records"), (val, "val_records"), (test, "test_records")):
        check_s4_records(recs, arg)
        missing = [r.name for r in recs if r.domain is None or r.domain == ""]
        if missing and len(missing) == len(recs):
            raise ValueError(f"DIL variant 'domains' needs a 'domain' column: none of the {len(recs)} "
                             f"{arg} has a domain (real AVSBench has no such column; SynthAVS writes one)")
        if missing:
            raise ValueError(f"DIL variant 'domains': {len(missing)} of {len(recs)} {arg} have no domain, "
                             f"e.g. {missing[:5]}")
    if not train:
        raise ValueError("train_records is empty")
    domains = sorted({r.domain for r in train})
    order = _domain_order(domain_order, seed, domains)
    unseen = sorted({r.domain for r in val + test} - set(domains))
    if unseen:
        raise ValueError(f"DIL variant 'domains': domain(s) {unseen} occur in val/test records but not "
                         f"in train_records, so no task can hold them")
    classes_all = s4_class_order(class_order, seed, train)
    warnings: list[str] = []
    if not val:
        warnings.append("val_records is empty: no validation data for model selection")
    tasks: list[Task] = []
    for t, dom in enumerate(order):
        tr = [i for i, r in enumerate(train) if r.domain == dom]
        va = [i for i, r in enumerate(val) if r.domain == dom]
        te = [i for i, r in enumerate(test) if r.domain == dom]
        if not te:
            raise ValueError(f"DIL variant 'domains': domain {dom!r} (task {t}) has no videos in "
                             f"test_records, so it cannot be evaluated")
        if val and not va:
            warnings.append(f"domain {dom!r} (task {t}) has no videos in val_records")
        present = {train[i].category for i in tr}
        classes = [c for c in classes_all if c in present]
        tasks.append(Task(id=t, name=dom, classes=classes, class_indices=[classes_all.index(c) for c in classes],
                          train=tr, val=va, test=te, task_id_visible=False, label_space=[],
                          num_seen_classes=0, domain=dom))
    return Scenario(protocol="dil", tasks=tasks, class_order=classes_all, has_class_head=False, dataset="s4",
                    split=split, seed=seed, variant="domains", warnings=warnings,
                    record_fingerprints=_fingerprints(train, val, test),
                    details={"domain order": ", ".join(order), "split": "ignored (one task per domain)"})


def _domain_order(domain_order: str | Sequence[str], seed: int, domains: list[str]) -> list[str]:
    if isinstance(domain_order, str):
        if domain_order == "sorted":
            return list(domains)
        if domain_order == "random":
            return [domains[i] for i in rng_for(seed, "domain_order").permutation(len(domains))]
        raise ValueError(f"domain_order {domain_order!r} is not 'random', 'sorted' or a list of domains")
    names = list(domain_order)
    unknown = [d for d in names if d not in domains]
    missing = [d for d in domains if d not in names]
    if unknown or missing or len(set(names)) != len(names):
        raise ValueError(f"domain_order must list each train domain once; unknown {unknown}, missing "
                         f"{missing}, domains are {domains}")
    return names


def _check_other_splits_known(order: list[str], val: list[VideoRecord], test: list[VideoRecord]) -> None:
    known = set(order)
    for recs, arg in ((val, "val_records"), (test, "test_records")):
        extra = sorted({r.category for r in recs} - known)
        if extra:
            raise ValueError(f"{arg} holds categories with no videos in train_records: {extra}")


def _check_class_coverage(classes: list[str], task_id: int, records: list[VideoRecord], arg: str,
                          *, error: bool) -> list[str]:
    present = {r.category for r in records}
    missing = [c for c in classes if c not in present]
    if not missing:
        return []
    msg = f"class(es) {missing} of task {task_id} have no videos in {arg}"
    if error:
        raise ValueError(msg + "; every class needs test videos to be evaluated")
    return [msg]


def _fingerprints(train: list[VideoRecord], val: list[VideoRecord], test: list[VideoRecord]) -> dict[str, str]:
    return {"train": fingerprint(train), "val": fingerprint(val), "test": fingerprint(test)}
