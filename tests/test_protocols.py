"""Protocols: split arithmetic, class orders, the four scenario builders, TF-CL stream and blur."""

from __future__ import annotations

import itertools
import json
import math
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import numpy as np
import pytest

from clavs.data.categories import CATEGORY_INDEX, S4_CATEGORIES
from clavs.data.records import VideoRecord
from clavs.protocols import (Scenario, build_scenario, compute_video_features, make_class_order,
                             normalize_protocol, parse_split, proportional_sizes)
from clavs.protocols.taskfree import assign_places, source_keys

N_CAT = len(S4_CATEGORIES)


# ---- record factories -------------------------------------------------------------------------------
def s4_records(split: str, per_class: int, domains: int = 0, skip: tuple[str, ...] = ()) -> list[VideoRecord]:
    out = []
    for c in S4_CATEGORIES:
        if c in skip:
            continue
        for k in range(per_class):
            out.append(VideoRecord(name=f"{c}_{split}_{k}", split=split, category=c, label=CATEGORY_INDEX[c],
                                   start=0.0, domain=f"dom{k % domains}" if domains else None))
    return out


def ms3_records(split: str, n: int, seed: int, with_sources: bool = True) -> list[VideoRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        srcs = tuple(rng.choice(S4_CATEGORIES, size=int(rng.integers(2, 4)), replace=False))
        out.append(VideoRecord(name=f"{split}_{k:04d}", split=split, sources=srcs if with_sources else ()))
    return out


def rename_split(records: list[VideoRecord], split: str) -> list[VideoRecord]:
    return [VideoRecord(name=r.name, split=split, category=r.category, label=r.label, start=r.start,
                        domain=r.domain, sources=r.sources) for r in records]


@pytest.fixture(scope="module")
def s4():
    return s4_records("train", 3, domains=3), s4_records("val", 1, domains=1), s4_records("test", 2, domains=2)


@pytest.fixture(scope="module")
def ms3():
    return ms3_records("train", 600, 1), ms3_records("val", 80, 2), ms3_records("test", 120, 3)


@pytest.fixture(scope="module")
def tfcl(ms3):
    return build_scenario("tfcl", *ms3, split="31-5", num_tasks=50, seed=7, blur=0.1)


# ---- split strings ---------------------------------------------------------------------------------
def test_11_2_on_23_classes_gives_7_tasks():
    assert parse_split("11-2", 23) == [11, 2, 2, 2, 2, 2, 2]
    assert parse_split(" 23-1 ", 23) == [23]
    assert parse_split("5-3", 23) == [5] + [3] * 6


def test_split_that_does_not_cover_the_classes_names_fitting_splits():
    with pytest.raises(ValueError, match=r"does not cover 23 classes exactly.*'8-3' or '11-3'.*num_tasks"):
        parse_split("10-3", 23)
    with pytest.raises(ValueError, match="only 23"):
        parse_split("31-5", 23)
    for bad in ("11", "a-b", "11-2-2", "0-2", "3-0"):
        with pytest.raises(ValueError, match="split"):
            parse_split(bad, 23)


def test_split_with_num_tasks_uses_proportional_shares():
    assert parse_split("11-2", 23, num_tasks=7) == [11, 2, 2, 2, 2, 2, 2]
    sizes = parse_split("10-3", 23, num_tasks=5)  # quotas 23*10/22, 23*3/22 ...
    assert sum(sizes) == 23 and len(sizes) == 5
    assert sizes == proportional_sizes(23, [10, 3, 3, 3, 3])
    with pytest.raises(ValueError, match="each task needs at least one"):
        parse_split("31-5", 23, num_tasks=50)


def _l1_optimum_brute_force(total: int, weights: list[int]) -> Fraction:
    """Minimum of sum |s_i - q_i| over all compositions of `total` into positive parts."""
    q = [Fraction(total * w, sum(weights)) for w in weights]
    best = None
    for cuts in itertools.combinations(range(1, total), len(weights) - 1):
        parts = [b - a for a, b in zip((0,) + cuts, cuts + (total,))]
        cost = sum(abs(p - qi) for p, qi in zip(parts, q))
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("total,weights", [(7, [5, 1, 1]), (4, [100, 1, 1, 1]), (12, [3, 2, 2, 2]),
                                           (9, [31, 5, 5, 5]), (10, [1, 1, 1]), (5, [2, 3])])
def test_proportional_sizes_minimises_distance_to_quotas(total, weights):
    sizes = proportional_sizes(total, weights)
    assert sum(sizes) == total and min(sizes) >= 1
    q = [Fraction(total * w, sum(weights)) for w in weights]
    assert sum(abs(s - qi) for s, qi in zip(sizes, q)) == _l1_optimum_brute_force(total, weights)


def test_proportional_sizes_exact_when_quotas_are_integers():
    assert proportional_sizes(276, [31] + [5] * 49) == [31] + [5] * 49
    assert proportional_sizes(552, [31] + [5] * 49) == [62] + [10] * 49
    sizes = proportional_sizes(600, [31] + [5] * 49)
    assert sizes == [67] + [11] * 43 + [10] * 6  # quotas 67.39 and 10.87: the 43 largest remainders
    with pytest.raises(ValueError, match="need at least 50 items"):
        proportional_sizes(49, [31] + [5] * 49)


# ---- class orders ----------------------------------------------------------------------------------
def test_random_class_order_is_seeded_and_deterministic():
    a = make_class_order("random", 3, S4_CATEGORIES)
    assert a == make_class_order("random", 3, S4_CATEGORIES)
    assert a == [S4_CATEGORIES[i] for i in np.random.default_rng(3).permutation(N_CAT)]
    assert sorted(a) == sorted(S4_CATEGORIES)
    orders = {tuple(make_class_order("random", s, S4_CATEGORIES)) for s in range(5)}
    assert len(orders) == 5
    # the global RNG is neither used nor disturbed
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    make_class_order("random", 3, S4_CATEGORIES)
    assert np.random.random() == before


def test_alphabetical_and_explicit_class_orders():
    assert make_class_order("alphabetical", 0, S4_CATEGORIES) == sorted(S4_CATEGORIES)
    explicit = list(reversed(S4_CATEGORIES))
    assert make_class_order(explicit, 0, S4_CATEGORIES) == explicit
    with pytest.raises(ValueError, match="unknown class.*'flute'"):
        make_class_order(explicit[:-1] + ["flute"], 0, S4_CATEGORIES)
    with pytest.raises(ValueError, match="more than once"):
        make_class_order(explicit[:-1] + [explicit[0]], 0, S4_CATEGORIES)
    with pytest.raises(ValueError, match="leaves out"):
        make_class_order(explicit[:-1], 0, S4_CATEGORIES)
    with pytest.raises(ValueError, match="class_order 'shuffled'"):
        make_class_order("shuffled", 0, S4_CATEGORIES)


# ---- TIL / CIL / DIL ---------------------------------------------------------------------------------
def test_cil_tasks_partition_classes_and_videos(s4):
    train, val, test = s4
    sc = build_scenario("cil", train, val, test, split="11-2", seed=0)
    assert sc.num_tasks == 7 and sc.has_class_head and sc.dataset == "s4"
    assert [len(t.classes) for t in sc.tasks] == [11, 2, 2, 2, 2, 2, 2]
    all_classes = [c for t in sc.tasks for c in t.classes]
    assert sorted(all_classes) == sorted(S4_CATEGORIES) and all_classes == sc.class_order
    for split_name, recs in (("train", train), ("val", val), ("test", test)):
        seen = sorted(i for t in sc.tasks for i in getattr(t, split_name))
        assert seen == list(range(len(recs)))  # each video in exactly one task
        for t in sc.tasks:  # brute force: the task holds exactly the videos of its classes
            want = [i for i, r in enumerate(recs) if r.category in t.classes]
            assert getattr(t, split_name) == want
    for t in sc.tasks:
        assert not t.task_id_visible
        assert t.label_space == list(range(t.num_seen_classes))
        assert t.class_indices == [sc.class_order.index(c) for c in t.classes]
    assert sc.tasks[0].class_indices == list(range(11))
    assert sc.tasks[-1].num_seen_classes == 23


def test_til_label_space_is_the_task_classes(s4):
    sc = build_scenario("TIL", *s4, seed=0)
    cil = build_scenario("cil", *s4, seed=0)
    assert sc.protocol == "til" and sc.has_class_head
    for t, c in zip(sc.tasks, cil.tasks):
        assert t.task_id_visible
        assert t.label_space == t.class_indices
        assert t.classes == c.classes and t.train == c.train
    assert sc.tasks[2].label_space == [13, 14]
    assert sc.tasks[2].num_seen_classes == 15


def test_class_index_mapping_round_trips(s4):
    sc = build_scenario("cil", *s4, seed=5)
    to_idx, to_label = sc.label_to_class_index, sc.class_index_to_label
    assert sorted(to_idx) == list(range(23))
    for label in range(23):
        assert to_label[to_idx[label]] == label
        assert sc.class_index(S4_CATEGORIES[label]) == to_idx[label]
    train = s4[0]
    assert sc.class_indices_of(train) == [sc.class_order.index(r.category) for r in train]
    with pytest.raises(KeyError, match="flute"):
        sc.class_index("flute")


def test_dil_has_the_same_groups_and_no_class_head(s4):
    dil = build_scenario("dil", *s4, seed=4)
    cil = build_scenario("cil", *s4, seed=4)
    assert not dil.has_class_head and dil.num_tasks == 7
    for d, c in zip(dil.tasks, cil.tasks):
        assert (d.classes, d.train, d.val, d.test) == (c.classes, c.train, c.val, c.test)
        assert d.label_space == [] and d.num_seen_classes == 0 and not d.task_id_visible


def test_dil_domains_variant(s4):
    train, val, test2 = s4  # the fixture's test records carry dom0 and dom1 only
    test = s4_records("test", 3, domains=3)
    sc = build_scenario("dil", train, val, test, variant="domains", seed=0, domain_order="sorted")
    assert sc.variant == "domains" and not sc.has_class_head
    assert [t.domain for t in sc.tasks] == ["dom0", "dom1", "dom2"]
    for split_name, recs in (("train", train), ("val", val), ("test", test)):
        for t in sc.tasks:
            assert getattr(t, split_name) == [i for i, r in enumerate(recs) if r.domain == t.domain]
    for t in sc.tasks:
        assert t.label_space == [] and t.num_seen_classes == 0 and not t.task_id_visible
        assert t.classes == sc.class_order  # every category occurs in every domain here
    with pytest.raises(ValueError, match="domain 'dom2' .* no videos in test_records"):
        build_scenario("dil", train, val, test2, variant="domains", seed=0)
    with pytest.raises(ValueError, match=r"domain\(s\) \['dom3', 'dom4', 'dom5'\] occur in val/test"):
        build_scenario("dil", train, val, s4_records("test", 6, domains=6), variant="domains")


def test_dil_domains_order_options_and_errors(s4):
    train, val, _ = s4
    test = s4_records("test", 3, domains=3)
    r1 = build_scenario("dil", train, val, test, variant="domains", seed=1)
    r1b = build_scenario("dil", train, val, test, variant="domains", seed=1)
    assert [t.domain for t in r1.tasks] == [t.domain for t in r1b.tasks]
    assert {tuple(t.domain for t in build_scenario("dil", train, val, test, variant="domains", seed=s).tasks)
            for s in range(6)} != {("dom0", "dom1", "dom2")}  # some seed reorders
    explicit = build_scenario("dil", train, val, test, variant="domains", domain_order=["dom2", "dom0", "dom1"])
    assert [t.domain for t in explicit.tasks] == ["dom2", "dom0", "dom1"]
    assert any("no videos in val_records" in w for w in explicit.warnings)  # val has dom0 only
    with pytest.raises(ValueError, match="domain_order"):
        build_scenario("dil", train, val, test, variant="domains", domain_order=["dom2", "dom0", "x"])
    no_dom = s4_records("train", 2)
    with pytest.raises(ValueError, match="needs a 'domain' column: none of the 46 train_records"):
        build_scenario("dil", no_dom, [], s4_records("test", 1), variant="domains")


def test_class_protocol_errors(s4):
    train, val, test = s4
    with pytest.raises(ValueError, match="unknown protocol 'xil'"):
        build_scenario("xil", train, val, test)
    with pytest.raises(ValueError, match="unknown variant 'domains' for protocol 'cil'"):
        build_scenario("cil", train, val, test, variant="domains")
    with pytest.raises(ValueError, match=r"test_records\[0\] .* has split 'val'"):
        build_scenario("cil", train, val, val)
    with pytest.raises(ValueError, match="more than once"):
        build_scenario("cil", train + train[:1], val, test)
    with pytest.raises(ValueError, match=r"\['race_car'\] of task \d have no videos in test_records"):
        build_scenario("cil", train, val, s4_records("test", 1, skip=("race_car",)))
    with pytest.raises(ValueError, match="unknown categories \\['flute'\\]"):
        build_scenario("cil", train, val, test, class_order=["flute"] + list(S4_CATEGORIES[1:]))
    with pytest.raises(ValueError, match="no videos in train_records"):
        build_scenario("cil", s4_records("train", 1, skip=("helicopter",)), val, test,
                       class_order=list(S4_CATEGORIES[:22]) + ["helicopter"], split="11-1")
    with pytest.raises(ValueError, match="categories with no videos in train_records: \\['helicopter'\\]"):
        build_scenario("cil", s4_records("train", 1, skip=("helicopter",)), val, test, split="10-2")
    with pytest.raises(ValueError, match="has no category"):
        build_scenario("cil", ms3_records("train", 5, 0), [], [])
    bad = [VideoRecord("v", "train", category="race_car", label=0)]
    with pytest.raises(ValueError, match="label 0 does not match category 'race_car'"):
        build_scenario("cil", bad, [], [])


def test_missing_validation_class_is_a_warning(s4):
    train, _, test = s4
    sc = build_scenario("cil", train, s4_records("val", 1, skip=("race_car",)), test)
    assert any("'race_car'" in w and "val_records" in w for w in sc.warnings)
    assert "warning:" in sc.describe()


def test_subset_of_classes_and_alphabetical_order():
    cats = S4_CATEGORIES[:7]
    skip = S4_CATEGORIES[7:]
    sc = build_scenario("cil", s4_records("train", 2, skip=skip), s4_records("val", 1, skip=skip),
                        s4_records("test", 1, skip=skip), split="3-2", class_order="alphabetical")
    assert sc.class_order == sorted(cats)
    assert [t.classes for t in sc.tasks] == [sorted(cats)[:3], sorted(cats)[3:5], sorted(cats)[5:]]
    assert sc.label_to_class_index.count(-1) == 16


def test_scenario_serialises_and_schedules(s4):
    sc = build_scenario("cil", *s4, seed=2)
    d = sc.to_dict()
    json.dumps(d)
    again = Scenario.from_dict(json.loads(json.dumps(d)))
    assert again == sc
    assert sc.tasks_to_evaluate(None) == list(range(7))
    assert sc.tasks_to_evaluate(0) == [0, 1]
    assert sc.tasks_to_evaluate(3) == [0, 1, 2, 3, 4]
    assert sc.tasks_to_evaluate(6) == list(range(7))
    with pytest.raises(ValueError, match="after_task=7"):
        sc.tasks_to_evaluate(7)
    text = sc.describe()
    assert "Class-Incremental (cil)" in text and len(text.splitlines()) == 3 + 1 + 7
    sc.check_records(*s4)
    with pytest.raises(ValueError, match="train records .* differ"):
        sc.check_records(s4[0][::-1], s4[1], s4[2])


def test_builders_are_deterministic(s4, ms3):
    for proto in ("til", "cil", "dil"):
        assert build_scenario(proto, *s4, seed=9).to_dict() == build_scenario(proto, *s4, seed=9).to_dict()
    assert (build_scenario("cil", *s4, seed=9).class_order != build_scenario("cil", *s4, seed=10).class_order)
    a = build_scenario("tfcl", *ms3, split="31-5", num_tasks=50, seed=1)
    b = build_scenario("tfcl", *ms3, split="31-5", num_tasks=50, seed=1)
    c = build_scenario("tfcl", *ms3, split="31-5", num_tasks=50, seed=2)
    assert a.to_dict() == b.to_dict()
    assert [t.train for t in a.tasks] != [t.train for t in c.tasks]


# ---- TF-CL -------------------------------------------------------------------------------------------
def _round_half_up(x: float) -> int:
    return int(Decimal(str(x)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_tfcl_31_5_with_50_tasks(tfcl, ms3):
    train, val, test = ms3
    sc = tfcl
    assert sc.protocol == "tfcl" and sc.dataset == "ms3" and sc.anytime_inference
    assert not sc.has_class_head and sc.num_tasks == 50
    homes = [t.meta["home_size"] for t in sc.tasks]
    assert homes == [67] + [11] * 43 + [10] * 6  # 600 * 31/276, 600 * 5/276, largest remainders
    for t in sc.tasks:
        assert t.classes == [] and t.label_space == [] and not t.task_id_visible
        assert len(t.train) >= 1 and len(t.test) >= 1 and len(t.val) >= 1
    stream = sorted(i for t in sc.tasks for i in t.train)
    assert stream == list(range(len(train)))  # every train video exactly once
    assert sorted(i for t in sc.tasks for i in t.test) == list(range(len(test)))
    assert sorted(i for t in sc.tasks for i in t.val) == list(range(len(val)))


def test_tfcl_blur_exchanges_the_specified_share(tfcl):
    sc = tfcl
    T = sc.num_tasks
    for t, task in enumerate(sc.tasks):
        n = task.meta["home_size"]
        left, right = task.meta["sent_left"], task.meta["sent_right"]
        assert len(left) + len(right) == min(_round_half_up(0.1 * n), n - 1)
        if t == 0:
            assert left == []
        if t == T - 1:
            assert right == []
        if 0 < t < T - 1:
            assert abs(len(left) - len(right)) <= 1
        for i in left:
            assert i in sc.tasks[t - 1].train and i not in task.train
        for i in right:
            assert i in sc.tasks[t + 1].train and i not in task.train
        incoming = (sc.tasks[t - 1].meta["sent_right"] if t > 0 else []) + \
                   (sc.tasks[t + 1].meta["sent_left"] if t < T - 1 else [])
        assert sorted(incoming) == task.meta["blurred_in"]
        assert len(task.train) == n - len(left) - len(right) + len(incoming)
    # the videos sent right come later in the stream than those sent left
    mid = sc.tasks[5].meta
    if mid["sent_left"] and mid["sent_right"]:
        assert max(mid["sent_left"]) < min(mid["sent_right"])


def test_tfcl_no_blur_keeps_the_home_stretches(ms3):
    sc = build_scenario("tfcl", *ms3, split="31-5", num_tasks=50, seed=7, blur=0.0)
    for t in sc.tasks:
        assert t.meta["blurred_in"] == [] and len(t.train) == t.meta["home_size"]


def test_tfcl_stream_follows_the_class_order(tfcl, ms3):
    """Home videos of later tasks never have an earlier primary source rank (oracle: own key)."""
    train = ms3[0]
    rank = {c: i for i, c in enumerate(tfcl.class_order)}
    keys = source_keys(train, rank, tfcl.seed, "train")
    home_keys = []
    for t in tfcl.tasks:
        blurred = set(t.meta["blurred_in"])
        home = [i for i in t.train if i not in blurred] + t.meta["sent_left"] + t.meta["sent_right"]
        home_keys.append(sorted(keys[i][0] for i in home))
    for a, b in zip(home_keys, home_keys[1:]):
        assert a[-1] <= b[0]
    primaries = [keys[i][1] for i in range(len(train))]
    assert all(p in train[i].sources for i, p in enumerate(primaries))
    counts = np.bincount([rank[p] for p in primaries], minlength=23)
    assert counts.min() > 0  # every category leads some part of the stream
    assert tfcl.tasks[0].name.split(", ")[0] == tfcl.class_order[0]  # names list groups in stream order
    assert list(tfcl.tasks[0].meta["groups"])[0] == tfcl.class_order[0]


def test_tfcl_test_assignment_matches_the_ordering_key(ms3):
    train, val, _ = ms3
    # oracle: a test set that copies the train videos lands in their home tasks
    sc = build_scenario("tfcl", train, val, rename_split(train, "test"), split="31-5", num_tasks=50, seed=7)
    for t in sc.tasks:
        lo, hi = t.meta["stream"]
        blurred = set(t.meta["blurred_in"])
        home = sorted([i for i in t.train if i not in blurred] + t.meta["sent_left"] + t.meta["sent_right"])
        assert t.test == home and hi - lo == len(home)
    # on a different test set the assignment is monotone in the key
    sc2 = build_scenario("tfcl", *ms3, split="31-5", num_tasks=50, seed=7)
    rank = {c: i for i, c in enumerate(sc2.class_order)}
    keys = source_keys(ms3[2], rank, sc2.seed, "test")
    per_task = [sorted(keys[i][0] for i in t.test) for t in sc2.tasks]
    for a, b in zip(per_task, per_task[1:]):
        assert a[-1] <= b[0]


def test_assign_places_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(30):
        T = int(rng.integers(2, 5))
        sizes = rng.integers(1, 5, size=T)
        bounds = [0] + np.cumsum(sizes).tolist()
        M = int(rng.integers(T, T + 4))
        places = np.sort(rng.uniform(-1, bounds[-1] + 1, size=M))
        got = assign_places(places, bounds, every_task=True)
        assert sorted(set(got)) == list(range(T)) and np.all(np.diff(got) >= 0)

        def cost(assign):
            return sum(max(0.0, bounds[t] - p, p - bounds[t + 1]) for p, t in zip(places, assign))
        best = min(cost(a) for a in itertools.product(range(T), repeat=M)
                   if sorted(set(a)) == list(range(T)) and all(x <= y for x, y in zip(a, a[1:])))
        assert math.isclose(cost(got), best, abs_tol=1e-9)


def test_tfcl_size_errors_and_num_tasks_from_split(ms3):
    train, val, test = ms3
    with pytest.raises(ValueError, match="needs at least 50 train and 50 test videos .* got 600 train and 40 test"):
        build_scenario("tfcl", train, val, test[:40], split="31-5", num_tasks=50)
    with pytest.raises(ValueError, match="over the 23 groups of the stream .*Pass num_tasks \\(the paper uses 50 for 31-5\\)"):
        build_scenario("tfcl", train, val, test, split="31-5")
    # 23 stream groups: '3-4' gives 3 + 5*4 = 23 -> 6 tasks
    sc = build_scenario("tfcl", train, val, test, split="3-4")
    assert sc.num_tasks == 6
    with pytest.raises(ValueError, match="blur must be in"):
        build_scenario("tfcl", train, val, test, split="31-5", num_tasks=50, blur=0.7)


def test_tfcl_small_validation_set_is_a_warning(ms3):
    train, val, test = ms3
    sc = build_scenario("tfcl", train, val[:10], test, split="31-5", num_tasks=50)
    assert any("only 10 val videos" in w for w in sc.warnings)
    assert sorted(i for t in sc.tasks for i in t.val) == list(range(10))


def test_tfcl_without_sources_needs_features():
    train, val, test = (ms3_records(s, n, k, with_sources=False) for s, n, k in
                        (("train", 120, 1), ("val", 20, 2), ("test", 40, 3)))
    with pytest.raises(ValueError, match="pass video_features"):
        build_scenario("tfcl", train, val, test, split="31-5", num_tasks=10)
    feats = {r.name: np.zeros(3) for r in train + val}
    with pytest.raises(ValueError, match="no entry for 40 of the 40 test_records"):
        build_scenario("tfcl", train, val, test, split="31-5", num_tasks=10, video_features=feats)


def test_tfcl_feature_grouping_recovers_clear_clusters():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=20.0, size=(5, 4))

    def make(split, n, k0):
        recs, feats, truth = [], {}, []
        for k in range(n):
            g = k % 5
            name = f"{split}_{k0 + k:04d}"
            recs.append(VideoRecord(name=name, split=split))
            feats[name] = centres[g] + rng.normal(size=4)
            truth.append(g)
        return recs, feats, truth

    (tr, ftr, gtr), (va, fva, _), (te, fte, gte) = make("train", 100, 0), make("val", 20, 0), make("test", 25, 0)
    feats = {**ftr, **fva, **fte}
    sc = build_scenario("tfcl", tr, va, te, split="1-1", num_tasks=5, video_features=feats, num_groups=5, blur=0.0)
    assert sc.details["grouping"] == "features"
    task_of_train = {i: t.id for t in sc.tasks for i in t.train}
    task_of_test = {i: t.id for t in sc.tasks for i in t.test}
    # each task holds one true cluster exactly, and test videos follow their cluster
    assert adjusted_rand_score(gtr, [task_of_train[i] for i in range(len(tr))]) == 1.0
    assert adjusted_rand_score(gtr + gte, [task_of_train[i] for i in range(len(tr))] +
                               [task_of_test[i] for i in range(len(te))]) == 1.0
    again = build_scenario("tfcl", tr, va, te, split="1-1", num_tasks=5, video_features=feats, num_groups=5)
    assert again.to_dict() == build_scenario("tfcl", tr, va, te, split="1-1", num_tasks=5,
                                             video_features=feats, num_groups=5).to_dict()


def test_tfcl_describe_and_serialise(tfcl):
    text = tfcl.describe()
    assert "Task-Free (tfcl) on MS3" in text and "anytime inference" in text
    assert "67, 11 x43, 10 x6" in text
    assert Scenario.from_dict(json.loads(json.dumps(tfcl.to_dict()))) == tfcl


def test_protocol_aliases():
    assert normalize_protocol("TF-CL") == "tfcl"
    assert normalize_protocol("Class-Incremental") == "cil"
    assert normalize_protocol("task_il") == "til"


# ---- cheap video statistics ----------------------------------------------------------------------------
def test_compute_video_features_from_items_and_store():
    import torch

    rng = np.random.default_rng(0)
    frames = [rng.uniform(size=(5, 3, 8, 8)).astype(np.float32) for _ in range(3)]
    logmel = [rng.normal(size=(5, 1, 96, 64)).astype(np.float32) for _ in range(3)]
    items = [{"frames": torch.from_numpy(f), "audio_logmel": torch.from_numpy(a), "video_id": f"v{i}"}
             for i, (f, a) in enumerate(zip(frames, logmel))]
    feats = compute_video_features(items)
    assert list(feats) == ["v0", "v1", "v2"]
    for i in range(3):
        want = np.concatenate([frames[i][0].reshape(3, -1).mean(1), frames[i][0].reshape(3, -1).std(1),
                               logmel[i].reshape(-1, 64).mean(0)])
        np.testing.assert_allclose(feats[f"v{i}"], want, rtol=1e-6, atol=1e-6)

    class Store:  # like the engine's ClipStore, frames channel-last uint8 and raw waveforms
        pass

    store = Store()
    t = np.arange(16000) / 16000
    store.frames = torch.from_numpy((np.stack(frames) * 255).astype(np.uint8))
    store.video_ids = ["a", "b", "c"]
    store.audio = None
    store.waveforms = torch.from_numpy(np.stack([np.tile(np.sin(2 * np.pi * f * t), (5, 1))
                                                 for f in (100.0, 1000.0, 5000.0)]).astype(np.float32))
    out = compute_video_features(store)
    assert list(out) == ["a", "b", "c"]
    peaks = [int(np.argmax(out[k][6:])) for k in "abc"]
    assert peaks[0] < peaks[1] < peaks[2]  # the loudest band follows the tone's pitch
    with pytest.raises(ValueError, match="frames must be"):
        compute_video_features([{"frames": np.zeros((3, 8, 8)), "audio": np.zeros((5, 64)), "video_id": "x"}])
