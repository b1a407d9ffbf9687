import json

import pytest

from clavs.results import RunDir, config_hash, list_runs, load_run, run_dir_for
from clavs.utils.io import atomic_write_json


def _config(**kw):
    c = {"experiment": "e", "seed": 3, "runs_dir": "runs", "protocol": {"name": "cil"}, "method": {"name": "atlas", "lra": True},
         "engine": {"devices": 1}}
    c.update(kw)
    return c


def test_hash_ignores_execution_keys_but_not_method_values():
    a = _config()
    assert config_hash(a) == config_hash(_config(runs_dir="elsewhere"))
    assert config_hash(a) != config_hash(_config(engine={"devices": 4}))
    assert config_hash(a) != config_hash(_config(method={"name": "atlas", "lra": False}))
    assert config_hash(a) != config_hash(_config(seed=4))


def test_run_dir_layout(tmp_path):
    path = run_dir_for(_config(), tmp_path)
    assert path.relative_to(tmp_path).parts[:3] == ("e", "cil", "atlas")
    assert path.name.startswith("seed3-") and len(path.name) == len("seed3-") + 8


def test_write_and_load_roundtrip_with_nan_as_null(tmp_path):
    run = RunDir(tmp_path / "r").create()
    run.write_config(_config())
    nan = float("nan")
    run.write_matrices(2, {"map": {"R": [[50.0, 10.0], [40.0, nan]], "b": [1.0, 2.0]}})
    run.write_summary({"map": {"la": 45.0, "aa": nan}})
    run.write_profile({"tasks": []})
    assert not run.done
    run.mark_done()
    loaded = load_run(run.path)
    assert loaded["done"]
    assert loaded["matrices"] == {"tasks": 2, "metrics": {"map": {"R": [[50.0, 10.0], [40.0, None]], "b": [1.0, 2.0]}}}
    assert loaded["summary"]["map"]["aa"] is None
    raw = (run.path / "matrices.json").read_text()
    assert "NaN" not in raw
    infos = list_runs(tmp_path)
    assert [i.method for i in infos] == ["atlas"] and infos[0].done


def test_latest_checkpoint_picks_highest_task(tmp_path):
    run = RunDir(tmp_path / "r").create()
    assert run.latest_checkpoint() is None
    for t in (0, 2, 10):
        run.checkpoint_path(t).write_bytes(b"x")
    assert run.latest_checkpoint()[0] == 10


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_json(target, {"a": 1})

    def broken(f):
        f.write("partial")
        raise RuntimeError("killed")

    from clavs.utils.io import atomic_write

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temp file left behind


def test_load_run_names_missing_file(tmp_path):
    run = RunDir(tmp_path / "r").create()
    run.write_config(_config())
    with pytest.raises(FileNotFoundError, match="matrices.json"):
        load_run(run.path)
