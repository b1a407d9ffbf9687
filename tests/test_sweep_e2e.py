"""Real sweeps of tiny runs (smoke preset, 2 tasks, 1 epoch): a 2 x 2 x 2 sweep with the local
launcher, its relaunch, and the submitit path (its local executor) with one failing job.
About a minute on two idle cores."""

from __future__ import annotations

import re
import time

from clavs.cli import main
from clavs.results import RunDir, list_runs

TINY = ["--preset", "smoke", "--split", "21-2", "train.epochs=1", "--no-progress"]


def test_smoke_sweep_completes_relaunch_runs_nothing_and_tables_it(clavs_home, tmp_path, capsys):
    runs = tmp_path / "runs"
    sweep = ["sweep", "--methods", "finetune,ewc", "--protocols", "cil,dil", "--seeds", "0,1", "--jobs", "2",
             "--runs-dir", str(runs), *TINY]
    assert main(sweep) == 0
    out = capsys.readouterr().out
    assert "sweep: 8 done, 0 failed, 0 skipped (already done)" in out
    done = [r.path for r in list_runs(runs) if r.done]
    assert len(done) == 8 and all((p / "sweep.log").is_file() for p in done)

    # `clavs run` with the same options finds the sweep's run directory finished
    assert main(["run", "--preset", "smoke", "--method", "ewc", "--protocol", "dil", "--seed", "1", "--split",
                 "21-2", "--runs-dir", str(runs), "train.epochs=1"]) == 0
    flat = "".join(capsys.readouterr().out.split())  # rich wraps long paths
    assert any(f"alreadydone:{p}(" in flat for p in done)

    logs = {p: (p / "sweep.log").stat().st_mtime_ns for p in done}
    start = time.perf_counter()
    assert main([*sweep, "--select", str(tmp_path / "chosen")]) == 0
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    assert "sweep: 8 jobs, 8 already done, 0 to run" in out and "0 done, 0 failed, 8 skipped" in out
    assert elapsed < 10, f"a finished sweep's relaunch took {elapsed:.1f} s"
    assert logs == {p: (p / "sweep.log").stat().st_mtime_ns for p in done}  # nothing ran
    assert sorted(p.name for p in (tmp_path / "chosen").iterdir()) == [
        "ewc.cil.yaml", "ewc.dil.yaml", "finetune.cil.yaml", "finetune.dil.yaml"]

    # an unfinished run (here: its DONE marker gone after the last task's checkpoint) is resumed, not redone
    unfinished = done[0]
    (unfinished / "DONE").unlink()
    assert main(sweep) == 0
    assert "sweep: 1 done, 0 failed, 7 skipped" in capsys.readouterr().out
    assert "resumed from task_1.pt" in (unfinished / "log.txt").read_text()
    assert (unfinished / "sweep.log").read_text().count("clavs sweep job") == 2

    assert main(["table", str(runs), "--format", "md"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[1] for r in rows[1:]] == ["finetune", "ewc"]
    assert all(r.count("±") == 4 for r in rows[1:])  # CIL and DIL, AA and Forgetting, over two seeds


def test_submitit_local_sweep_finishes_the_others_and_names_the_failure(clavs_home, tmp_path, capsys):
    runs = tmp_path / "runs"
    code = main(["sweep", "--launcher", "submitit-local", "--methods", "finetune", "--protocols", "cil", "--seeds",
                 "2", "--jobs", "2", "--runs-dir", str(runs), *TINY, "data.root=null,/nonexistent/avsbench"])
    out = capsys.readouterr().out
    assert code == 1
    assert "sweep: 1 done, 1 failed, 0 skipped (already done)" in out
    failed = re.search(r"failed: (.*)\n\s+log: (\S+)", out)
    assert "data.root=/nonexistent/avsbench" in failed.group(1)
    assert "error: data.root=/nonexistent/avsbench: no Single-source/" in open(failed.group(2)).read()
    finished = [r for r in list_runs(runs) if r.done]
    assert len(finished) == 1 and RunDir(finished[0].path).summary()["map"]["aa"] is not None
    assert (runs / ".submitit").is_dir()  # the jobs went through submitit
