"""DGR (methods/dgr.py) and PANDA (methods/panda.py): their mechanisms on a tiny network against
independent oracles (hand-computed weights, a numpy transcription of the original code, full backward
passes of single terms), then smoke runs of both in every protocol."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from method_helpers import check_finished, fake_ctx, random_batch, tiny_plain

from clavs.batch import Batch, clip_class_logits
from clavs.methods.dgr import DGR, dakd, dgr_row_weights, normalized_entropy
from clavs.methods.panda import Panda, graft
from clavs.protocols.scenario import Task


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread per module


# ------------------------------------------------------------------ builders
def class_scenario(protocol: str = "cil", groups=((0, 1, 2), (3, 4)), clips=(6, 4)):
    """Tasks introducing `groups` of classes, with `clips` training clips each."""
    tasks, seen, start = [], 0, 0
    for i, (group, n) in enumerate(zip(groups, clips)):
        seen += len(group)
        tasks.append(Task(id=i, name=f"t{i}", classes=[f"c{c}" for c in group], class_indices=list(group),
                          train=list(range(start, start + n)), val=[], test=[], task_id_visible=protocol == "til",
                          label_space=list(group) if protocol == "til" else list(range(seen)), num_seen_classes=seen))
        start += n
    return types.SimpleNamespace(protocol=protocol, has_class_head=protocol in ("til", "cil"), tasks=tasks,
                                 class_order=[f"c{c}" for c in range(seen)])


def labelled(seed: int, labels, task_id: int = -1) -> Batch:
    batch = random_batch(seed, b=len(labels), task_id=task_id)
    batch.class_index = torch.tensor(labels, dtype=torch.long)
    return batch


def ctx_with(data: list[Batch], seed: int = 0):
    ctx = fake_ctx()
    ctx.data = lambda split: iter(data)
    ctx.config = {"seed": seed}
    return ctx


def dgr_for(protocol: str, **model_kw):
    scenario = class_scenario(protocol)
    model = tiny_plain(seed=5, use_class_head=scenario.has_class_head, task_heads=protocol == "til", **model_kw)
    return DGR(model, DGR.Hparams(), scenario, ctx_with([])), model, scenario


def original_weights(G: np.ndarray, n_old: int, gamma: float) -> np.ndarray:
    """The original's arithmetic (imbalanced_cil DGR.train_epoch), transcribed to numpy."""
    if n_old == 0:
        return np.min(G) / G
    old, new = G[:n_old], G[n_old:]
    w = np.concatenate([np.min(old) / old, np.min(new) / new])
    rs_old = min(1.0, np.mean(new) / np.mean(old))
    rs_new = min(1.0, np.mean(new) / np.mean(old) * gamma)
    w[:n_old] *= rs_old
    w[n_old:] *= rs_new
    return w


# ================================================================== DGR
def test_dgr_weights_follow_the_formula_on_hand_made_gradient_norms():
    # task t > 0: old rows 0..2 with G = 4, 2, 1; new rows with G = 3, 6; gamma = 1/2.
    # old: min/G = 1/4, 1/2, 1; new: 1, 1/2; mean_new / mean_old = 4.5 / (7/3) = 27/14
    # rs_old = min(1, 27/14) = 1; rs_new = min(1, 27/28) = 27/28
    G = torch.tensor([4.0, 2.0, 1.0, 3.0, 6.0], dtype=torch.float64)
    expected = [1 / 4, 1 / 2, 1.0, 27 / 28, 27 / 56]
    torch.testing.assert_close(dgr_row_weights(G, 3, 0.5, 1e-12), torch.tensor(expected, dtype=torch.float64))
    # new rows' gradients smaller than the old ones: the old group is damped too, rs = 1.5 / 6 = 1/4
    G = torch.tensor([8.0, 4.0, 2.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(dgr_row_weights(G, 2, 1.0, 1e-12),
                               torch.tensor([1 / 8, 1 / 4, 1 / 8, 1 / 4], dtype=torch.float64))
    # task 0: one group, min/G
    torch.testing.assert_close(dgr_row_weights(torch.tensor([2.0, 4.0, 8.0]), 0, 0.3, 1e-12),
                               torch.tensor([1.0, 0.5, 0.25]))
    rng = np.random.default_rng(0)
    for n_old in (0, 3, 7):
        G = rng.uniform(0.1, 5.0, size=11)
        gamma = float(np.exp(-rng.uniform()))
        torch.testing.assert_close(dgr_row_weights(torch.from_numpy(G), n_old, gamma, 1e-12),
                                   torch.from_numpy(original_weights(G, n_old, gamma)))


def test_dgr_never_divides_by_zero_without_old_samples():
    G = np.array([0.0, 0.0, 0.0, 3.0, 6.0])  # exemplar-free: no old-class sample ever gives a CE gradient
    with np.errstate(divide="ignore", invalid="ignore"):
        assert np.isnan(original_weights(G, 3, 0.5)).any()  # what the original computes
    w = dgr_row_weights(torch.from_numpy(G), 3, 0.5, 1e-8)
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 1.0, 1.0, 0.5], dtype=torch.float64))
    assert torch.isfinite(dgr_row_weights(torch.zeros(4), 0, 1.0, 1e-8)).all()
    assert normalized_entropy(torch.tensor([7.0])) == 1.0  # one old class: the original divides by log 1


def _numpy_dakd(pred, soft, counts, T):
    """imbalanced_cil's _DAKD and measure_imbalance, in numpy (a cross-entropy)."""
    c = counts + 0.001
    n = c.sum()
    ratio = -sum((x / n) * np.log(x / n) for x in c) / np.log(len(c))
    prior = counts / counts.sum()
    prior = prior / np.linalg.norm(prior)
    mixed = pred * prior + soft * (1 - prior)

    def log_softmax(x):
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))

    q = np.exp(log_softmax(soft / T))
    p_final = ratio * log_softmax(pred / T) + (1 - ratio) * log_softmax(mixed / T)
    return -(q * p_final).sum() / pred.shape[0], -(q * np.log(q)).sum() / pred.shape[0]


def test_dakd_is_the_original_minus_the_teacher_entropy():
    g = torch.Generator().manual_seed(3)
    student = (torch.randn(4, 5, generator=g) * 2).double()
    teacher = (torch.randn(4, 5, generator=g) * 2).double()
    counts = torch.tensor([30.0, 5.0, 12.0, 1.0, 8.0])
    ce, entropy = _numpy_dakd(student.numpy(), teacher.numpy(), counts.numpy().astype(float), 2.0)
    got = dakd(student, teacher, counts, 2.0)
    assert got.item() == pytest.approx(ce - entropy, rel=1e-5)
    assert got.item() > 0
    # at student == teacher (a task's first step) the value and the gradient are round-off, far below
    # eps: DGR's rescaling of the KD gradient to the CE's size must not amplify them
    student = teacher.float().clone().requires_grad_()
    at_teacher = dakd(student, teacher.float(), counts, 2.0)
    (grad,) = torch.autograd.grad(at_teacher, student)
    assert abs(at_teacher.item()) < 1e-7 and grad.abs().max() < 1e-12


def _term_grad(terms, name, param):
    """d terms[name] / d param by a full backward of that term alone (an independent route)."""
    param.grad = None
    terms[name].backward(retain_graph=True)
    grad = param.grad.clone()
    param.grad = None
    return grad


def _step_with_oracle(method, model, batch, names):
    """The engine's step up to after_backward, plus each named term's own gradient of the class head."""
    model.train()
    model.zero_grad(set_to_none=True)
    terms = method.training_step(batch, model)
    W, b = model.class_head.weight, model.class_head.bias
    oracle = {n: (_term_grad(terms, n, W), _term_grad(terms, n, b)) for n in names}
    model.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    trunk = model.fusion.mlp[0].weight.grad.clone()
    method.after_backward()
    return terms, oracle, trunk


def test_dgr_reweights_the_class_rows_as_the_formula_says():
    method, model, scenario = dgr_for("cil")
    t0, t1 = scenario.tasks
    data0 = [labelled(1, [0, 1, 2, 0, 0, 1])]
    method.ctx.data = lambda split: iter(data0)
    method.begin_task(t0)
    assert model.num_classes == 3

    # task 0: the CE gradient, checked analytically, rows scaled by min(G) / G
    batch = labelled(2, [0, 1, 2, 0])
    terms, oracle, trunk = _step_with_oracle(method, model, batch, ["ce"])
    with torch.no_grad():
        out = model(batch)
        prior = torch.tensor([3.0, 2.0, 1.0]) / 6
        probs = F.softmax(clip_class_logits(out.class_logits, 4) + prior.log(), -1)
        pooled = out.features["pooled"].reshape(4, -1, out.features["pooled"].shape[-1]).mean(1)
        analytic = (probs - F.one_hot(batch.class_index, 3)).T @ pooled / 4
    g_w, g_b = oracle["ce"]
    torch.testing.assert_close(g_w, analytic, rtol=1e-4, atol=1e-6)
    G = g_w.norm(dim=1)
    torch.testing.assert_close(method.G, G)
    w = G.min() / G
    torch.testing.assert_close(model.class_head.weight.grad, w[:, None] * g_w)
    torch.testing.assert_close(model.class_head.bias.grad, w * g_b)
    assert "dgr_kd_class" not in terms

    # task 1: old and new groups, the KD gradient brought to the size of the reweighted CE gradient
    model.eval()
    method.end_task(t0, data0)
    data1 = [labelled(3, [3, 4, 3, 3])]
    method.ctx.data = lambda split: iter(data1)
    method.begin_task(t1)
    with torch.no_grad():  # the student moves away from the teacher (else the KD gradient is 0)
        model.class_head.weight.add_(torch.randn(model.class_head.weight.shape, generator=torch.Generator().manual_seed(4)) * 0.3)
    G_sum = torch.zeros(5)
    for step, labels in enumerate(([3, 4, 3], [4, 4, 3])):
        batch = labelled(10 + step, labels)
        terms, oracle, trunk = _step_with_oracle(method, model, batch, ["ce", "dgr_kd_class"])
        (ce_w, ce_b), (kd_w, kd_b) = oracle["ce"], oracle["dgr_kd_class"]
        assert kd_w[3:].abs().max() == 0  # distillation touches the old rows only
        G_sum += ce_w.norm(dim=1)
        n_seen, n_new = 6, 4
        gamma = math.exp(-n_seen / (n_seen + n_new))
        w = torch.from_numpy(original_weights(G_sum.double().numpy(), 3, gamma)).float()
        r = (w * ce_w.norm(dim=1)).norm() / kd_w.norm(dim=1).norm()
        torch.testing.assert_close(model.class_head.weight.grad, w[:, None] * ce_w + r * kd_w, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(model.class_head.bias.grad, w * ce_b + r * kd_b, rtol=1e-4, atol=1e-7)
        # the rest of the network keeps the summed terms' gradient
        assert torch.isfinite(trunk).all() and torch.equal(model.fusion.mlp[0].weight.grad, trunk)
    assert terms["dgr_kd_class"].item() > 0
    expected_w = 2.0 ** 2 * 0.7 * math.sqrt(6 / 4)
    assert method.kd_weight() == pytest.approx(expected_w)


@pytest.mark.parametrize("protocol", ["cil", "til"])
def test_dgr_with_zero_old_class_samples_keeps_every_gradient_finite(protocol):
    method, model, scenario = dgr_for(protocol)
    t0, t1 = scenario.tasks
    data = [labelled(1, [0, 1, 2, 0, 1, 2], task_id=0)]
    method.ctx.data = lambda split: iter(data)
    method.begin_task(t0)
    opt = torch.optim.AdamW(method.param_groups(1e-2, 0.0))
    for step in range(2):
        batch = labelled(20 + step, [0, 1, 2], task_id=0)
        loss = sum(method.training_step(batch, model).values())
        opt.zero_grad()
        loss.backward()
        method.after_backward()
        opt.step()
    model.eval()
    method.end_task(t0, data)
    new_data = [labelled(2, [3, 4, 3, 4], task_id=1)]
    method.ctx.data = lambda split: iter(new_data)
    method.begin_task(t1)
    assert torch.isfinite(method.log_prior(torch.device("cpu"))).all()
    opt = torch.optim.AdamW(method.param_groups(1e-2, 0.0))
    for step in range(3):  # batches of new classes only; at step 0 the student equals the teacher
        model.train()
        batch = labelled(30 + step, [3, 4, 3], task_id=1)
        terms = method.training_step(batch, model)
        if step == 0:
            assert terms["dgr_kd_mask"].item() == 0.0
        opt.zero_grad()
        sum(terms.values()).backward()
        method.after_backward()
        for name, p in model.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name
        opt.step()
    if protocol == "til":  # the task's classes only: the old rows never get a CE gradient
        assert method.G[:3].abs().max() == 0 and (method.G[3:] > 0).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _mask_head_grads(model):
    heads = model.mask_heads if model.mask_heads is not None else [model.decoder.head]
    return [[p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in h.parameters()] for h in heads]


def _flat_norm(grads):
    return torch.sqrt(sum(g.pow(2).sum() for g in grads))


@pytest.mark.parametrize("protocol", ["dil", "til"])
def test_dgr_balances_the_mask_distillation_on_the_mask_heads(protocol):
    """No class rows (DIL) or per-task mask heads (TIL): the KD gradient of the mask head(s) is brought to
    the size of the segmentation gradient; the rest of the network keeps the summed gradient."""
    method, model, scenario = dgr_for(protocol)
    t0, t1 = scenario.tasks
    task_id = 1 if protocol == "til" else -1
    method.begin_task(t0)
    model.eval()
    method.end_task(t0, [])
    method.begin_task(t1)
    heads = model.mask_heads if model.mask_heads is not None else [model.decoder.head]
    with torch.no_grad():
        for p in heads[0].parameters():  # move the (old) head away from the teacher's
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(6)) * 0.2)
    model.train()
    batch = labelled(7, [3, 4, 3], task_id=task_id)
    terms = method.training_step(batch, model)
    if protocol == "dil":
        assert set(terms) == {"bce", "dice", "dgr_kd_mask"}
    params = [p for h in heads for p in h.parameters()]
    seg = torch.autograd.grad(terms["bce"] + terms["dice"], params, retain_graph=True, allow_unused=True)
    kd = torch.autograd.grad(terms["dgr_kd_mask"], params, retain_graph=True, allow_unused=True)
    seg = [torch.zeros_like(p) if g is None else g for p, g in zip(params, seg)]
    kd = [torch.zeros_like(p) if g is None else g for p, g in zip(params, kd)]
    model.zero_grad(set_to_none=True)
    sum(terms.values()).backward()
    trunk = model.fusion.mlp[0].weight.grad.clone()
    method.after_backward()
    r = _flat_norm(seg) / _flat_norm(kd)
    got = [g for h in _mask_head_grads(model) for g in h]
    for g, s, k in zip(got, seg, kd):
        torch.testing.assert_close(g, s + r * k)
    torch.testing.assert_close(_flat_norm([r * k for k in kd]), _flat_norm(seg))
    assert torch.equal(model.fusion.mlp[0].weight.grad, trunk)
    if protocol == "til":  # the current head learns the task, the old head 0 is distilled only
        old, current = _mask_head_grads(model)
        assert _flat_norm(kd[: len(old)]) > 0 and _flat_norm(seg[: len(old)]) == 0
        torch.testing.assert_close(_flat_norm(old), _flat_norm(current))


def test_dgr_counts_clips_of_a_task_free_stream_and_resumes_its_state():
    method, model, _ = dgr_for("dil")
    method.ctx.task_free = True
    method.begin_task(None)
    for i in range(3):
        b = random_batch(40 + i, b=3)
        b.index = torch.tensor([i, i + 1, i + 2])  # overlapping windows: 5 distinct clips
        method.training_step(b, model)
    method.consolidate([])
    assert (method.seen_clips, method.last_period_clips, method.period) == (5, 5, set())
    method.training_step(random_batch(50, b=2), model)
    method.consolidate([])
    assert method.clip_counts() == (7, 2)
    assert method.kd_weight() == pytest.approx(4 * 0.7 * math.sqrt(7 / 2))
    restored, _, _ = dgr_for("dil")
    restored.load_state_dict(method.state_dict())
    assert restored.clip_counts() == (7, 2) and restored.teacher.ready


# ================================================================== PANDA
def _distinct_batch(labels, t: int = 3, size: int = 8):
    """Clips whose frames, audio and masks differ; ground truth on frame 1 only (S4 training)."""
    b = len(labels)
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(b, t, 3, size, size, generator=g)
    masks = (torch.rand(b, t, 1, size, size, generator=g) > 0.5).float()
    valid = torch.zeros(b, t, dtype=torch.bool)
    valid[:, 1] = True
    return Batch(frames=frames, audio=torch.randn(b, t, 4, generator=g), masks=masks, mask_valid=valid,
                 class_index=torch.tensor(labels), task_id=torch.zeros(b, dtype=torch.long), index=torch.arange(b))


def test_graft_carries_the_donors_object_mask_audio_and_class_onto_the_recipients_background():
    batch = _distinct_batch([0, 1, 2])
    out = graft(batch, torch.tensor([0, 0]), torch.tensor([2, 1]))
    assert out.size == 2
    for k, recipient in enumerate((2, 1)):
        for field in ("audio", "masks", "mask_valid", "class_index", "task_id", "index"):
            assert torch.equal(getattr(out, field)[k], getattr(batch, field)[0]), field
        inside = batch.masks[0, 1, 0].bool()
        labelled_frame = out.frames[k, 1]
        assert torch.equal(labelled_frame[:, inside], batch.frames[0, 1][:, inside])  # the donor's object
        assert torch.equal(labelled_frame[:, ~inside], batch.frames[recipient, 1][:, ~inside])  # recipient's pixels
        for f in (0, 2):  # frames without the donor's ground truth: the donor's own frame
            assert torch.equal(out.frames[k, f], batch.frames[0, f])


def panda_for(scenario=None, seed: int = 0, **hparams):
    scenario = scenario or class_scenario("cil", groups=((0, 1, 2),), clips=(6,))
    return Panda(tiny_plain(seed=1, use_class_head=scenario.has_class_head), Panda.Hparams(**hparams), scenario, ctx_with([], seed=seed))


def test_panda_appends_grafts_with_the_donors_labels():
    method = panda_for(max_graft_fraction=10.0)
    method.begin_task(method.scenario.tasks[0])
    method.counts[:3] = torch.tensor([0.0, 8.0, 8.0])  # with this batch: class 0 is rare
    batch = _distinct_batch([0, 0, 1, 1, 2, 2])
    out = method.augment_batch(batch)
    assert out.size > batch.size and method.grafts == out.size - batch.size
    for field in ("frames", "audio", "masks", "class_index"):
        assert torch.equal(getattr(out, field)[: batch.size], getattr(batch, field))  # real clips kept
    grafted = out.select(list(range(batch.size, out.size)))
    assert (grafted.class_index == 0).all()  # only the rare class donates
    for k in range(grafted.size):
        donor = [i for i in range(batch.size) if torch.equal(batch.audio[i], grafted.audio[k])]
        assert len(donor) == 1 and batch.class_index[donor[0]] == 0
        assert torch.equal(grafted.masks[k], batch.masks[donor[0]])


def test_panda_under_represented_classes_donate_more_often_and_frequent_ones_receive():
    method = panda_for(max_graft_fraction=10.0)
    method.begin_task(method.scenario.tasks[0])
    batch = _distinct_batch([0, 0, 1, 1, 2, 2])
    # with the batch counted: n = 4, 10, 16 -> r = 0.4, 1, 1.6; M = 1.6 -> q = 3, 0.6, 0 per clip
    donors_per_class, recipients_per_class = torch.zeros(3), torch.zeros(3)
    steps = 300
    for step in range(steps):
        method.counts[:3] = torch.tensor([2.0, 8.0, 14.0])
        donors, recipients = method.choose(batch, torch.Generator().manual_seed(step))
        donors_per_class += torch.bincount(batch.class_index[donors], minlength=3)
        if step == 0:
            assert (batch.class_index[donors] != batch.class_index[recipients]).all()
        recipients_per_class += torch.bincount(batch.class_index[recipients[batch.class_index[donors] == 0]], minlength=3)
    assert donors_per_class[0] == 2 * 3 * steps  # integer q: exactly 3 grafts per clip of class 0
    assert donors_per_class[1] / steps == pytest.approx(2 * 0.6, abs=0.12)
    assert donors_per_class[2] == 0
    # a class-0 object goes onto class 1 or 2 backgrounds in proportion to their r (1 : 1.6)
    assert recipients_per_class[0] == 0
    assert recipients_per_class[2] / recipients_per_class[1:].sum() == pytest.approx(1.6 / 2.6, abs=0.03)


def test_panda_grafts_nothing_in_a_balanced_task_unless_the_previous_task_was_skewed():
    method = panda_for()
    method.begin_task(method.scenario.tasks[0])
    batch = _distinct_batch([0, 1, 2, 0, 1, 2])
    assert method.augment_batch(batch) is batch  # balanced: M - m = 0 <= q
    method.prior = (0.5, 2.0)  # the previous task's min and max ratio
    assert method.bounds() == pytest.approx((0.75, 1.5))  # beta = 0.5
    assert method.augment_batch(batch).size > batch.size
    method.counts[:3] = torch.tensor([2.0, 4.0, 6.0])
    method.end_task(method.scenario.tasks[0], [])
    assert method.prior == pytest.approx((0.5, 1.5))


def test_panda_without_classes_grafts_uniformly_into_other_clips():
    scenario = types.SimpleNamespace(protocol="tfcl", has_class_head=False, tasks=[], class_order=["a", "b"])
    method = panda_for(scenario)
    method.begin_task(None)
    batch = _distinct_batch([-1] * 8)
    per_clip = torch.zeros(8)
    for step in range(400):
        donors, recipients = method.choose(batch, torch.Generator().manual_seed(step))
        assert (donors != recipients).all()
        per_clip += torch.bincount(donors, minlength=8)
    assert (per_clip / 400 - 0.25).abs().max() < 0.08  # classless_graft_fraction, the same for every clip
    assert method.counts.sum() == 0


def test_panda_grafts_are_drawn_from_the_run_seed_and_step_so_a_resume_repeats_them():
    def run(method, steps):
        return [method.augment_batch(_distinct_batch([0, 0, 0, 1, 2, 2])) for _ in range(steps)]

    first = panda_for(seed=3)
    first.begin_task(first.scenario.tasks[0])
    run(first, 2)
    state = first.state_dict()
    ahead = run(first, 3)
    resumed = panda_for(seed=3)
    resumed.begin_task(resumed.scenario.tasks[0])
    resumed.load_state_dict(state)
    again = run(resumed, 3)
    assert any(b.size > 6 for b in ahead)
    for a, b in zip(ahead, again):
        assert a.size == b.size and torch.equal(a.frames, b.frames) and torch.equal(a.audio, b.audio)
    other = panda_for(seed=4)
    other.begin_task(other.scenario.tasks[0])
    run(other, 2)
    assert any(a.size != b.size or not torch.equal(a.frames, b.frames) for a, b in zip(ahead, run(other, 3)))


# ================================================================== end to end
@pytest.mark.parametrize("protocol", ["til", "cil", "dil", "tfcl"])
@pytest.mark.parametrize("method", ["dgr", "panda"])
def test_dgr_and_panda_run_to_done_in_every_protocol(smoke_run, method, protocol):
    extra = ("method.consolidate_every=2",) if protocol == "tfcl" and method == "dgr" else ()
    path = smoke_run(method, protocol, *extra)
    T = check_finished(path, method, 3 if protocol == "tfcl" else None)
    state = torch.load(path / "checkpoints" / f"task_{T - 1}.pt", map_location="cpu", weights_only=True)["method"]
    if method == "dgr":
        assert state["teacher"] and state["seen_clips"] > 0
    else:
        assert state["grafts"] > 0
