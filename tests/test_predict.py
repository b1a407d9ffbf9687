"""Restoring a run for prediction (engine/restore.py) and `clavs predict` on a user's video.

The oracle of a restored run is the run itself: scoring its test clips again with the restored
method must give the numbers matrices.json recorded after that checkpoint's task."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from clavs.batch import Batch
from clavs.config import resolve_config
from clavs.engine.clips import ClipSubset, embed_audio
from clavs.engine.evaluate import evaluate_batches
from clavs.engine.restore import restore_run
from clavs.engine.runner import dataset_root, decode_stores, open_datasets, run_experiment
from clavs.errors import ClavsError, RunDirError
from clavs.methods import available_methods, get_method_class

FAST = ["model.visual_weights=none", "model.audio_weights=none", "protocol.split=11-6"]


@pytest.fixture(scope="module")
def smoke_run(clavs_home, tmp_path_factory):
    """run(method, protocol, *overrides) -> run directory, each trained once per module (3 S4 tasks;
    tfcl: 3 tasks of the smoke MS3 stream)."""
    done: dict[tuple, object] = {}
    root = tmp_path_factory.mktemp("predict_runs")

    def run(method: str, protocol: str, *overrides: str):
        key = (method, protocol, overrides)
        if key not in done:
            split = ["protocol.split=31-5", "protocol.num_tasks=3"] if protocol == "tfcl" else []
            config = resolve_config(preset="smoke", method=method,
                                    options={"runs_dir": str(root), "progress": False, "protocol.name": protocol},
                                    overrides=[*FAST, *split, *overrides])
            done[key] = run_experiment(config)
        return done[key]

    return run


def _test_clips(config):
    """The run's test clips, decoded as the run decoded them (the clip cache), with their class indices."""
    datasets = open_datasets(config, dataset_root(config, progress=False))
    store = decode_stores(config, {"test": datasets["test"]}, None)["test"]
    return store, datasets["test"].records


def _rescore(restored, store, records, j: int) -> dict[str, float]:
    """Every metric of the restored method on task j's test clips (as engine/loop.Trainer.score does)."""
    scenario = restored.scenario
    class_index = torch.tensor(scenario.class_indices_of(records), dtype=torch.long)
    task_id = j if scenario.tasks[j].task_id_visible else -1
    subset = ClipSubset(store, scenario.tasks[j].test, class_index, task_id)
    loader = DataLoader(subset, batch_size=restored.config["train"]["eval_batch_size"], collate_fn=Batch.collate)
    with restored.fabric.autocast():
        return evaluate_batches(restored.method, (b.prepared() for b in loader), has_classes=scenario.has_class_head)


def _check_rescored(path, checkpoint=None):
    """Restore `checkpoint` of the run at `path` (its audio embeddings equal the run's cached ones); its
    scores on every task scored after that checkpoint's task equal matrices.json's row. Returns it."""
    restored = restore_run(path, checkpoint)
    store, records = _test_clips(restored.config)
    from_cache = dataclasses.replace(store)
    embed_audio(from_cache, restored.audio_encoder, restored.audio_encoder_id)  # the entry the run wrote
    store.audio = restored.embed_waveforms(store.waveforms)
    assert torch.equal(store.audio, from_cache.audio)
    R = {name: m["R"] for name, m in json.loads((path / "matrices.json").read_text())["metrics"].items()}
    t = restored.task
    for j, recorded in enumerate(R["map"][t]):
        if recorded is None:
            continue
        scores = _rescore(restored, store, records, j)
        assert scores["map"] == pytest.approx(recorded, abs=1e-3), (j, scores, recorded)
        if "acc" in R:
            assert scores["acc"] == pytest.approx(R["acc"][t][j], abs=1e-6)
    return restored


# ================================================================== restoring a run

def test_restored_til_run_scores_what_the_run_recorded_with_every_checkpoint(smoke_run):
    path = smoke_run("lwf", "til")
    restored = _check_rescored(path)  # the latest: task 2, every task's mask head and the distillation teacher
    assert restored.task == 2 and restored.checkpoint.name == "task_2.pt"
    assert restored.model.num_task_heads == 3
    first = _check_rescored(path, "task_0")  # after task 0: one head; row 0 holds task 1 (forward transfer)
    assert first.task == 0 and first.model.num_task_heads == 1
    assert len(first.seen_classes) == 11 and len(restored.seen_classes) == 23
    # TIL chooses the mask head by task id: one must be given, among the tasks trained
    with pytest.raises(ClavsError, match="needs the task id"):
        first.task_id(None)
    with pytest.raises(ClavsError, match=r"task id 1 is not among the tasks task_0.pt was trained on"):
        first.task_id(1)
    assert restored.task_id(1) == 1


def test_restored_cil_atlas_run_scores_what_the_run_recorded(smoke_run):
    restored = _check_rescored(smoke_run("atlas", "cil"))
    assert restored.protocol == "cil" and restored.task_id(None) == -1
    with pytest.raises(ClavsError, match="takes no task id"):
        restored.task_id(0)


def test_restore_refuses_run_dirs_it_cannot_use_naming_the_file(smoke_run, tmp_path):
    path = smoke_run("lwf", "til")
    with pytest.raises(RunDirError, match="no checkpoint 'task_7'; there are task_0, task_1, task_2"):
        restore_run(path, "task_7")
    copy = tmp_path / path.name
    shutil.copytree(path, copy)
    (copy / "scenario.json").unlink()
    with pytest.raises(RunDirError, match=r"scenario.json: missing"):
        restore_run(copy)
    for ck in (copy / "checkpoints").glob("*.pt"):
        ck.unlink()
    with pytest.raises(RunDirError, match=r"checkpoints: no task checkpoint"):
        restore_run(copy)
    (copy / "checkpoints").rmdir()
    with pytest.raises(RunDirError, match=r"checkpoints: no task checkpoint"):
        restore_run(copy)
    (copy / "config.yaml").unlink()
    with pytest.raises(RunDirError, match=r"config.yaml: missing"):
        restore_run(copy)


@pytest.mark.slow
@pytest.mark.parametrize("method", available_methods())
def test_every_method_restores_to_its_recorded_scores(smoke_run, method):
    protocols = get_method_class(method).protocols
    protocol = "cil" if "cil" in protocols else protocols[0]
    _check_rescored(smoke_run(method, protocol))
