"""TF-CL on MS3: a blurry stream of binary-mask tasks (our reading; docs/protocols.md states it).

1. Ordering key. Every video gets a key; sorting the train videos by (key, name) gives the stream.
   * `sources` grouping (SynthAVS knows each video's sounding categories; an S4 record counts as
     the single source of its category): each video's primary source is one of its sources picked
     by a seeded hash of its name; the key is (rank of the primary source in the seeded class
     order, sorted ranks of the other sources), so the stream runs through the categories in the
     class order, one group per primary source.
   * `features` grouping (real MS3): caller-supplied vectors (see `compute_video_features`) are
     standardised over the train videos, grouped by seeded k-means, the groups put in a seeded
     random order, and videos ordered inside a group by a seeded random 1-D projection. The key is
     (group rank, projection).
2. Cut. The stream is cut into `num_tasks` consecutive tasks with sizes proportional to the split
   weights [B, I, ..., I] (`proportional_sizes`): 31-5 with 50 tasks gives the first task 31/276 of
   the stream and every later task 5/276.
3. Blur. Each task t sends m_t = min(round_half_up(blur * n_t), n_t - 1) of its n_t train videos,
   chosen from the seed, to its neighbours: the first task to task 1, the last to task T-2, an
   interior task floor(m_t/2) to each side and the odd one to a side drawn from the seed; the
   videos latest in the stream go right. Every train video is in exactly one task.
4. Val/test assignment. Val and test videos get the same key; each one's place in the train stream
   is found by binary search (ties spread evenly over the tied train span), and the sorted videos
   are split into consecutive tasks that minimise the total distance between a video's place and
   its task's stretch of the stream, every task getting at least one (dynamic programming). A
   video of the same kind as task j's training data therefore lands in task j whenever that leaves
   no task empty. Val and test are not blurred.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections import Counter
from fractions import Fraction
from typing import Any, Mapping, Sequence

import numpy as np

from clavs.data.categories import S4_CATEGORIES
from clavs.data.records import VideoRecord
from clavs.protocols.incremental import _fingerprints
from clavs.protocols.scenario import Scenario, Task
from clavs.protocols.splits import make_class_order, parse_split, proportional_sizes, rng_for, split_weights

Key = tuple  # comparable ordering key (without the video name)


# ---- 1. ordering keys ------------------------------------------------------------------------------
def video_sources(record: VideoRecord) -> tuple[str, ...]:
    """The sounding categories of a video: `sources`, else its S4 category, else ()."""
    if record.sources:
        return tuple(record.sources)
    if record.category:
        return (record.category,)
    return ()


def primary_source(name: str, sources: Sequence[str], rank: Mapping[str, int], seed: int) -> str:
    """One of a video's sources, chosen by a seeded hash of its name.

    Hashing the name (not drawing from an RNG) keeps the choice independent of record order and
    identical for a video whichever split it is in; every category leads about equally many
    videos (taking the earliest-ranked source would starve the categories late in the order).
    """
    ordered = sorted(sources, key=rank.__getitem__)
    digest = hashlib.sha256(f"{seed}|{name}".encode()).digest()
    return ordered[int.from_bytes(digest[:8], "big") % len(ordered)]


def source_keys(records: Sequence[VideoRecord], rank: Mapping[str, int], seed: int,
                arg: str) -> list[tuple[Key, str]]:
    """(key, group name) per record: key = (rank of the primary source, sorted ranks of the others)."""
    out = []
    for i, r in enumerate(records):
        srcs = video_sources(r)
        bad = [s for s in srcs if s not in rank]
        if bad:
            raise ValueError(f"{arg}[{i}] ({r.name!r}) has unknown source categor(ies) {bad}")
        first = primary_source(r.name, srcs, rank, seed)
        rest = sorted(rank[s] for s in srcs)
        rest.remove(rank[first])
        out.append(((rank[first], tuple(rest)), first))
    return out


class FeatureGrouping:
    """Seeded k-means groups + a seeded 1-D projection, fitted on the train videos' features."""

    def __init__(self, train_x: np.ndarray, num_groups: int, rng: np.random.Generator):
        self.mean = train_x.mean(0)
        std = train_x.std(0)
        self.std = np.where(std > 0, std, 1.0)
        z = self._standardise(train_x)
        k = min(num_groups, len(np.unique(z, axis=0)))
        self.centroids = kmeans(z, k, rng)
        self.rank = np.empty(k, dtype=int)
        self.rank[rng.permutation(k)] = np.arange(k)  # group g is the rank[g]-th group of the stream
        u = rng.standard_normal(z.shape[1])
        self.direction = u / np.linalg.norm(u)

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def keys(self, x: np.ndarray) -> list[tuple[Key, str]]:
        z = self._standardise(x)
        g = nearest(z, self.centroids)
        proj = z @ self.direction
        return [((int(self.rank[gi]), float(p)), f"g{int(self.rank[gi])}") for gi, p in zip(g, proj)]


def kmeans(z: np.ndarray, k: int, rng: np.random.Generator, max_iter: int = 100) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding from `rng`; an empty cluster takes the point farthest
    from its centre. Returns the centres [k, d]. Deterministic for a given rng state."""
    n = len(z)
    centres = [z[rng.integers(n)]]
    for _ in range(1, k):
        d2 = ((z[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1).min(1)
        p = d2 / d2.sum()
        centres.append(z[rng.choice(n, p=p)])
    c = np.asarray(centres, dtype=np.float64)
    assign = None
    for _ in range(max_iter):
        new = nearest(z, c)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = z[assign == j]
            if len(members):
                c[j] = members.mean(0)
            else:
                far = int(((z - c[assign]) ** 2).sum(-1).argmax())
                c[j] = z[far]
                assign[far] = j
    return c


def nearest(z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of each row (ties: the lower index)."""
    return ((z[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)


# ---- 3. blur ---------------------------------------------------------------------------------------
def round_half_up(x: Fraction) -> int:
    return int(x + Fraction(1, 2))


def blur_counts(sizes: Sequence[int], blur: float) -> list[int]:
    """m_t = min(round_half_up(blur * n_t), n_t - 1): how many train videos task t sends away."""
    b = Fraction(str(blur))
    if len(sizes) < 2:
        return [0] * len(sizes)
    return [min(round_half_up(b * n), n - 1) for n in sizes]


def blur_stream(home: list[list[int]], blur: float, rng: np.random.Generator) -> tuple[list[list[int]], list[dict]]:
    """Exchange videos between neighbouring tasks; `home` holds stream positions per task.

    Returns the new member lists (sorted stream positions) and, per task, what moved:
    {'sent_left': [...], 'sent_right': [...]} in stream positions.
    """
    T = len(home)
    counts = blur_counts([len(h) for h in home], blur)
    members = [set(h) for h in home]
    moves: list[dict[str, list[int]]] = []
    for t, (h, m) in enumerate(zip(home, counts)):
        chosen = sorted(h[i] for i in rng.choice(len(h), size=m, replace=False)) if m else []
        if t == 0:
            right = m
        elif t == T - 1:
            right = 0
        else:
            right = m // 2 + (int(rng.integers(2)) if m % 2 else 0)
        left_part, right_part = chosen[:m - right], chosen[m - right:]
        moves.append({"sent_left": left_part, "sent_right": right_part})
    for t, mv in enumerate(moves):
        for p in mv["sent_left"]:
            members[t].remove(p)
            members[t - 1].add(p)
        for p in mv["sent_right"]:
            members[t].remove(p)
            members[t + 1].add(p)
    return [sorted(s) for s in members], moves


# ---- 4. assignment of val/test videos ------------------------------------------------------------------
def stream_places(train_keys_sorted: Sequence[Key], keys: Sequence[Key]) -> np.ndarray:
    """Place of each key in the train stream (float, in video units), for keys given in sorted order.

    A key equal to k train keys spanning [lo, hi) spreads the m videos that share it evenly over
    that span (the j-th at lo + (j + 1/2)(hi - lo)/m); an unseen key sits at its insertion point.
    """
    places = np.empty(len(keys))
    i = 0
    while i < len(keys):
        j = i
        while j < len(keys) and keys[j] == keys[i]:
            j += 1
        m = j - i
        lo, hi = bisect_left(train_keys_sorted, keys[i]), bisect_right(train_keys_sorted, keys[i])
        for q in range(m):
            places[i + q] = lo + (q + 0.5) * (hi - lo) / m if hi > lo else lo
        i = j
    return places


def assign_places(places: np.ndarray, bounds: Sequence[int], *, every_task: bool) -> np.ndarray:
    """Task of each place (places sorted), task t owning the stream stretch [bounds[t], bounds[t+1]].

    Cost of putting a place p in task t: its distance to that stretch. With `every_task`, the
    places are split into consecutive non-empty runs, one per task, of minimum total cost (ties
    broken deterministically); otherwise each goes to its cheapest task (ties: the earlier task).
    """
    T = len(bounds) - 1
    starts, ends = np.asarray(bounds[:-1], float), np.asarray(bounds[1:], float)
    cost = np.maximum(0.0, np.maximum(starts[None] - places[:, None], places[:, None] - ends[None]))
    if not every_task:
        return cost.argmin(1)
    M = len(places)
    if M < T:
        raise ValueError(f"{M} videos cannot give each of {T} tasks one")
    dp = np.full(T, np.inf)
    dp[0] = cost[0, 0]
    came_from_prev = np.zeros((M, T), dtype=bool)
    for i in range(1, M):
        advance = np.concatenate([[np.inf], dp[:-1]])
        take = advance < dp
        dp = cost[i] + np.where(take, advance, dp)
        came_from_prev[i] = take
    out = np.empty(M, dtype=int)
    t = T - 1
    for i in range(M - 1, -1, -1):
        out[i] = t
        if came_from_prev[i, t]:
            t -= 1
    assert t == 0, "the assignment must start at task 0"
    return out


# ---- the builder ---------------------------------------------------------------------------------------
def build_tfcl(train: list[VideoRecord], val: list[VideoRecord], test: list[VideoRecord], *, split: str,
               seed: int, class_order: str | Sequence[str], num_tasks: int | None, blur: float,
               grouping: str = "auto", video_features: Mapping[str, np.ndarray] | None = None,
               num_groups: int | None = None) -> Scenario:
    """The TF-CL scenario (see the module docstring for every rule)."""
    blur_f = float(blur)
    if not 0.0 <= blur_f <= 0.5:
        raise ValueError(f"blur must be in [0, 0.5] (share of a task's train videos sent to its "
                         f"neighbours), got {blur!r}")
    if not train:
        raise ValueError("train_records is empty")
    splits = {"train": train, "val": val, "test": test}
    mode = _choose_grouping(grouping, splits, video_features)
    order = make_class_order(class_order, seed, S4_CATEGORIES)
    if mode == "sources":
        rank = {c: i for i, c in enumerate(order)}
        keyed = {s: source_keys(recs, rank, seed, f"{s}_records") for s, recs in splits.items()}
    else:
        feats = {s: _feature_matrix(recs, video_features, f"{s}_records") for s, recs in splits.items()}
        _check_feature_dims(feats)
        k = num_groups if num_groups is not None else len(S4_CATEGORIES)
        if k < 1:
            raise ValueError(f"num_groups must be >= 1, got {num_groups}")
        grouper = FeatureGrouping(feats["train"], k, rng_for(seed, "tfcl_groups"))
        keyed = {s: grouper.keys(x) if len(x) else [] for s, x in feats.items()}

    # 1. the stream
    stream = sorted(range(len(train)), key=lambda i: (keyed["train"][i][0], train[i].name))
    stream_keys = [keyed["train"][i][0] for i in stream]
    groups_in_stream = [keyed["train"][i][1] for i in stream]
    n_groups = len(set(groups_in_stream))
    # 2. the cut
    if num_tasks is None:
        try:
            num_tasks = len(parse_split(split, n_groups))
        except ValueError as e:
            raise ValueError(f"TF-CL without num_tasks takes the number of tasks from split {split!r} over "
                             f"the {n_groups} groups of the stream ({e}). Pass num_tasks (the paper "
                             f"uses 50 for 31-5)") from None
    weights = split_weights(split, num_tasks)
    need = f"TF-CL with {num_tasks} tasks needs at least {num_tasks} train and {num_tasks} test videos (one per task)"
    if len(train) < num_tasks or len(test) < num_tasks:
        raise ValueError(f"{need}; got {len(train)} train and {len(test)} test videos")
    sizes = proportional_sizes(len(train), weights)
    bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    home = [list(range(bounds[t], bounds[t + 1])) for t in range(num_tasks)]
    # 3. blur
    members, moves = blur_stream(home, blur_f, rng_for(seed, "tfcl_blur"))
    # 4. val / test
    warnings: list[str] = []
    if num_tasks == 1 and blur_f > 0:
        warnings.append("one task only: no neighbours to blur with")
    assigned = {}
    for s in ("val", "test"):
        recs = splits[s]
        if not recs:
            assigned[s] = [[] for _ in range(num_tasks)]
            warnings.append(f"{s}_records is empty")
            continue
        order_s = sorted(range(len(recs)), key=lambda i: (keyed[s][i][0], recs[i].name))
        places = stream_places(stream_keys, [keyed[s][i][0] for i in order_s])
        every = len(recs) >= num_tasks
        if not every:
            warnings.append(f"only {len(recs)} {s} videos for {num_tasks} tasks: some tasks have no {s} videos")
        task_of = assign_places(places, bounds, every_task=every)
        per = [[] for _ in range(num_tasks)]
        for i, t in zip(order_s, task_of):
            per[t].append(i)
        assigned[s] = [sorted(p) for p in per]

    tasks = []
    for t in range(num_tasks):
        home_groups = Counter(groups_in_stream[p] for p in home[t])  # insertion order = stream order
        tasks.append(Task(
            id=t, name=", ".join(home_groups), classes=[], class_indices=[],
            train=sorted(stream[p] for p in members[t]), val=assigned["val"][t], test=assigned["test"][t],
            task_id_visible=False, label_space=[], num_seen_classes=0,
            meta={"stream": [bounds[t], bounds[t + 1]], "home_size": len(home[t]),
                  "groups": dict(home_groups),
                  "sent_left": [stream[p] for p in moves[t]["sent_left"]],
                  "sent_right": [stream[p] for p in moves[t]["sent_right"]],
                  "blurred_in": sorted(stream[p] for p in members[t] if not bounds[t] <= p < bounds[t + 1])}))
    moved = sum(len(m["sent_left"]) + len(m["sent_right"]) for m in moves)
    details = {"grouping": mode, "stream groups": n_groups,
               "task sizes (train, before blur)": _compact(sizes),
               "blur": f"{blur_f} -> {moved} of {len(train)} train videos moved to a neighbouring task"}
    return Scenario(protocol="tfcl", tasks=tasks, class_order=order, has_class_head=False, dataset="ms3",
                    split=split, seed=seed, variant=None, anytime_inference=True, warnings=warnings,
                    record_fingerprints=_fingerprints(train, val, test), details=details)


def _choose_grouping(grouping: str, splits: dict[str, list[VideoRecord]],
                     video_features: Mapping[str, Any] | None) -> str:
    if grouping not in ("auto", "sources", "features"):
        raise ValueError(f"grouping {grouping!r} is not 'auto', 'sources' or 'features'")
    without = [r.name for recs in splits.values() for r in recs if not video_sources(r)]
    if grouping == "sources" or (grouping == "auto" and not without):
        if without:
            raise ValueError(f"TF-CL grouping 'sources': {len(without)} video(s) have neither sources nor a "
                             f"category, e.g. {without[:5]}; real MS3 has no sources, pass video_features")
        return "sources"
    if video_features is None:
        raise ValueError(f"TF-CL needs a way to order the stream: {len(without)} video(s) have no sources "
                         f"(real MS3 has none), e.g. {without[:5]}; pass video_features "
                         f"(clavs.protocols.compute_video_features)")
    return "features"


def _feature_matrix(records: list[VideoRecord], feats: Mapping[str, Any] | None, arg: str) -> np.ndarray:
    assert feats is not None
    missing = [r.name for r in records if r.name not in feats]
    if missing:
        raise ValueError(f"video_features has no entry for {len(missing)} of the {len(records)} {arg}, "
                         f"e.g. {missing[:5]}")
    rows = [np.asarray(feats[r.name], dtype=np.float64).ravel() for r in records]
    dims = {len(x) for x in rows}
    if len(dims) > 1:
        raise ValueError(f"video_features vectors of {arg} differ in length: {sorted(dims)}")
    bad = [r.name for r, x in zip(records, rows) if not np.isfinite(x).all()]
    if bad:
        raise ValueError(f"video_features of {arg} hold NaN/inf for {bad[:5]}")
    return np.stack(rows) if rows else np.empty((0, 0))


def _check_feature_dims(feats: dict[str, np.ndarray]) -> None:
    dims = {s: x.shape[1] for s, x in feats.items() if len(x)}
    if len(set(dims.values())) > 1:
        raise ValueError(f"video_features vectors differ in length between splits: {dims}")


def _compact(sizes: Sequence[int]) -> str:
    """[67, 11, 11, 10] -> '67, 11 x2, 10'."""
    out, i = [], 0
    while i < len(sizes):
        j = i
        while j < len(sizes) and sizes[j] == sizes[i]:
            j += 1
        out.append(f"{sizes[i]}" + (f" x{j - i}" if j - i > 1 else ""))
        i = j
    return ", ".join(out)

