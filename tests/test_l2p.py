"""L2P (methods/l2p.py, methods/parts/prompt_pool.py): top-k selection against a brute-force cosine
ranking, the pull term and its gradients, a frozen encoder that stays bit-identical, selection that
follows the input, prompts that reach the output, the current-task class mask, and smoke runs in
every protocol."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from method_helpers import (
    FRAMES,
    IMG,
    check_finished,
    engine_step,
    fake_ctx,
    fake_scenario,
    make_task,
    random_batch,
    read_json,
    tiny_plain,
)

from clavs.batch import clip_class_logits
from clavs.config import resolve_config
from clavs.methods.l2p import L2P, L2PHparams
from clavs.methods.parts.prompt_pool import QUERY, SELECTED, PromptPool
from clavs.protocols.scenario import Task


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: one intra-op thread per module


def _l2p(model, scenario=None, batch_size: int = 8, **hparams) -> L2P:
    ctx = fake_ctx()
    ctx.config = {"train": {"batch_size": batch_size}}
    return L2P(model, L2PHparams(**hparams), scenario or fake_scenario(), ctx)


def _solid_clips() -> torch.Tensor:
    """Four clips whose frames are far apart: black, white, red, and noise."""
    g = torch.Generator().manual_seed(5)
    clips = torch.zeros(4, FRAMES, 3, IMG, IMG)
    clips[1] = 1.0
    clips[2, :, 0] = 1.0
    clips[3] = torch.rand(FRAMES, 3, IMG, IMG, generator=g)
    return clips


def _clips_batch(frames: torch.Tensor, task_id: int = -1):
    batch = random_batch(0, b=frames.shape[0], task_id=task_id)
    return dataclasses.replace(batch, frames=frames)


# ================================================================== the prompt pool
def _brute_force(keys: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip top-k by cosine (most similar first), and the batch-wise majority (ties: lower id)."""
    kn = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = qn @ kn.T
    per_clip = np.stack([sorted(range(len(keys)), key=lambda i: -s[i])[:k] for s in sims])
    counts = np.bincount(per_clip.ravel(), minlength=len(keys))
    major = sorted(range(len(keys)), key=lambda i: (-counts[i], i))[:k]
    return per_clip, np.tile(major, (len(queries), 1))


def test_selection_is_the_brute_force_cosine_top_k_and_the_batchwise_majority():
    ties = 0
    for seed in range(25):
        torch.manual_seed(seed)
        pool = PromptPool(pool_size=10, length=2, dim=12, top_k=4)
        queries = torch.randn(7, 12) * 3
        per_clip, batchwise = _brute_force(pool.keys.detach().double().numpy(), queries.double().numpy(), 4)
        np.testing.assert_array_equal(pool.select(queries).numpy(), per_clip)
        np.testing.assert_array_equal(pool.select(queries, batchwise=True).numpy(), batchwise)
        counts = np.sort(np.bincount(per_clip.ravel(), minlength=10))[::-1]
        ties += int(counts[3] == counts[4])  # the 4th and 5th most frequent ids tie: the lower id wins
    assert ties >= 3, "the seeds must exercise ties in the batch-wise vote"


def test_pull_term_is_the_summed_cosine_of_the_selected_keys_and_only_selected_rows_get_gradient():
    torch.manual_seed(0)
    pool = PromptPool(pool_size=6, length=3, dim=8, top_k=2)
    queries = torch.randn(3, 8)
    ids = pool.select(queries)
    batch = dataclasses.replace(random_batch(1), extra={QUERY: queries, SELECTED: ids})
    tokens, features = pool(batch)
    assert tokens.shape == (3, 2 * 3, 8)
    for b in range(3):  # the selected prompts, in selection order, one after the other
        torch.testing.assert_close(tokens[b], torch.cat([pool.prompts[i] for i in ids[b].tolist()]))
    k = pool.keys.detach().numpy()
    q = queries.numpy()
    cos = (q @ k.T) / np.linalg.norm(q, axis=1)[:, None] / np.linalg.norm(k, axis=1)[None, :]
    expected = [cos[b, ids[b].numpy()].sum() for b in range(3)]
    np.testing.assert_allclose(features["prompt_pull"].detach().numpy(), expected, rtol=1e-5)

    (features["prompt_pull"].sum() + tokens.sum()).backward()
    chosen = set(ids.flatten().tolist())
    for i in range(6):
        assert (pool.keys.grad[i].abs().sum() > 0) == (i in chosen), i
        assert (pool.prompts.grad[i].abs().sum() > 0) == (i in chosen), i
    with pytest.raises(ValueError, match="prompt_query"):
        pool(random_batch(1))


# ================================================================== the method on a tiny network
def test_encoder_stays_bit_identical_while_prompts_keys_and_the_avs_parts_train():
    model = tiny_plain(seed=1)
    method = _l2p(model, batch_size=8)
    method.begin_task(make_task(0))
    frozen = {k: v.clone() for k, v in model.visual.state_dict().items()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = method.param_groups(1e-2, 0.05)
    by_name = {g["name"]: g for g in groups}
    assert by_name["prompt_pool"]["lr"] == pytest.approx(0.03 * 8 / 128) and by_name["prompt_pool"]["weight_decay"] == 0
    assert {id(p) for p in by_name["prompt_pool"]["params"]} == {id(method.pool.prompts), id(method.pool.keys)}
    in_optimiser = {id(p) for g in groups for p in g["params"]}
    assert not any(id(p) in in_optimiser or p.requires_grad for p in model.visual.parameters())

    opt = torch.optim.AdamW(groups)
    model.train()
    for i in range(3):
        terms = engine_step(method, opt, random_batch(30 + i))
    assert set(terms) == {"bce", "dice", "l2p_pull"} and terms["l2p_pull"] < 0
    assert all(torch.equal(v, frozen[k]) for k, v in model.visual.state_dict().items())
    after = model.state_dict()
    for name in ("method_modules.prompt_pool.prompts", "method_modules.prompt_pool.keys", "decoder.head.weight",
                 "fusion.mlp.0.weight", "audio_proj.0.weight"):
        assert not torch.equal(after[name], before[name]), f"{name} did not train"


def test_selected_prompts_follow_the_input_and_reach_the_output():
    model = tiny_plain(seed=2)
    method = _l2p(model, pool_size=5, prompt_length=2, top_k=1)
    model.eval()
    clips = _clips_batch(_solid_clips())
    queries = method.query(clips)
    with torch.no_grad():  # keys 0..3 = the four clips' queries; key 4 points away from all of them
        method.pool.keys[:4] = queries
        method.pool.keys[4] = -queries.mean(0)
    out = method.predict(clips)
    assert out.features["prompt_ids"].flatten().tolist() == [0, 1, 2, 3]  # prediction selects per clip
    batchwise = method.with_prompts(clips, batchwise=True).extra[SELECTED]
    assert batchwise.flatten().tolist() == [0, 0, 0, 0]  # training's vote: all tie, the lower id wins

    # Each clip is decoded with its own prompt: forcing clip 0's prompt on clip 1 changes clip 1's masks.
    forced = dataclasses.replace(clips, extra={QUERY: queries, SELECTED: torch.zeros(4, 1, dtype=torch.long)})
    with torch.no_grad():
        forced_out = model(forced)
    per_clip = out.mask_logits.reshape(4, -1)
    torch.testing.assert_close(forced_out.mask_logits.reshape(4, -1)[0], per_clip[0])
    assert not torch.allclose(forced_out.mask_logits.reshape(4, -1)[1], per_clip[1])

    # An unselected prompt does not matter; changing the selected ones changes the output.
    with torch.no_grad():
        method.pool.prompts[4].add_(5.0)
    assert torch.equal(method.predict(clips).mask_logits, out.mask_logits)
    with torch.no_grad():
        method.pool.prompts[:4].mul_(-1)
    changed = method.predict(clips).mask_logits.reshape(4, -1)
    assert all(not torch.allclose(changed[b], per_clip[b]) for b in range(4))


def test_query_is_the_frozen_class_token_of_the_unprompted_decoded_frames():
    model = tiny_plain(seed=3)
    method = _l2p(model)
    batch = random_batch(7).with_frame_ids([1])
    cls = model.visual.forward_pooled(batch.frames[:, 1])  # the encoder alone: no prompts
    torch.testing.assert_close(method.query(batch), F.normalize(cls, dim=-1))
    both = random_batch(7)
    expected = F.normalize(model.visual.forward_pooled(both.frames.flatten(0, 1)), dim=-1).reshape(3, 2, -1).mean(1)
    torch.testing.assert_close(method.query(both), expected)


def _class_scenario(protocol: str) -> types.SimpleNamespace:
    tasks = [Task(id=i, name=f"t{i}", classes=[], class_indices=[2 * i, 2 * i + 1], train=[], val=[], test=[],
                  task_id_visible=protocol == "til", label_space=[], num_seen_classes=2 * i + 2) for i in range(2)]
    return types.SimpleNamespace(protocol=protocol, has_class_head=True, tasks=tasks)


@pytest.mark.parametrize("train_mask", [True, False])
def test_cil_cross_entropy_is_over_the_current_task_classes_and_the_pull_term_is_added(train_mask):
    model = tiny_plain(seed=4, use_class_head=True)
    scenario = _class_scenario("cil")
    method = _l2p(model, scenario, train_mask=train_mask, pull_lambda=0.5)
    method.begin_task(scenario.tasks[0])
    method.begin_task(scenario.tasks[1])
    assert model.num_classes == 4
    batch = dataclasses.replace(random_batch(11, task_id=1), class_index=torch.tensor([2, 3, 2]))
    model.eval()  # no dropout anywhere: the same forward as the step's
    terms = method.training_step(batch, model)
    prompted = method.with_prompts(batch, batchwise=True)
    out = model(prompted)
    logits = clip_class_logits(out.class_logits, batch.size)
    if train_mask:
        logits = logits.masked_fill(torch.tensor([True, True, False, False]), float("-inf"))
    torch.testing.assert_close(terms["ce"], F.cross_entropy(logits, batch.class_index))
    torch.testing.assert_close(terms["l2p_pull"], -0.5 * out.features["prompt_pull"].mean())


def test_bad_hyperparameters_and_a_pvt_encoder_are_refused_clearly():
    with pytest.raises(ValueError, match=r"method.top_k=11 must be in \[1, method.pool_size=10\]"):
        resolve_config(preset="smoke", method="l2p", overrides=["method.top_k=11"])
    with pytest.raises(ValueError, match="method.prompt_length=0"):
        resolve_config(preset="smoke", method="l2p", overrides=["method.prompt_length=0"])
    pvt = tiny_plain(visual="pvt_v2_b0", img_size=IMG, visual_out_indices=None, visual_kwargs={})
    with pytest.raises(ValueError, match="visual prompts need a ViT encoder.*pvt_v2_b0"):
        _l2p(pvt)


# ================================================================== end to end (SynthAVS smoke)
@pytest.mark.parametrize("protocol", ["til", "cil", "dil", "tfcl"])
def test_l2p_runs_to_done_in_every_protocol_with_a_frozen_encoder(smoke_run, protocol):
    path = smoke_run("l2p", protocol, *(("protocol.anytime_every=2",) if protocol == "tfcl" else ()))
    T = check_finished(path, "l2p", 3 if protocol == "tfcl" else None)
    first, last = (torch.load(path / "checkpoints" / f"task_{t}.pt", map_location="cpu", weights_only=True)["model"]
                   for t in (0, T - 1))
    visual = [k for k in first if k.startswith("visual.")]
    assert visual and all(torch.equal(first[k], last[k]) for k in visual)
    for name in ("method_modules.prompt_pool.prompts", "method_modules.prompt_pool.keys"):
        assert not torch.equal(first[name], last[name]), f"{name} did not train after the first task"
    profile = read_json(path, "profile.json")
    assert profile["method"]["family"] == "cl"
    frozen = sum(first[k].numel() for k in visual)
    assert all(t["trainable_parameters"] == t["total_parameters"] - frozen for t in profile["tasks"])
