"""The exemplar-free methods (LwF, EWC, SI, MAS, ATLAS's LRA) and their shared parts: mechanism tests on
a tiny network (methods/parts/*), then end-to-end smoke runs of every method in every protocol."""

from __future__ import annotations

import copy
import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from method_helpers import (
    check_finished,
    engine_step,
    fake_ctx,
    fake_scenario,
    make_method,
    make_task,
    random_batch,
    read_json,
    tiny_atlas,
    tiny_plain,
)
from torch import nn

from clavs.methods.atlas import Atlas, AtlasHparams
from clavs.methods.ewc import EWC
from clavs.methods.finetune import Finetune
from clavs.methods.lwf import LwF, binary_distillation, class_distillation
from clavs.methods.mas import MAS
from clavs.methods.parts import (
    PathIntegral,
    RunningMoments,
    fisher_diagonal,
    output_sensitivity,
)
from clavs.methods.si import SI, PathIntegralMethod
from clavs.results.aggregate import aggregate


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, as the smoke preset's engine.threads=1: these tiny networks gain nothing from
    more, and lose a lot when the cores are shared (OpenMP threads spin-waiting for each other)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _perturb(named, seed: int, std: float) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in named:
            p.add_(torch.randn(p.shape, generator=g) * std)


def _adamw(method, lr: float = 1e-2):
    return torch.optim.AdamW(method.param_groups(lr, 0.0), lr=lr, weight_decay=0.0)


# ================================================================== A. mechanisms on a tiny network

# ------------------------------------------------------------------ 1. LwF
def test_binary_distillation_is_zero_for_equal_logits_and_the_bernoulli_kl_otherwise():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 1, 8, 8, generator=g) * 3
    other = torch.randn(4, 1, 8, 8, generator=g) * 3
    for T in (1.0, 2.0, 5.0):
        assert binary_distillation(z, z, T).item() == 0.0
        got = binary_distillation(other, z, T)  # student `other`, teacher `z`
        assert got.item() > 0
        p, q = torch.sigmoid(z / T), torch.sigmoid(other / T)
        kl = p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())
        torch.testing.assert_close(got, kl.mean(), rtol=1e-4, atol=1e-6)


def test_class_distillation_is_zero_for_equal_logits_and_the_softmax_kl_otherwise():
    g = torch.Generator().manual_seed(1)
    c = torch.randn(5, 7, generator=g) * 2
    other = torch.randn(5, 7, generator=g) * 2
    for T in (1.0, 2.0):
        assert class_distillation(c, c, T).item() == 0.0
        got = class_distillation(other, c, T)
        assert got.item() > 0
        p, q = F.softmax(c / T, -1), F.softmax(other / T, -1)
        torch.testing.assert_close(got, (p * (p.log() - q.log())).sum(-1).mean(), rtol=1e-5, atol=1e-6)


def test_lwf_teacher_is_a_frozen_copy_refreshed_only_at_consolidation():
    model = tiny_plain(seed=0)
    method = make_method(LwF, model)
    method.begin_task(make_task(0))
    batch = random_batch(10)
    model.train()
    assert "lwf_mask" not in method.training_step(batch, model)  # no teacher before the first task ends

    opt = _adamw(method)
    for _ in range(2):
        engine_step(method, opt, batch)
    model.eval()
    method.end_task(make_task(0), [batch])  # default end_task: consolidate
    at_refresh = {k: v.clone() for k, v in model.state_dict().items()}
    teacher = method.teacher.net
    assert teacher is not model and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert _state_equal(teacher.state_dict(), at_refresh)

    # Right after consolidation student == teacher: the distillation term is exactly zero.
    method.begin_task(make_task(1))
    model.train()
    terms = method.training_step(batch, model)
    assert terms["lwf_mask"].item() == 0.0

    opt = _adamw(method)
    for i in range(3):
        engine_step(method, opt, random_batch(20 + i))
    assert not _state_equal(model.state_dict(), at_refresh)  # the student moved ...
    assert _state_equal(method.teacher.net.state_dict(), at_refresh)  # ... the teacher did not
    assert method.training_step(batch, model)["lwf_mask"].item() > 0

    method.consolidate([batch])  # the next refresh follows the student
    assert _state_equal(method.teacher.net.state_dict(), model.state_dict())


def test_lwf_multi_head_til_distils_the_old_head_and_is_zero_right_after_consolidation():
    model = tiny_plain(seed=3, task_heads=True)
    method = LwF(model, LwF.Hparams(), fake_scenario(protocol="til"), fake_ctx())
    method.begin_task(make_task(0))
    method.consolidate(None)
    method.begin_task(make_task(1))
    assert model.num_task_heads == 2 and method.teacher.net.num_task_heads == 1
    model.train()
    terms = method.training_step(random_batch(4, task_id=1), model)
    assert terms["lwf_mask"].item() == 0.0  # old head 0 of student and teacher are identical
    _perturb(model.mask_heads[0].named_parameters(), seed=9, std=0.5)
    assert method.training_step(random_batch(4, task_id=1), model)["lwf_mask"].item() > 0


# ------------------------------------------------------------------ 2. EWC
def _manual_fisher(method, data) -> dict[str, torch.Tensor]:
    params = method.anchor.params
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    count = 0
    for batch in data:
        for i in range(batch.size):
            clip = batch.select([i])
            loss = sum(method.task_loss(clip, method.model(clip)).values())
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for n, g in zip(params, grads):
                if g is not None:
                    sums[n] += g.pow(2)
            count += 1
    return {n: s / count for n, s in sums.items()}


def test_ewc_fisher_is_the_mean_squared_clip_gradient_and_penalty_pulls_back_to_the_anchor():
    model = tiny_plain(seed=1)
    lam = 50.0
    method = make_method(EWC, model, ewc_lambda=lam)
    method.begin_task(make_task(0))
    data = [random_batch(1), random_batch(2)]
    model.eval()
    method.consolidate(data)
    fisher = method.anchor.importance

    expected = _manual_fisher(method, data)
    for n in fisher:
        torch.testing.assert_close(fisher[n], expected[n], rtol=1e-4, atol=1e-10)
        assert bool((fisher[n] >= 0).all()), n
    for n, p in model.named_parameters():
        if n.startswith(("decoder.", "fusion.")) and n.endswith("weight"):
            assert fisher[n].sum() > 0, f"{n}: the loss depends on it, its Fisher must not be zero"

    # At the anchor the penalty is exactly zero; moved away it is positive and pulls back.
    assert method.anchor.penalty().item() == 0.0
    assert method.training_step(data[0], model)["ewc"].item() == 0.0
    anchor = {n: t.clone() for n, t in method.anchor.anchor.items()}
    _perturb(model.named_parameters(), seed=7, std=0.05)
    penalty = method.anchor.penalty()
    assert penalty.item() > 0
    names, params = zip(*method.anchor.params.items())
    grads = torch.autograd.grad(lam * penalty, params)
    dot = sum((-g * (anchor[n] - p.detach())).sum() for n, p, g in zip(names, params, grads))
    assert dot.item() > 0
    for n, p, g in zip(names, params, grads):
        torch.testing.assert_close(g, 2 * lam * fisher[n] * (p.detach() - anchor[n]))
    assert method.training_step(data[0], model)["ewc"].item() == pytest.approx(lam * penalty.item(), rel=1e-5)


@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_ewc_online_fisher_accumulates(gamma):
    model = tiny_plain(seed=2)
    method = make_method(EWC, model, gamma=gamma)
    method.begin_task(make_task(0))
    model.eval()
    method.consolidate([random_batch(3)])
    before = {n: t.clone() for n, t in method.anchor.importance.items()}
    method.begin_task(make_task(1))  # rebinds the anchor: importance kept
    assert _state_equal(method.anchor.importance, before)
    _perturb(model.named_parameters(), seed=8, std=0.02)  # task 1 "trained"
    data = [random_batch(4)]
    new = fisher_diagonal(model, data, method.anchor.params, method.task_loss)
    method.consolidate(data)
    for n, imp in method.anchor.importance.items():
        torch.testing.assert_close(imp, gamma * before[n] + new[n])
        assert torch.equal(method.anchor.anchor[n], method.anchor.params[n].detach())  # anchors moved to now
    assert sum(float(v.sum()) for v in new.values()) > 0


# ------------------------------------------------------------------ 3. SI
def _si_setup(seed: int = 4, **hp):
    model = tiny_plain(seed=seed)
    method = make_method(SI, model, **hp)
    method.begin_task(make_task(0))
    model.train()
    visual = {id(p) for _, p in model.named_parameter_groups()["visual"]}
    moving = [p for p in method.trainable_parameters() if id(p) not in visual]
    return model, method, visual, moving


def test_si_path_integral_grows_along_the_trajectory_and_omega_is_zero_where_nothing_moved():
    xi = 1e-6  # small: the normaliser's delta^2 dominates it
    model, method, visual, moving = _si_setup(xi=xi)
    lr = 0.05
    opt = torch.optim.SGD(moving, lr=lr)  # the visual encoder gets gradients but never moves
    path = method.path
    assert all(float(w.abs().sum()) == 0 for w in path.path().values())
    start = {n: p.detach().clone() for n, p in path.params.items()}
    batch = random_batch(30)
    totals = [0.0]
    for step in range(4):
        w_before = path.path_snapshot()
        engine_step(method, opt, batch)
        w_after = path.path_snapshot()
        for n, p in path.params.items():
            # plain SGD: dtheta = -lr g, so w += -g dtheta = lr g^2 >= 0 elementwise
            assert bool((w_after[n] >= w_before[n]).all()), n
            if id(p) not in visual and p.grad is not None:
                torch.testing.assert_close(w_after[n] - w_before[n], lr * p.grad.pow(2), rtol=1e-4, atol=1e-9)
        totals.append(sum(float(w.sum()) for w in w_after.values()))
    assert all(b > a for a, b in itertools.pairwise(totals)), totals

    w = path.path_snapshot()
    delta = {n: p.detach() - start[n] for n, p in path.params.items()}
    method.consolidate(None)
    omega = path.omega
    for n, p in path.params.items():
        assert bool((omega[n] >= 0).all()), n
        torch.testing.assert_close(omega[n], torch.relu(w[n]) / (delta[n].pow(2) + xi), rtol=1e-5, atol=1e-12)
        if id(p) in visual:
            assert float(omega[n].abs().sum()) == 0.0, f"{n} never moved: Omega must be 0"
    assert sum(float(o.sum()) for n, o in omega.items() if id(path.params[n]) not in visual) > 0
    # consolidation starts a new period: the path restarts from zero, anchored at the current weights
    assert all(float(v.abs().sum()) == 0 for v in path.path().values())
    assert method.training_step(batch, model)["si"].item() == 0.0


def test_si_path_integral_grows_with_adam_too():
    _, method, _, _ = _si_setup(seed=5)
    opt = torch.optim.Adam(method.trainable_parameters(), lr=1e-3)
    batch = random_batch(31)
    totals = []
    for _ in range(6):
        engine_step(method, opt, batch)
        totals.append(sum(float(w.sum()) for w in method.path.path().values()))
    assert totals[0] > 0 and totals[-1] > totals[1] > 0, totals
    method.consolidate(None)
    assert all(bool((o >= 0).all()) for o in method.path.omega.values())


def test_si_steps_that_raise_the_loss_give_no_importance():
    _, method, _, _ = _si_setup(seed=5)
    opt = torch.optim.SGD(method.trainable_parameters(), lr=1e-2, maximize=True)  # uphill: w = -lr g^2 <= 0
    for i in range(3):
        engine_step(method, opt, random_batch(32 + i))
    assert sum(float(w.sum()) for w in method.path.path().values()) < 0
    method.consolidate(None)
    assert all(float(o.abs().sum()) == 0.0 for o in method.path.omega.values())  # Omega = relu(w) / ...


def test_si_records_the_task_loss_gradient_without_the_penalty_share():
    model, method, visual, moving = _si_setup(seed=6, si_c=50.0, xi=1e-3)
    opt = torch.optim.SGD(moving, lr=0.05)
    for i in range(3):
        engine_step(method, opt, random_batch(40 + i))
    method.consolidate(None)
    assert method.path.anchors.active
    _perturb([(n, p) for n, p in model.named_parameters() if id(p) not in visual], seed=11, std=0.05)
    batch = random_batch(50)

    method.trainable_parameters()  # requires_grad as in training
    terms = method.training_step(batch, model)
    assert terms["si"].item() > 0
    for p in model.parameters():
        p.grad = None
    sum(terms.values()).backward()
    raw = {n: p.grad.clone() for n, p in method.path.params.items() if p.grad is not None}
    method.after_backward()
    recorded = {n: g.clone() for n, g in method.path._grad.items()}

    for p in model.parameters():
        p.grad = None
    sum(method.task_loss(batch, model(batch)).values()).backward()
    task_only = {n: p.grad.clone() for n, p in method.path.params.items() if p.grad is not None}

    assert recorded.keys() == task_only.keys() and recorded
    # The test can fail: the penalty does contribute a visible share of the raw gradient.
    assert max(float((raw[n] - task_only[n]).abs().max()) for n in raw) > 1e-3
    for n, g in recorded.items():
        torch.testing.assert_close(g, task_only[n], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ 4. MAS
class _MASWithUnused(MAS):
    """MAS that also protects a method-owned module the network's output does not depend on."""

    trains = MAS.trains + ("unused",)

    def anchored_parameters(self):
        # EWC builds its anchor in __init__, before a subclass can register a module; begin_task's
        # rebind picks the registered group up.
        groups = self.parameter_groups()
        return [named for g in self.trains if g in groups for named in groups[g]]


def test_mas_importance_is_label_free_zero_for_unused_parameters_and_averaged_online():
    model = tiny_plain(seed=7)
    method = make_method(_MASWithUnused, model, alpha=0.25)
    method.register_module("unused", nn.Linear(4, 4))
    method.begin_task(make_task(0))  # the anchor picks the registered group up
    unused = [n for n in method.anchor.params if n.startswith("method_modules.unused.")]
    assert sorted(unused) == ["method_modules.unused.bias", "method_modules.unused.weight"]

    data = [random_batch(60), random_batch(61)]
    model.eval()
    method.consolidate(data)
    omega = {n: t.clone() for n, t in method.anchor.importance.items()}
    for n in unused:
        assert float(omega[n].abs().sum()) == 0.0
    for n, o in omega.items():
        assert bool((o >= 0).all()), n
        if n.startswith("decoder.") and n.endswith("weight"):
            assert o.sum() > 0, n

    # No labels: the same clips with empty masks give exactly the same importance.
    blank = [random_batch(60, masks="zeros"), random_batch(61, masks="zeros")]
    assert not torch.equal(blank[0].masks, data[0].masks)
    no_labels = output_sensitivity(model, blank, method.anchor.params)
    assert _state_equal({n: v.float() for n, v in no_labels.items()}, omega)

    assert set(method.training_step(data[0], model)) == {"bce", "dice", "mas"}

    # Online average: Omega <- alpha Omega + (1 - alpha) Omega_new.
    method.begin_task(make_task(1))
    _perturb(model.named_parameters(), seed=12, std=0.02)
    data2 = [random_batch(62)]
    new = output_sensitivity(model, data2, method.anchor.params)
    method.consolidate(data2)
    for n, imp in method.anchor.importance.items():
        torch.testing.assert_close(imp, 0.25 * omega[n] + 0.75 * new[n])


def test_mas_importance_of_lora_a_is_exactly_zero_while_b_is_zero_initialised():
    model = tiny_atlas(seed=8).eval()
    groups = model.named_parameter_groups()
    lora = dict(groups["visual_lora"] + groups["decoder_lora"])
    decoder = dict(groups["decoder"])
    omega = output_sensitivity(model, [random_batch(70)], {**lora, **decoder})
    a_names = [n for n in lora if n.endswith("_A")]
    b_names = [n for n in lora if n.endswith("_B")]
    assert a_names and b_names
    assert all(float(lora[n].detach().abs().sum()) == 0 for n in b_names)  # precondition: B starts at zero
    for n in a_names:
        assert float(omega[n].abs().sum()) == 0.0, n
    for n in b_names:
        assert omega[n].sum() > 0, n
    for n in decoder:
        if n.endswith("weight"):
            assert omega[n].sum() > 0, n


# ------------------------------------------------------------------ 5. ATLAS's LRA is SI's path integral
def test_atlas_lra_and_si_share_one_path_integral():
    atlas = Atlas(tiny_atlas(seed=9), AtlasHparams(), fake_scenario(), fake_ctx())
    si = make_method(SI, tiny_plain(seed=9))
    assert type(atlas.path) is PathIntegral and type(si.path) is PathIntegral
    assert issubclass(Atlas, PathIntegralMethod) and issubclass(SI, PathIntegralMethod)
    for hook in ("after_backward", "after_step", "training_step", "selection_state", "restore_selection_state"):
        assert hook not in vars(Atlas) and hook not in vars(SI), hook  # one implementation of the hooks
    groups = atlas.model.named_parameter_groups()
    paper = ("visual_lora", "decoder", "decoder_lora")
    fusion = ("audio_proj", "conditioning", "fusion")  # our extension, method.anchor_fusion (on by default)
    expected = [n for g in paper + fusion for n, _ in groups[g]]
    assert sorted(atlas.path.params) == sorted(expected)
    as_paper = Atlas(tiny_atlas(seed=9), AtlasHparams(anchor_fusion=False), fake_scenario(), fake_ctx())
    assert sorted(as_paper.path.params) == sorted(n for g in paper for n, _ in groups[g])

    model = atlas.model
    atlas.begin_task(make_task(0))
    model.train()
    batch = random_batch(80)
    assert "lra" not in atlas.training_step(batch, model)
    opt = _adamw(atlas, lr=1e-3)
    for _ in range(2):
        engine_step(atlas, opt, batch)
    assert sum(float(w.abs().sum()) for w in atlas.path.path().values()) > 0
    atlas.consolidate(None)
    assert atlas.training_step(batch, model)["lra"].item() == 0.0  # at the anchor
    _perturb(groups["decoder"], seed=13, std=0.05)
    assert atlas.training_step(batch, model)["lra"].item() > 0


def test_atlas_without_lra_has_no_path_and_no_lra_term():
    atlas = Atlas(tiny_atlas(seed=10), AtlasHparams(lra=False), fake_scenario(), fake_ctx())
    assert atlas.path is None
    model = atlas.model
    atlas.begin_task(make_task(0))
    model.train()
    opt = _adamw(atlas, lr=1e-3)
    batch = random_batch(81)
    engine_step(atlas, opt, batch)
    atlas.consolidate(None)
    atlas.begin_task(make_task(1))
    terms = atlas.training_step(batch, model)
    assert set(terms) == {"bce", "dice"}
    assert "path" not in atlas.state_dict()


# ------------------------------------------------------------------ 6. RunningMoments
def test_running_moments_match_numpy_and_all_reduce_adds_shards():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(103, 6)) @ rng.normal(size=(6, 6)) + rng.normal(size=6)
    whole = RunningMoments(6)
    for chunk in np.array_split(x, 5):
        whole.update(torch.from_numpy(chunk).float())
    xf = torch.from_numpy(x).float().double().numpy()  # what the float32 updates saw
    np.testing.assert_allclose(whole.mean.numpy(), xf.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(whole.covariance().numpy(), np.cov(xf, rowvar=False), rtol=1e-9, atol=1e-10)
    assert float(whole.count) == 103

    a, b = RunningMoments(6), RunningMoments(6)
    for chunk in np.array_split(x[:50], 2):
        a.update(torch.from_numpy(chunk).float())
    b.update(torch.from_numpy(x[50:]).float())
    other = {tuple(t.shape): t.clone() for t in (b.count, b.sum, b.outer)}
    a.all_reduce(lambda t: t + other[tuple(t.shape)])  # a two-process sum, seen from process a
    torch.testing.assert_close(a.count, whole.count)
    torch.testing.assert_close(a.mean, whole.mean)
    torch.testing.assert_close(a.covariance(), whole.covariance())

    first = RunningMoments(6, second_order=False)
    first.update(torch.from_numpy(x).float())
    np.testing.assert_allclose(first.mean.numpy(), xf.mean(0), rtol=1e-10)
    with pytest.raises(ValueError):
        first.covariance()
    with pytest.raises(ValueError):
        RunningMoments(6).update(torch.zeros(3, 5))


# ------------------------------------------------------------------ 8a. TIL: the task id chooses the mask head
def test_til_prediction_depends_on_the_task_id():
    model = tiny_plain(seed=11, task_heads=True).eval()
    reference = copy.deepcopy(model)
    model.add_task_head()
    _perturb(model.mask_heads[1].named_parameters(), seed=14, std=0.5)
    method = Finetune(model, Finetune.Hparams(), fake_scenario(protocol="til"), fake_ctx())
    b0, b1 = random_batch(90, task_id=0), random_batch(90, task_id=1)
    out0, out1 = method.predict(b0).mask_logits, method.predict(b1).mask_logits
    assert not torch.allclose(out0, out1)
    torch.testing.assert_close(out0, reference(b0).mask_logits)  # head 0 untouched by adding head 1
    mixed = random_batch(90)
    mixed.task_id = torch.tensor([0, 1, 0])
    per_clip = method.predict(mixed).mask_logits.reshape(3, -1)
    torch.testing.assert_close(per_clip[0], out0.reshape(3, -1)[0])
    torch.testing.assert_close(per_clip[1], out1.reshape(3, -1)[1])
    with pytest.raises(ValueError, match="task id"):
        method.predict(random_batch(90, task_id=-1))


# ================================================================== B. end to end (SynthAVS smoke)

@pytest.mark.parametrize("protocol", ["til", "cil", "dil", "tfcl"])
@pytest.mark.parametrize("method", ["lwf", "ewc", "si", "mas"])
def test_method_runs_to_done_in_every_protocol(smoke_run, method, protocol):
    extra = ("protocol.anytime_every=1", "method.consolidate_every=2") if protocol == "tfcl" else ()
    path = smoke_run(method, protocol, *extra)
    T = check_finished(path, method, 3 if protocol == "tfcl" else None)
    assert len(list((path / "checkpoints").glob("task_*.pt"))) == T
    if protocol == "tfcl":
        anytime = read_json(path, "anytime.json")
        assert len(anytime["points"]) >= 1
        a_auc = read_json(path, "summary.json")["map"]["a_auc"]
        assert isinstance(a_auc, (int, float)) and math.isfinite(a_auc)
        log = (path / "log.txt").read_text()
        assert "DONE" in log
        # the method consolidated during the stream: the last checkpoint holds anchors / a teacher
        state = torch.load(path / "checkpoints" / f"task_{T - 1}.pt", map_location="cpu", weights_only=True)["method"]
        consolidated = {"lwf": lambda s: s["teacher"], "ewc": lambda s: s["anchor"]["anchor"],
                        "mas": lambda s: s["anchor"]["anchor"], "si": lambda s: s["path"]["anchor"]}[method](state)
        assert consolidated, f"{method}: never consolidated in the task-free stream"


def test_tfcl_with_visible_boundaries_finishes(smoke_run):
    path = smoke_run("si", "tfcl", "protocol.boundaries=visible")
    check_finished(path, "si", 3)
    assert not (path / "anytime.json").exists()


def test_til_run_trains_one_mask_head_per_task(smoke_run):
    path = smoke_run("lwf", "til")  # shared with the parametrized run above
    ck = torch.load(path / "checkpoints" / "task_2.pt", map_location="cpu", weights_only=True)["model"]
    heads = sorted({k.split(".")[1] for k in ck if k.startswith("mask_heads.")})
    assert heads == ["0", "1", "2"]
    for name in ("weight", "bias"):
        w = [ck[f"mask_heads.{i}.{name}"] for i in range(3)]
        for i in range(3):
            for j in range(i + 1, 3):
                assert not torch.equal(w[i], w[j]), f"mask_heads.{i}.{name} == mask_heads.{j}.{name}"


def test_table_shows_the_lra_ablation_as_two_rows(smoke_run, tmp_path, clavs_home):
    runs = tmp_path / "runs"
    smoke_run("atlas", "cil", "experiment=lra_ablation", runs_dir=runs)
    smoke_run("atlas", "cil", "experiment=lra_ablation", "method.lra=false", runs_dir=runs)
    rows = [r for r in aggregate(runs) if r["method"] == "atlas"]
    assert len(rows) == 2
    assert sorted(r["label"] for r in rows) == ["atlas method.lra=false", "atlas method.lra=true"]
    assert all(r["experiment"] == "lra_ablation" and r["seeds"] == [0] for r in rows)

    env = dict(os.environ, CLAVS_HOME=str(clavs_home))
    out = subprocess.run([sys.executable, "-m", "clavs.cli", "table", str(runs), "--layout", "runs"], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "atlas method.lra=true" in out.stdout and "atlas method.lra=false" in out.stdout
    # the paper's layout: the default ATLAS in Table 1, both in Table 2 with the switch as a column
    from clavs.reports.benchmark_table import build_benchmark_table

    table1, table2 = build_benchmark_table(runs).sections
    default = next(r for r in rows if r["variant"]["method.lra"] is True)
    assert [r.label for r in table1.rows] == ["atlas"] and table1.rows[0].cells[0].mean == default["aa"][0]
    assert [r.switches for r in table2.rows] == [{"method.lra": True}, {"method.lra": False}]


def test_atlas_decoder_base_trains_after_the_first_task_only_with_the_extension():
    for extension, expect in ((False, False), (True, True)):
        atlas = Atlas(tiny_atlas(seed=11), AtlasHparams(decoder_base_after_first=extension), fake_scenario(), fake_ctx())
        assert "decoder" in atlas.trained_groups()  # task 0 trains the decoder from scratch
        atlas.consolidate(None)
        assert ("decoder" in atlas.trained_groups()) is expect
        assert "decoder_lora" in atlas.trained_groups()
