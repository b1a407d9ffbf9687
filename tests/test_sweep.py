"""Sweeps without training: grid expansion, run-directory equality with `clavs run`, shipped grid
files, launchers' scheduling and failure reports, validation-only selection."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import pytest
import yaml

from clavs.cli import main
from clavs.config import ConfigError, resolve_config
from clavs.launch.grid import (Job, RunOptions, blocks_from_options, expand, parse_seeds, split_values,
                               value_text)
from clavs.launch.jobs import JobResult
from clavs.launch.launchers import LocalLauncher
from clavs.launch.sweep import run_sweep
from clavs.methods import Method, available_methods, get_method_class, register
from clavs.results import RunDir, run_dir_for


@register
class _TilOnly(Method):
    """Test-only method that supports one protocol."""

    name = "_test_til_only"
    protocols = ("til", "dil")
    declined = {"dil": "its heads need task ids"}
    trains = ("decoder",)


def jobs_of(runs_dir, *, grid=None, methods=None, protocols=None, seeds=None, preset="smoke", split=None,
            overrides=(), **options):
    blocks, _ = blocks_from_options(grid=grid, methods=methods, protocols=protocols, seeds=seeds, preset=preset,
                                    split=split, overrides=list(overrides))
    return expand(blocks, RunOptions(runs_dir=str(runs_dir), **options))


def test_value_splitting_seeds_and_yaml_values_round_trip():
    assert split_values("true,false") == ["true", "false"]
    assert split_values("[a,b],[c]") == ["[a,b]", "[c]"]
    assert split_values("'0,1',2") == ["'0,1'", "2"]
    assert parse_seeds("0-2,5,1") == [0, 1, 2, 5]
    with pytest.raises(ConfigError, match="'x' is not a seed"):
        parse_seeds("0,x")
    for value in (True, 20.0, 1e-05, 3, None, "11-2", "yes", [1, 2], "a b"):
        text = value_text("k", value)
        assert yaml.safe_load(text) == value or (value == 1e-05 and float(text) == value)
    assert value_text("k", "yes") == '"yes"'  # YAML would read the bare word as true


def test_jobs_make_the_run_directories_clavs_run_makes(tmp_path):
    jobs, notes = jobs_of(tmp_path, methods="atlas,finetune", protocols="cil,dil", seeds="0,1", split="21-2",
                          overrides=["method.lra=true,false", "train.epochs=2"])
    # method.lra reaches ATLAS only: 2 x 2 x 2 for atlas, 2 x 2 for finetune
    assert len(jobs) == 12 and notes == []
    assert sum(j.method == "finetune" for j in jobs) == 4
    for job in jobs:
        overrides = ["train.epochs=2"] + ([f"method.lra={dict(job.point)['method.lra']}"] if job.method == "atlas" else [])
        by_hand = resolve_config(preset="smoke", method=job.method, overrides=overrides,
                                 options={"protocol.name": job.protocol, "protocol.split": "21-2", "seed": job.seed,
                                          "runs_dir": str(tmp_path)})
        assert job.run_dir == run_dir_for(by_hand, tmp_path), job.label
    assert len({j.run_dir for j in jobs}) == 12
    assert {j.run_dir.parent.parent.name for j in jobs} == {"cil", "dil"}


def test_a_method_key_no_method_has_and_job_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="method.lra: no method of this sweep has this hyperparameter"):
        jobs_of(tmp_path, methods="finetune", overrides=["method.lra=true,false"])
    with pytest.raises(ConfigError, match="seed is chosen by seeds"):
        jobs_of(tmp_path, methods="finetune", overrides=["seed=1,2"])
    with pytest.raises(ConfigError, match="unknown config key 'train.nope'"):
        jobs_of(tmp_path, methods="finetune", overrides=["train.nope=1"])
    with pytest.raises(ValueError, match="unknown method 'nope'; available: "):
        jobs_of(tmp_path, methods="finetune,nope")
    with pytest.raises(ConfigError, match="give --methods"):
        jobs_of(tmp_path)


def test_unsupported_protocols_are_left_out_with_a_note(tmp_path):
    jobs, notes = jobs_of(tmp_path, methods="_test_til_only,finetune", protocols="til,cil,dil")
    assert sorted((j.method, j.protocol) for j in jobs) == [("_test_til_only", "til"), ("finetune", "cil"),
                                                            ("finetune", "dil"), ("finetune", "til")]
    assert notes == ["method '_test_til_only' does not support protocol 'cil' (supports til)",
                     "method '_test_til_only' declines protocol 'dil': its heads need task ids"]


def test_selected_configs_reach_their_jobs_and_clavs_run_config_reads_them(tmp_path):
    chosen = tmp_path / "chosen"
    chosen.mkdir()
    (chosen / "ewc.cil.yaml").write_text("method:\n  name: ewc\n  ewc_lambda: 7.5\n")
    jobs, _ = jobs_of(tmp_path, methods="ewc,finetune", protocols="cil,dil", selected=str(chosen))
    configs = {(j.method, j.protocol): j.config for j in jobs}
    assert configs[("ewc", "cil")]["method"]["ewc_lambda"] == 7.5
    assert configs[("ewc", "dil")]["method"]["ewc_lambda"] == get_method_class("ewc").Hparams().ewc_lambda
    assert resolve_config(preset="smoke", config_file=chosen / "ewc.cil.yaml")["method"]["ewc_lambda"] == 7.5
    with pytest.raises(ConfigError, match="holds settings of method 'ewc', not of 'atlas'"):
        resolve_config(method="atlas", config_file=chosen / "ewc.cil.yaml")
    (chosen / "bad.yaml").write_text("train: {nope: 1}\n")
    with pytest.raises(ConfigError, match=r"--config .*bad.yaml: unknown config key 'train.nope'"):
        resolve_config(config_file=chosen / "bad.yaml")


def test_shipped_grids_expand(tmp_path):
    table2, _ = jobs_of(tmp_path, grid="table2", preset=None)
    assert len(table2) == 4 * 3 + 4 * 1
    assert {dict(j.point)["experiment"] for j in table2} == {"synthavs"}
    table1, notes = jobs_of(tmp_path, grid="table1", preset=None)
    supported = {m: [p for p in get_method_class(m).protocols if p not in get_method_class(m).declined]
                 for m in available_methods()}
    assert len(table1) == sum(3 * ("cil" in p) + 3 * ("tfcl" in p) + ("til" in p) + ("dil" in p) for p in supported.values())
    # Table 2's full-method runs are Table 1's ATLAS runs
    full = {j.run_dir for j in table2 if dict(j.point)["method.lra"] == "true" == dict(j.point)["method.pre_conditioning"]}
    assert full <= {j.run_dir for j in table1}
    validation, _ = jobs_of(tmp_path, grid="validation", preset=None)
    assert sorted(j.method for j in validation) == (["atlas"] * 6 + ["dgr"] * 2 + ["ewc"] * 2 + ["l2p"] * 2
                                                   + ["lwf"] * 2 + ["mas"] * 2 + ["panda"] * 2 + ["si"] * 2)
    # RanPAC/FeCAM's first-session comparison: its default point is Table 1's TF-CL run (val_matrix is unhashed)
    first_session, _ = jobs_of(tmp_path, grid="first_session", preset=None)
    assert sorted((j.method, j.protocol) for j in first_session) == [("fecam", "tfcl")] * 4 + [("ranpac", "tfcl")] * 4
    defaults = {j.run_dir for j in first_session if dict(j.point)["method.consolidate_every"] == "0"}
    assert len(defaults) == 2 and defaults <= {j.run_dir for j in table1}
    # the run directories scripts/select_hparams.py made before the grids moved to YAML
    by_hand = resolve_config(method="atlas", options={"seed": 0, "runs_dir": str(tmp_path)},
                             overrides=["experiment=synthavs", "train.val_matrix=full", "method.lra_lambda=5.0",
                                        "method.anchor_fusion=false", "method.decoder_base_after_first=false"])
    assert run_dir_for(by_hand, tmp_path) in {j.run_dir for j in validation}
    narrowed, _ = jobs_of(tmp_path, grid="table1", preset="smoke", methods="finetune", protocols="cil", seeds="0-4")
    assert [j.seed for j in narrowed] == [0, 1, 2, 3, 4] and narrowed[0].config["preset"] == "smoke"


def test_grid_file_errors_name_the_file_and_key(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("methods: [finetune]\nrunz: []\n")
    with pytest.raises(ConfigError, match=r"g.yaml: unknown key\(s\) runz"):
        jobs_of(tmp_path, grid=str(bad))
    bad.write_text("methods: [finetune]\ngrid: {train.lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"g.yaml grid: train.lr must be a non-empty list"):
        jobs_of(tmp_path, grid=str(bad))
    bad.write_text("methods: [finetune]\nruns:\n  - set: {method.name: atlas}\n")
    with pytest.raises(ConfigError, match=r"g.yaml runs\[0\]: method.name is chosen by methods"):
        jobs_of(tmp_path, grid=str(bad))
    with pytest.raises(ConfigError, match="not a shipped grid .*table1"):
        jobs_of(tmp_path, grid="nope")


def _job(tmp_path, i: int) -> Job:
    return Job(label=f"job{i}", method="finetune", protocol="cil", seed=i, point=(), argv=(),
               run_dir=tmp_path / f"run{i}")


def test_local_launcher_runs_at_most_jobs_at_once_one_per_gpu(tmp_path, monkeypatch):
    active: dict[str, str] = {}
    peak = []
    lock = threading.Lock()

    def fake_run_job(job, gpu=None):
        with lock:
            assert gpu not in active.values(), "two jobs on one GPU"
            active[job.label] = gpu
            peak.append(len(active))
        time.sleep(0.05)
        with lock:
            del active[job.label]
        status = "failed" if job.seed == 2 else "done"
        return JobResult(job, status, 1 if status == "failed" else 0, 0.05, job.log_path, "error: boom")

    monkeypatch.setattr("clavs.launch.launchers.run_job", fake_run_job)
    launcher = LocalLauncher(None, gpus=["3", "5"])
    assert launcher.parallel == 2  # one job per visible GPU by default
    started, finished = [], []
    results = launcher.launch([_job(tmp_path, i) for i in range(6)], started.append, finished.append)
    assert max(peak) == 2 and len(results) == len(finished) == len(started) == 6
    assert [r.job.seed for r in results if r.status == "failed"] == [2]  # one failure, the others ran
    assert LocalLauncher(None, gpus=[]).parallel == 1


def test_sweep_skips_finished_runs_and_names_each_failure_with_its_log(tmp_path):
    from rich.console import Console

    jobs = [_job(tmp_path, i) for i in range(3)]
    RunDir(jobs[0].run_dir).create().mark_done()

    class Fake:
        def describe(self):
            return "fake"

        def launch(self, todo, started, finished):
            assert [j.seed for j in todo] == [1, 2]
            for job in todo:
                started(job)
                ok = job.seed == 1
                finished(JobResult(job, "done" if ok else "failed", 0 if ok else 2, 1.0, job.log_path,
                                   "" if ok else "error: data.root=/x: no Single-source/"))
            return []

    console = Console(record=True, width=200)
    report = run_sweep(jobs, Fake(), console, progress=False)
    text = console.export_text()
    assert report.summary() == "sweep: 1 done, 1 failed, 1 skipped (already done)"
    assert f"FAILED job2: error: data.root=/x: no Single-source/; log: {jobs[2].log_path}" in text
    assert f"failed: job2\n    log: {jobs[2].log_path}" in text


def test_a_failing_process_is_reported_with_its_error_line(tmp_path):
    from clavs.launch.jobs import run_job

    job = Job(label="bad", method="finetune", protocol="cil", seed=0, point=(), argv=("--preset", "smoke", "train.nope=1"),
              run_dir=tmp_path / "bad")
    result = run_job(job)
    assert result.status == "failed" and result.returncode == 2
    assert result.reason.startswith("error: unknown config key 'train.nope'")
    assert "clavs sweep job: " in result.log.read_text() and result.log == tmp_path / "bad" / "sweep.log"


def _fake_finished(job: Job, val_aa: float, test_aa: float) -> None:
    run = RunDir(job.run_dir).create()
    run.write_config(job.config)
    for split, aa in (("val", val_aa), ("test", test_aa)):
        run.write_summary({"map": {"aa": aa, "forgetting": 1.0}}, split=split)
    run.mark_done()


def test_select_picks_the_best_validation_aa_never_test(tmp_path, capsys):
    runs = tmp_path / "runs"
    spec = dict(methods="ewc,finetune", protocols="cil", seeds="0,1", overrides=["method.ewc_lambda=1.0,2.0,3.0"])
    jobs, _ = jobs_of(runs, **spec)
    val = {"1.0": 40.0, "2.0": 45.0, "3.0": 30.0}
    test = {"1.0": 90.0, "2.0": 10.0, "3.0": 95.0}  # test would choose otherwise
    for job in jobs:
        if job.method == "ewc" and not (dict(job.point)["method.ewc_lambda"] == "3.0" and job.seed == 1):
            point = dict(job.point)["method.ewc_lambda"]
            _fake_finished(job, val[point] + job.seed, test[point])
    out = tmp_path / "chosen"
    argv = ["select", str(runs), "--preset", "smoke", "--methods", "ewc,finetune", "--protocols", "cil",
            "--seeds", "0,1", "method.ewc_lambda=1.0,2.0,3.0", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "45.50 ± 0.71" in printed and "30.00" in printed and "2/2" in printed and "1/2" in printed
    assert "95" not in printed and "90" not in printed  # no test number is shown
    chosen = yaml.safe_load((out / "ewc.cil.yaml").read_text())
    assert chosen["method"]["name"] == "ewc" and chosen["method"]["ewc_lambda"] == 2.0
    assert not (out / "finetune.cil.yaml").exists()  # no finished run of finetune: nothing chosen
    assert "validation AA 45.50 over seeds 0,1" in (out / "ewc.cil.yaml").read_text()
    config = resolve_config(preset="smoke", config_file=out / "ewc.cil.yaml")
    assert config["method"] == chosen["method"]


def test_sweep_dry_run_lists_jobs_and_status(tmp_path, capsys):
    jobs, _ = jobs_of(tmp_path, methods="finetune", seeds="0,1")
    RunDir(jobs[0].run_dir).create().mark_done()
    assert main(["sweep", "--methods", "finetune", "--seeds", "0,1", "--preset", "smoke", "--runs-dir",
                 str(tmp_path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["done", "finetune", "cil", "seed0"] and str(jobs[0].run_dir) in lines[1]
    assert lines[2].split() == ["new", "finetune", "cil", "seed1"] and lines[-1] == "2 jobs"
    assert main(["sweep", "--methods", "finetune", "--jobs", "0", "--runs-dir", str(tmp_path)]) == 2
    assert "--jobs 0: must be at least 1" in capsys.readouterr().err


def test_slurm_launcher_asks_for_submitit_when_missing(monkeypatch):
    import builtins

    from clavs.errors import ClavsError
    from clavs.launch.launchers import SubmititLauncher

    real_import = builtins.__import__

    def no_submitit(name, *args, **kwargs):
        if name == "submitit":
            raise ImportError("No module named 'submitit'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_submitit)
    with pytest.raises(ClavsError, match=r"needs submitit: pip install 'clavs\[slurm\]'"):
        SubmititLauncher(Path("x"))


def test_table_labels_name_what_sets_groups_apart_never_an_unhashed_key(tmp_path):
    from clavs.results.aggregate import aggregate

    jobs, _ = jobs_of(tmp_path, methods="ewc", protocols="cil", seeds="0", overrides=["method.ewc_lambda=1.0,2.0"])
    for job, recorded in zip(jobs, ("full", "last")):  # e.g. a validation grid point beside a Table 1 run
        config = copy.deepcopy(job.config)
        config["train"]["val_matrix"] = recorded
        run = RunDir(job.run_dir).create()
        run.write_config(config)
        run.write_summary({"map": {"aa": 40.0, "forgetting": 1.0}})
        run.write_profile({"method": {"family": "CL"}})
        run.write_matrices(1, {"map": {"R": [[40.0]], "b": [1.0]}})
        run.mark_done()
    damaged = []
    labels = sorted(r["label"] for r in aggregate(tmp_path, damaged=damaged))
    assert not damaged
    assert labels == ["ewc method.ewc_lambda=1", "ewc method.ewc_lambda=2"]  # train.val_matrix differs too: not named
