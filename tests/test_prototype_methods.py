"""RanPAC and FeCAM (methods/ranpac.py, fecam.py) and their shared parts (parts/closed_form.py,
parts/first_session.py): the closed-form heads against numpy / scikit-learn oracles, predictions on
task 0 that stay bit-identical after later tasks, the first session in a task-free stream, the engine's
empty-step rule, resume and multi-process statistics; then end-to-end smoke runs in every protocol."""

from __future__ import annotations

import copy
import io
import threading
import types

import numpy as np
import pytest
import torch
from method_helpers import check_finished, engine_step, fake_ctx, random_batch, read_json, tiny_plain
from sklearn.linear_model import Ridge

from clavs.batch import labelled_frames
from clavs.cli import main
from clavs.metrics import SEGMENTATION_METRICS
from clavs.methods.fecam import FeCAM
from clavs.methods.parts import GaussianHead, RidgeHead, probability_logit, random_projection
from clavs.methods.parts.closed_form import RIDGES
from clavs.methods.parts.first_session import pixel_features
from clavs.methods.ranpac import RanPAC
from clavs.protocols.scenario import Task


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# ================================================================== oracles (numpy, after the originals)

def ridge_oracle(H: np.ndarray, Y: np.ndarray, H_val: np.ndarray, Y_val: np.ndarray):
    """RanPAC's replace_fc / optimise_ridge_parameter in numpy: held-out MSE of every lambda, and W."""
    G, Q = H.T @ H, H.T @ Y
    eye = np.eye(G.shape[0])
    losses = [np.mean((H_val @ np.linalg.solve(G + r * eye, Q) - Y_val) ** 2) for r in RIDGES]
    return np.array(losses), lambda r: np.linalg.solve(G + r * eye, Q)


def fecam_oracle(X: np.ndarray, labels: np.ndarray, k: int, shrink1=1.0, shrink2=0.0):
    """FeCAM_vit_cifar100.py: normalised features, np.cov, shrink_cov, normalize_cov, pinv."""
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    means, precisions = [], []
    for c in range(k):
        rows = X[labels == c]
        cov = np.cov(rows.T)
        diag_mean = np.mean(np.diagonal(cov))
        off = cov.copy()
        np.fill_diagonal(off, 0.0)
        mask = off != 0.0
        off_mean = (off * mask).sum() / mask.sum()
        iden = np.eye(cov.shape[0])
        cov = cov + shrink1 * diag_mean * iden + shrink2 * off_mean * (1 - iden)
        sd = np.sqrt(np.diagonal(cov))
        cov = cov / np.outer(sd, sd)
        means.append(rows.mean(0))
        precisions.append(np.linalg.pinv(cov))
    return np.stack(means), np.stack(precisions)


def mahalanobis_oracle(X, means, precisions):
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    return np.stack([np.einsum("nd,de,ne->n", X - m, P, X - m) for m, P in zip(means, precisions)], 1)


def _relu_features(x: torch.Tensor, w: torch.Tensor) -> np.ndarray:
    """RanPAC's h = relu(x W_rand), in float32 as the head computes it (then float64 for the oracle)."""
    h = np.maximum(x.float().numpy() @ w.float().numpy(), np.float32(0))
    assert h.dtype == np.float32
    return h.astype(np.float64)


# ================================================================== A. the closed-form parts

def test_ridge_head_sums_lambda_choice_and_weights_match_numpy_and_sklearn():
    g = torch.Generator().manual_seed(0)
    w = random_projection(6, 24, torch.Generator().manual_seed(1))
    x, x_val = torch.randn(300, 6, generator=g), torch.randn(80, 6, generator=g)
    labels = (x[:, :4] + 0.8 * torch.randn(300, 4, generator=g)).argmax(1)  # a noisy signal: lambda matters
    labels_val = (x_val[:, :4] + 0.8 * torch.randn(80, 4, generator=g)).argmax(1)
    head, held = RidgeHead(w, 4), RidgeHead(w, 4)
    for part, lab in zip(x.split(70), labels.split(70)):
        head.update(part, lab)
    held.update(x_val, labels_val)
    H, Y = _relu_features(x, w), np.eye(4)[labels.numpy()]
    H_val, Y_val = _relu_features(x_val, w), np.eye(4)[labels_val.numpy()]
    np.testing.assert_allclose(head.G.numpy(), H.T @ H, rtol=1e-5)
    np.testing.assert_allclose(head.Q.numpy(), H.T @ Y, rtol=1e-5)
    assert float(head.count) == 300 and head.yy.tolist() == Y.sum(0).tolist()

    losses, solve = ridge_oracle(H, Y, H_val, Y_val)
    ridge = head.fit(held)
    np.testing.assert_allclose(head.losses, losses, rtol=1e-6)
    assert losses[RIDGES.index(ridge)] <= losses.min() * (1 + 1e-9)  # the best lambda (up to exact ties)
    assert 1e-8 < ridge < 1e8  # an interior optimum: the held-out error really chose it
    sk = Ridge(alpha=ridge, fit_intercept=False, solver="cholesky").fit(H, Y)
    np.testing.assert_allclose(head.weight.numpy(), sk.coef_.T, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(head.scores(x_val).numpy(), H_val @ sk.coef_.T, rtol=1e-4, atol=1e-5)

    # the original's 80/20 split: lambda on the held-out part, the head on both parts
    both = RidgeHead(w, 4)
    both.update(x, labels)
    both.fit(held, merge_held_out=True)
    sk_all = Ridge(alpha=both.ridge, fit_intercept=False, solver="cholesky").fit(np.vstack([H, H_val]), np.vstack([Y, Y_val]))
    np.testing.assert_allclose(both.weight.numpy(), sk_all.coef_.T, rtol=1e-6, atol=1e-9)


def test_ridge_head_shards_add_up_and_grow_with_new_classes():
    g = torch.Generator().manual_seed(2)
    w = random_projection(5, 16, torch.Generator().manual_seed(3))
    x, labels = torch.randn(90, 5, generator=g), torch.randint(0, 3, (90,), generator=g)
    whole = RidgeHead(w, 3)
    whole.update(x, labels)
    a, b = RidgeHead(w, 3), RidgeHead(w, 3)
    a.update(x[:40], labels[:40])
    b.update(x[40:], labels[40:])
    others = iter([b.count, b.G, b.Q, b.yy])
    a.all_reduce(lambda t: t + next(others))  # a two-process sum, seen from process a
    for name in ("count", "G", "Q", "yy"):
        torch.testing.assert_close(getattr(a, name), getattr(whole, name))

    later = RidgeHead(w, 5)  # a later task: classes 3 and 4
    later.update(x[:10], torch.full((10,), 4))
    whole.merge(later)
    assert whole.Q.shape == (16, 5) and torch.equal(whole.Q[:, 3], torch.zeros(16, dtype=torch.float64))
    H = _relu_features(x[:10], w)
    np.testing.assert_allclose(whole.Q[:, 4].numpy(), H.sum(0), rtol=1e-5)
    whole.release_statistics()
    with pytest.raises(RuntimeError, match="released"):
        whole.update(x, labels)


def test_probability_logit_inverts_the_sigmoid_inside_and_keeps_the_order_outside():
    p = torch.linspace(-0.5, 1.5, 2001, dtype=torch.float64)
    z = probability_logit(p)
    assert bool((z.diff() > 0).all()) and bool(torch.isfinite(z).all())
    inside = (p >= 1e-4) & (p <= 1 - 1e-4)
    torch.testing.assert_close(torch.sigmoid(z[inside]), p[inside])
    assert bool(((z > 0) == (p > 0.5)).all())


def test_gaussian_head_matches_fecam_reference_code():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(120, 7, generator=g) @ torch.randn(7, 7, generator=g) + 0.5
    labels = torch.randint(0, 3, (120,), generator=g)
    for a1, a2 in ((1.0, 0.0), (1.0, 1.0)):
        head = GaussianHead(7, 3, shrink1=a1, shrink2=a2)
        for part, lab in zip(x.split(50), labels.split(50)):
            head.update(part, lab)
        head.fit()
        means, precisions = fecam_oracle(x.double().numpy(), labels.numpy(), 3, a1, a2)
        np.testing.assert_allclose(head.means.numpy(), means, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(head.precisions.numpy(), precisions, rtol=1e-5, atol=1e-8)
        test = torch.randn(30, 7, generator=g)
        d = mahalanobis_oracle(test.double().numpy(), means, precisions)
        np.testing.assert_allclose(head.scores(test).numpy(), -d / 2, rtol=1e-4, atol=1e-4)

    lonely = GaussianHead(7, 3)
    lonely.update(x[:1], torch.tensor([1]))
    lonely.update(x[1:20], torch.zeros(19, dtype=torch.long))
    lonely.fit()  # class 1: one row (Euclidean distance to it); class 2: none (never predicted)
    torch.testing.assert_close(lonely.precisions[1], torch.eye(7, dtype=torch.float64))
    scores = lonely.scores(x[:5])
    assert bool(torch.isinf(scores[:, 2]).all()) and bool(torch.isfinite(scores[:, :2]).all())
    assert int(scores[0].argmax()) == 1  # its own row is at distance 0


# ================================================================== B. the methods on a tiny network

SIZES = (3, 2, 2)  # classes per task
N_CLIPS = 12


def scenario(protocol: str) -> types.SimpleNamespace:
    has_classes = protocol in ("til", "cil")
    tasks, start = [], 0
    for i, n in enumerate(SIZES):
        classes = list(range(start, start + n)) if has_classes else []
        start += n
        tasks.append(Task(id=i, name=f"t{i}", classes=[f"c{c}" for c in classes], class_indices=classes,
                          train=list(range(N_CLIPS)), val=list(range(N_CLIPS)), test=[], task_id_visible=protocol == "til",
                          label_space=classes, num_seen_classes=start if has_classes else 0))
    return types.SimpleNamespace(protocol=protocol, has_class_head=has_classes, tasks=tasks)


def clips(seed: int, task: Task, protocol: str, n: int = N_CLIPS, first_index: int = 0):
    batch = random_batch(seed, n, task_id=task.id if protocol == "til" else -1)
    if task.class_indices:
        batch.class_index = torch.tensor([task.class_indices[i % len(task.class_indices)] for i in range(n)])
    batch.index = torch.arange(first_index, first_index + n)
    return batch


def build(cls, protocol: str, seed: int = 0, *, task_free: bool = False, **hparams):
    defaults = {"rp_dim": 16, "mask_rp_dim": 32, "pixels_per_frame": 0} if cls is RanPAC else {}
    model = tiny_plain(seed=seed, use_class_head=protocol in ("til", "cil"), task_heads=protocol == "til")
    ctx = fake_ctx(task_free=task_free)
    ctx.config = {"seed": seed}
    method = cls(model, cls.Hparams(**{**defaults, **hparams}), scenario(protocol), ctx)
    return method


def run_task(method, t: int, protocol: str, *, steps: int = 2) -> None:
    """begin_task, a few training steps when anything trains, end_task with the task's clips (val: others)."""
    task = method.scenario.tasks[t]
    method.begin_task(task)
    params = method.trainable_parameters()
    if params:
        opt = torch.optim.AdamW(params, lr=1e-2)
        method.model.train()
        for s in range(steps):
            engine_step(method, opt, clips(100 * t + s, task, protocol))
    method.model.eval()
    method.ctx.data = lambda split: [clips(100 * t + 50, task, protocol, first_index=1000)]
    method.end_task(task, [clips(100 * t + 10, task, protocol, n=7), clips(100 * t + 11, task, protocol, n=5, first_index=7)])


CASES = [(m, p) for m in (RanPAC, FeCAM) for p in ("til", "cil", "dil")]


@pytest.mark.parametrize("cls,protocol", CASES, ids=[f"{c.name}-{p}" for c, p in CASES])
def test_task0_predictions_are_bit_identical_after_later_tasks(cls, protocol):
    method = build(cls, protocol, seed=5)
    run_task(method, 0, protocol)
    assert method.frozen
    weights = copy.deepcopy(method.model.state_dict())
    probe = clips(7, method.scenario.tasks[0], protocol)
    before = method.predict(probe)
    with torch.no_grad():
        assert not torch.equal(before.mask_logits, method.model(probe).mask_logits)  # the closed-form head predicts
    passes = []
    update = method._update
    method._update = lambda batch, fits: (passes.append(batch.size), update(batch, fits))
    for t in (1, 2):
        run_task(method, t, protocol)
        assert method.trained_groups() == () and method.trainable_parameters() == []
        assert not any(p.requires_grad for p in method.model.parameters())
    assert bool(passes) is (protocol != "dil")  # DIL: nothing left to fit, so no statistics pass
    after = method.predict(probe)
    assert _unchanged(weights, method.model.state_dict())
    assert torch.equal(before.mask_logits, after.mask_logits)
    if protocol == "til":  # per-task mask and class heads, never refitted
        assert sorted(method.mask_heads) == [0, 1, 2]
        assert torch.equal(before.class_logits, after.class_logits[:, :SIZES[0]])
        assert bool(torch.isinf(after.class_logits[:, SIZES[0]:]).all())  # only the task's own classes
    elif protocol == "cil":
        assert list(method.mask_heads) == [0]  # fitted in the first session, then frozen
        assert after.class_logits.shape[-1] == sum(SIZES)
        old = slice(0, SIZES[0])
        # FeCAM: the old classes' Gaussians never change; RanPAC refits its one head on every class (the
        # original), so old classes' scores move and CIL class accuracy can drop: measured, not hidden
        assert torch.equal(before.class_logits[:, old], after.class_logits[:, old]) is (cls is FeCAM)


def _pixels_and_pooled(method, batch):
    out, pixels = pixel_features(method.model, batch)
    feats, masks = labelled_frames(batch, types.SimpleNamespace(mask_logits=pixels))
    x = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
    return out, pixels, x, masks.reshape(-1).long(), out.features["pooled"]


def test_pixel_features_are_the_input_of_the_trained_mask_head():
    model = tiny_plain(seed=8).eval()
    batch = random_batch(3)
    with torch.no_grad():
        out, pixels = pixel_features(model, batch)
        torch.testing.assert_close(model.decoder.logits(pixels), out.mask_logits)
    assert pixels.shape[1] == model.decoder.widths[-1] and pixels.shape[-2:] == out.mask_logits.shape[-2:]


def test_ranpac_heads_equal_a_direct_ridge_fit_on_the_same_features():
    method = build(RanPAC, "cil", seed=9)
    task = method.scenario.tasks[0]
    train, val = clips(20, task, "cil", n=16), clips(21, task, "cil", n=12, first_index=100)
    method.begin_task(task)
    method.model.eval()
    method.ctx.data = lambda split: [val]
    method.end_task(task, [train])
    with torch.no_grad():
        _, _, x, y, pooled = _pixels_and_pooled(method, train)
        _, _, x_val, y_val, pooled_val = _pixels_and_pooled(method, val)
    frames = train.num_frames
    for head, w, feats, target, feats_val, target_val in (
            (method.mask_heads[0], method.w_rand["mask"], x, y[:, None].double().numpy(), x_val,
             y_val[:, None].double().numpy()),
            (method.class_heads["all"], method.w_rand["class"], pooled, np.eye(3)[train.class_index.repeat_interleave(frames)],
             pooled_val, np.eye(3)[val.class_index.repeat_interleave(frames)])):
        H, H_val = _relu_features(feats, w), _relu_features(feats_val, w)
        losses, solve = ridge_oracle(H, target, H_val, target_val)
        np.testing.assert_allclose(head.losses, losses, rtol=1e-5)
        assert losses[RIDGES.index(head.ridge)] <= losses.min() * (1 + 1e-6)
        expected = solve(head.ridge)
        np.testing.assert_allclose(head.weight.numpy(), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    # what predict returns: the logit of the regressed foreground probability, the class scores
    out = method.predict(val)
    p = _relu_features(x_val, method.w_rand["mask"]) @ method.mask_heads[0].weight.numpy()
    p_torch = method.mask_heads[0].scores(x_val)[:, 0]
    np.testing.assert_allclose(p_torch.double().numpy(), p[:, 0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.mask_logits.reshape(-1), probability_logit(p_torch))
    scores = _relu_features(pooled_val, method.w_rand["class"]) @ method.class_heads["all"].weight.numpy()
    np.testing.assert_allclose(out.class_logits.double().numpy(), scores, rtol=1e-4, atol=1e-5)


def test_fecam_heads_equal_class_means_and_shrunk_correlations_of_the_same_features():
    method = build(FeCAM, "cil", seed=10)
    task = method.scenario.tasks[0]
    train = clips(30, task, "cil", n=16)
    method.begin_task(task)
    method.model.eval()
    method.end_task(task, [train.select(list(range(9))), train.select(list(range(9, 16)))])
    with torch.no_grad():
        _, _, x, y, pooled = _pixels_and_pooled(method, train)
    labels = train.class_index.repeat_interleave(train.num_frames).numpy()
    for head, feats, lab, k in ((method.mask_heads[0], x, y.numpy(), 2), (method.class_heads["task0"], pooled, labels, 3)):
        means, precisions = fecam_oracle(feats.double().numpy(), lab, k)
        np.testing.assert_allclose(head.means.numpy(), means, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(head.precisions.numpy(), precisions, rtol=1e-4, atol=1e-6)
    probe = clips(31, task, "cil", n=4)
    out = method.predict(probe)
    with torch.no_grad():
        _, _, xp, _, pooled_p = _pixels_and_pooled(method, probe)
    head = method.mask_heads[0]
    d = mahalanobis_oracle(xp.double().numpy(), head.means.numpy(), head.precisions.numpy())
    np.testing.assert_allclose(out.mask_logits.reshape(-1).double().numpy(), (d[:, 0] - d[:, 1]) / 2, rtol=1e-3, atol=1e-3)
    cls_head = method.class_heads["task0"]
    d = mahalanobis_oracle(pooled_p.double().numpy(), cls_head.means.numpy(), cls_head.precisions.numpy())
    np.testing.assert_allclose(out.class_logits.double().numpy(), -d / 2, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("cls", [RanPAC, FeCAM], ids=["ranpac", "fecam"])
def test_task_free_first_session_ends_at_the_first_consolidation(cls):
    assert build(cls, "dil", task_free=True).told_first_task_end()  # default: the first session is the first task
    method = build(cls, "dil", seed=12, task_free=True, consolidate_every=3)
    assert method.consolidation_interval() == 3 and not method.told_first_task_end()  # N steps, told nothing
    method.begin_task(None)
    task = method.scenario.tasks[0]
    assert method.trained_groups() == cls.trains  # the stream's one optimiser covers the first session
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2)
    method.model.train()
    assert engine_step(method, opt, clips(40, task, "dil"))  # learning: loss terms
    method.model.eval()
    window = [clips(41, task, "dil", n=10)]  # no validation clips in a stream: RanPAC holds out positions 0, 5
    method.consolidate(window)
    assert method.frozen and list(method.mask_heads) == [0]
    assert method.training_step(clips(42, task, "dil"), method.model) == {}
    assert method.trained_groups() == cls.trains  # the optimiser is kept (a resume rebuilds the same one)
    fitted = copy.deepcopy(method.state_dict())
    method.consolidate([clips(43, task, "dil")])  # later consolidations: nothing to do
    assert _same(method.state_dict(), fitted)
    if cls is RanPAC:  # lambda chosen on the held-out fifth, the head fitted on all ten clips
        held = [clips(41, task, "dil", n=10).select([0, 5])]
        rest = [clips(41, task, "dil", n=10).select([1, 2, 3, 4, 6, 7, 8, 9])]
        again = build(cls, "dil", seed=12, task_free=True)
        again.model.load_state_dict(method.model.state_dict())
        again.model.eval()
        fits = again._fits_for(None)
        held_fits = [types.SimpleNamespace(kind=f.kind, key=f.key, head=again.new_head(f.kind, 1), classes=None) for f in fits]
        again.accumulate(rest, fits)
        again.accumulate(held, held_fits)
        expected = fits[0].head.held_out_losses(held_fits[0].head)
        np.testing.assert_allclose(method.mask_heads[0].losses, expected.numpy(), rtol=1e-6)


def _unchanged(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    """Every weight of `before` is in `after` (class heads may have grown new rows, TIL new mask heads)."""
    return all(torch.equal(v, after[k][tuple(slice(0, n) for n in v.shape)]) for k, v in before.items())


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def test_ranpac_state_round_trip_resumes_exactly():
    straight = build(RanPAC, "cil", seed=13)
    for t in (0, 1):
        run_task(straight, t, "cil")
    buffer = io.BytesIO()
    torch.save({"model": straight.model.state_dict(), "method": straight.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # what a checkpoint gives back
    resumed = build(RanPAC, "cil", seed=99)  # another seed: everything must come from the checkpoint
    resumed.begin_task(resumed.scenario.tasks[1])
    resumed.model.load_state_dict(saved["model"])
    resumed.load_state_dict(saved["method"])
    assert resumed.class_heads["all"].G is not None and resumed.mask_heads[0].G is None  # refitted head keeps G
    for m in (straight, resumed):
        run_task(m, 2, "cil")
    assert _same(straight.state_dict(), resumed.state_dict())
    probe = clips(77, straight.scenario.tasks[0], "cil")
    a, b = straight.predict(probe), resumed.predict(probe)
    assert torch.equal(a.mask_logits, b.mask_logits) and torch.equal(a.class_logits, b.class_logits)


class _ThreadReduce:
    """all_reduce_sum across threads that stand for processes (the same summation order on every one)."""

    def __init__(self, world: int):
        self.barrier = threading.Barrier(world, timeout=120)  # a failing rank breaks it instead of hanging
        self.slots: list[torch.Tensor | None] = [None] * world

    def for_rank(self, rank: int):
        def reduce(t: torch.Tensor) -> torch.Tensor:
            self.slots[rank] = t.clone()
            self.barrier.wait()
            total = sum(self.slots[1:], self.slots[0].clone())
            self.barrier.wait()
            return total
        return reduce


@pytest.mark.parametrize("cls", [RanPAC, FeCAM], ids=["ranpac", "fecam"])
def test_two_processes_take_half_the_batches_each_and_fit_identical_heads(cls):
    task_data = [clips(60 + i, scenario("cil").tasks[0], "cil", n=4, first_index=4 * i) for i in range(5)]
    extra = {"pixels_per_frame": 64} if cls is RanPAC else {}
    single = build(cls, "cil", seed=14, **extra)
    reducer = _ThreadReduce(2)
    ranks = []
    for r in range(2):
        m = build(cls, "cil", seed=14, **extra)
        m.model.load_state_dict(single.model.state_dict())
        m.ctx.world_size, m.ctx.rank, m.ctx.all_reduce_sum = 2, r, reducer.for_rank(r)
        ranks.append(m)
    seen = {0: [], 1: []}
    for m in (single, *ranks):
        task = m.scenario.tasks[0]
        m.begin_task(task)
        m.model.eval()
        m.ctx.data = lambda split: [clips(69, task, "cil", n=6, first_index=500)]
    for r, m in enumerate(ranks):  # record which batches each process forwards
        original = m._update
        m._update = lambda batch, fits, r=r, original=original: (seen[r].append(int(batch.index[0])), original(batch, fits))
    single.end_task(single.scenario.tasks[0], task_data)
    errors = []

    def end_task(m):
        try:
            m.end_task(m.scenario.tasks[0], task_data)
        except BaseException as e:  # re-raised below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=end_task, args=(m,)) for m in ranks]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    assert seen[0][:3] == [0, 8, 16] and seen[1][:2] == [4, 12]  # batches 0, 2, 4 and 1, 3 (then the val pass)
    assert _same(ranks[0].state_dict(), ranks[1].state_dict())  # identical on every rank, no broadcast
    a, b = ranks[0], single
    if cls is RanPAC:
        for name in ("count", "G", "Q"):
            torch.testing.assert_close(getattr(a.class_heads["all"], name), getattr(b.class_heads["all"], name))
    else:
        for key in ("task0",):
            torch.testing.assert_close(a.class_heads[key].means, b.class_heads[key].means)
            torch.testing.assert_close(a.class_heads[key].precisions, b.class_heads[key].precisions)
        torch.testing.assert_close(a.mask_heads[0].precisions, b.mask_heads[0].precisions)


def test_trainer_step_skips_backward_and_optimiser_step_on_an_empty_dict():
    from lightning_fabric import Fabric

    from clavs.engine.loop import Trainer
    from clavs.methods.context import MethodContext

    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    model = tiny_plain(seed=15)
    ctx = MethodContext(fabric=fabric, config={"seed": 0, "train": {"grad_clip": 1.0}})
    method = RanPAC(model, RanPAC.Hparams(rp_dim=8, mask_rp_dim=8), scenario("dil"), ctx)
    method.begin_task(method.scenario.tasks[0])
    calls = []
    method.after_backward = lambda: calls.append("after_backward")
    method.after_step = lambda: calls.append("after_step")
    optimizer = torch.optim.AdamW(method.trainable_parameters(), lr=1e-2)
    wrapped, optimizer = fabric.setup(model, optimizer)
    trainer = Trainer(method, method.scenario, None, ctx)
    batch = random_batch(16)
    before = copy.deepcopy(model.state_dict())
    method.frozen = True  # the first session is over: training_step returns {}
    assert trainer.step(wrapped, optimizer, batch, "test") == 0.0
    inner = getattr(optimizer, "optimizer", optimizer)
    assert calls == [] and not inner.state and all(p.grad is None for p in model.parameters())
    assert _same(model.state_dict(), before)
    method.frozen = False
    assert trainer.step(wrapped, optimizer, batch, "test") > 0
    assert calls == ["after_backward", "after_step"] and not _same(model.state_dict(), before)


def test_clavs_methods_lists_their_family_and_that_they_store_no_data(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│ ") and line.split("│")[1].strip()}
    for name in ("ranpac", "fecam"):  # family, stores data (statistics only), every protocol
        assert "(1) exemplar-free CL adapted to AVS" in rows[name], rows[name]
        assert "│ no " in rows[name] and "til,cil,dil,tfcl" in rows[name], rows[name]


# ================================================================== C. end to end (SynthAVS smoke)

MASK_METRICS = tuple(SEGMENTATION_METRICS)


@pytest.mark.parametrize("protocol", ["til", "cil", "dil", "tfcl"])
@pytest.mark.parametrize("method", ["ranpac", "fecam"])
def test_runs_in_every_protocol_with_zero_forgetting(smoke_run, method, protocol):
    path = smoke_run(method, protocol)  # a stream: the first session is its first task (told its end)
    T = check_finished(path, method, 3 if protocol == "tfcl" else None)
    summary = read_json(path, "summary.json")
    for name in MASK_METRICS + (("acc",) if protocol == "til" else ()):
        assert summary[name]["forgetting"] == 0.0 and summary[name]["bwt"] == 0.0, name
    matrices = read_json(path, "matrices.json")["metrics"]
    for name in MASK_METRICS:
        R = matrices[name]["R"]
        assert all(R[t][j] == R[j][j] for j in range(T) for t in range(j, T)), name
    checkpoints = [torch.load(path / "checkpoints" / f"task_{t}.pt", map_location="cpu", weights_only=True) for t in range(T)]
    first, last = checkpoints[0], checkpoints[-1]
    assert _unchanged(first["model"], last["model"])  # no weight moved after the first session
    assert last["method"]["frozen"] and last["method"]["mask_heads"]
    tasks = read_json(path, "profile.json")["tasks"]
    if protocol != "tfcl":
        assert tasks[0]["steps"] > 0 and all(t["steps"] == 0 and t["trainable_parameters"] == 0 for t in tasks[1:])
    else:
        assert sum(t["steps"] for t in tasks) == checkpoints[-1]["loop"]["step"]  # the stream kept counting
