"""The `clavs` command."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Sequence

from clavs.protocols.scenario import PROTOCOLS

EPILOG_RUN = """examples:
  clavs run                                   the embedded default: SynthAVS, ATLAS, CIL 11-2, seed 0
  clavs run --method finetune --protocol til
  clavs run --preset smoke method.lra=false   any config value as key=value (unknown keys are errors)
  clavs run --data-root /data/avsbench --preset paper model.visual_weights=/w/vit_b16.pth \\
            model.audio_weights=/w/Cnn14_16k_mAP=0.438.pth
  clavs run --resume runs/default/cil/atlas/seed0-1a2b3c4d
  clavs run --config selected/atlas.cil.yaml  config values from a file (what `clavs select` writes)
"""


def _add_run_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="train a method through a protocol's tasks; write a run directory",
                       description="Train a continual method through the tasks of a protocol, evaluate after "
                                   "every task, and write config, accuracy matrices, summary, profile and "
                                   "checkpoints to a run directory. Re-running the same config continues an "
                                   "unfinished run and skips a finished one.",
                       epilog=EPILOG_RUN, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="override any config value, e.g. train.lr=3e-4")
    p.add_argument("--method", help="method name (see `clavs methods`); default atlas")
    p.add_argument("--protocol", choices=list(PROTOCOLS), help="continual protocol; default cil")
    p.add_argument("--split", help="task split B-I, e.g. 11-2 (S4) or 31-5 (TF-CL)")
    p.add_argument("--preset", choices=["smoke", "default", "paper"], default="default",
                   help="smoke: tiny data, 1 epoch (tests); default: SynthAVS + tiny encoders (CPU, minutes); "
                        "paper: ViT-B/16 + Cnn14 at 224, 30 epochs (your weight files, a GPU)")
    p.add_argument("--data-root", help="a real AVSBench tree (holding Single-source/ and Multi-sources/)")
    p.add_argument("--runs-dir", help="where run directories go (default ./runs)")
    p.add_argument("--seed", type=int, help="run seed (class order, init, batches); default 0")
    p.add_argument("--epochs", type=int, help="epochs per task")
    p.add_argument("--devices", help="processes per node (Fabric), e.g. 1, 4, 0,1 or auto; train.batch_size is "
                                     "per process (docs/distributed.md)")
    p.add_argument("--num-nodes", type=int, help="nodes (Fabric; under SLURM, srun starts the processes: "
                                                 "scripts/slurm_multinode.sh)")
    p.add_argument("--accelerator", help="cpu | gpu | auto (Fabric)")
    p.add_argument("--precision", help="32-true | bf16-mixed | 16-mixed | ... (Fabric)")
    p.add_argument("--config", metavar="FILE", help="a YAML file of config values (e.g. what `clavs select` writes: "
                                                    "method: {name: atlas, lra_lambda: 5.0}); options and key=value win")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    return p


def run_config(args: argparse.Namespace) -> dict:
    """The resolved config of `clavs run` with these (parsed) options: the one resolution that
    `clavs run` and every job of `clavs sweep` go through."""
    from clavs.config import resolve_config

    options = {
        "protocol.name": args.protocol, "protocol.split": args.split, "data.root": args.data_root,
        "runs_dir": args.runs_dir, "seed": args.seed, "train.epochs": args.epochs,
        "engine.accelerator": args.accelerator, "engine.num_nodes": getattr(args, "num_nodes", None),
        "engine.precision": getattr(args, "precision", None),
        "engine.devices": (int(args.devices) if args.devices and args.devices.isdigit() else args.devices),
    }
    if args.no_progress:
        options["progress"] = False
    return resolve_config(preset=args.preset, method=args.method, options=options, overrides=args.overrides,
                          config_file=args.config)


def parse_run_argv(argv: Sequence[str]) -> argparse.Namespace:
    """`clavs run` options as the command parses them (options and key=value in any order)."""
    return build_parser().run_parser.parse_intermixed_args(list(argv))


# The run directory `clavs run` works on, for the Ctrl-C message.
_ACTIVE_RUN: dict[str, Path] = {}


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from clavs.config import validate_config
    from clavs.engine.loop import TrainingDiverged
    from clavs.engine.runner import run_experiment
    from clavs.errors import ClavsError
    from clavs.results import RunDir

    console = Console()
    if args.resume:
        fixed = {"--method": args.method, "--protocol": args.protocol, "--split": args.split,
                 "--data-root": args.data_root, "--runs-dir": args.runs_dir, "--seed": args.seed,
                 "--epochs": args.epochs, "--precision": args.precision, "key=value": args.overrides or None,
                 "--config": args.config,
                 "--preset": None if args.preset == "default" else args.preset}
        given = [k for k, v in fixed.items() if v is not None]
        if given:
            raise ClavsError(f"--resume continues a run with its saved config.yaml; {', '.join(given)} cannot change "
                             f"it (only --devices, --num-nodes, --accelerator, --no-progress can)")
        from clavs.results.checkpoints import check_run_binding

        run = RunDir(Path(args.resume))
        if not run.path.is_dir():
            raise ClavsError(f"{run.path}: no such folder (--resume takes a run directory, see `clavs runs`)")
        config = check_run_binding(run)  # config.yaml as the run started: its hash is the folder's
        validate_config(config)
        run_dir = run.path
        if args.devices:
            config["engine"]["devices"] = int(args.devices) if args.devices.isdigit() else args.devices
        if args.num_nodes:
            config["engine"]["num_nodes"] = args.num_nodes
        if args.accelerator:
            config["engine"]["accelerator"] = args.accelerator
        if args.no_progress:
            config["progress"] = False
        validate_config(config)
    else:
        config = run_config(args)
        run_dir = None
    from clavs.results.store import run_dir_for

    target = run_dir or run_dir_for(config, config["runs_dir"])
    if RunDir(target).done:
        console.print(f"already done: {target} (delete it to run again)")
        _print_run(console, target)
        return 0
    if run_dir is None and (Path(target) / "config.yaml").exists():
        from clavs.results.checkpoints import check_run_binding

        check_run_binding(RunDir(target), config)  # an unfinished run of this config: refuse an edited one now
    _ACTIVE_RUN["path"] = Path(target)
    try:
        path = run_experiment(config, run_dir=target, console=console)
    except TrainingDiverged as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 3
    if _global_rank() == 0:
        console.print(f"run directory: {path}")  # once, not by every process of a multi-device run
        _print_run(console, path)
    return 0


def _global_rank() -> int:
    """This process's rank in a multi-device run (0 alone): from the process group Fabric set up,
    which covers its own launcher's processes and those srun starts alike."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _print_run(console, path: Path) -> None:
    from clavs.reports.tables import matrix_table, summary_table
    from clavs.results import load_run

    run = load_run(path)
    console.print(matrix_table(run["matrices"], "map"))
    console.print(summary_table(run["summary"]))


def cmd_show(args: argparse.Namespace) -> int:
    from rich.console import Console

    from clavs.errors import ClavsError
    from clavs.reports.tables import matrix_table, summary_table
    from clavs.results import load_run
    from clavs.results.store import CONFIG_FILE

    console = Console()
    path = Path(args.run_dir)
    if not (path / CONFIG_FILE).is_file():
        what = "no such folder" if not path.exists() else "not a clavs run directory (no config.yaml)"
        raise ClavsError(f"{path}: {what}; `clavs runs` lists the run directories")
    run = load_run(path)
    metrics = run["matrices"].get("metrics") if isinstance(run["matrices"], dict) else None
    if not isinstance(metrics, dict):
        raise ClavsError(f"{path / 'matrices.json'}: damaged (no 'metrics' table)")
    for metric in args.metric:
        if metric not in metrics:
            raise ClavsError(f"no metric '{metric}' in {path}; have {', '.join(metrics)}")
        console.print(matrix_table(run["matrices"], metric))
        if args.plot:
            from clavs.reports.figures import plot_matrix

            out = Path(args.plot)
            if len(args.metric) > 1:
                out = out.with_name(f"{out.stem}_{metric}{out.suffix or '.png'}")
            plot_matrix(run["matrices"], metric, out, title=f"{run['config']['method']['name']} "
                        f"{run['config']['protocol']['name']} seed {run['config']['seed']}: {metric}")
            console.print(f"heatmap written to {out}")
    if run["summary"]:
        console.print(summary_table(run["summary"]))
    else:
        console.print("unfinished run: no summary yet")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from clavs.results import list_runs

    _check_runs_dir(args.runs_dir)
    damaged: list[tuple[Path, str]] = []
    runs = list_runs(args.runs_dir, damaged=damaged)
    table = Table(title=f"runs under {args.runs_dir}")
    for col in ("experiment", "protocol", "method", "seed", "status", "path"):
        table.add_column(col)
    for r in runs:
        table.add_row(r.experiment, r.protocol, r.method, str(r.seed), "done" if r.done else "unfinished", str(r.path))
    Console().print(table)
    _report_damaged(damaged)
    return 0


def _check_runs_dir(runs_dir: str) -> None:
    from clavs.errors import ClavsError

    path = Path(runs_dir)
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "no such folder"
        raise ClavsError(f"{path}: {what} (the folder holding run directories, e.g. ./runs)")


def _report_damaged(damaged: list[tuple[Path, str]]) -> None:
    for path, reason in damaged:
        print(f"warning: skipped damaged run {path}: {reason}", file=sys.stderr)


def cmd_table(args: argparse.Namespace) -> int:
    _check_runs_dir(args.runs_dir)
    damaged: list[tuple[Path, str]] = []
    if args.layout == "runs":
        return _table_runs_layout(args, damaged)
    from rich.console import Console

    from clavs.reports.benchmark_table import build_benchmark_table

    table = build_benchmark_table(args.runs_dir, metric=args.metric, split=args.split, damaged=damaged)
    _report_damaged(damaged)
    if table.empty:
        print(f"no finished runs with metric '{args.metric}' ({args.split}) under {args.runs_dir}", file=sys.stderr)
        return 1
    if args.format == "rich":
        console = Console(width=max(160, Console().width))
        for t in table.rich_tables():
            console.print(t)
    else:
        sys.stdout.write(table.render(args.format))
    return 0


def _table_runs_layout(args: argparse.Namespace, damaged: list[tuple[Path, str]]) -> int:
    """One row per config (experiment, protocol, method and the differing values) with every summary value."""
    from rich.console import Console
    from rich.table import Table

    from clavs.errors import ClavsError
    from clavs.metrics.names import ANYTIME_KEY, METRIC_TITLES, SUMMARY_KEYS
    from clavs.results.aggregate import aggregate

    if args.format not in ("rich", "md"):
        raise ClavsError(f"--layout runs prints rich or md, not {args.format} (the benchmark layout has every format)")
    rows = aggregate(args.runs_dir, args.metric, split=args.split, damaged=damaged)
    _report_damaged(damaged)
    if not rows:
        print(f"no finished runs with metric '{args.metric}' ({args.split}) under {args.runs_dir}", file=sys.stderr)
        return 1
    keys = SUMMARY_KEYS + ((ANYTIME_KEY,) if any(not math.isnan(r["a_auc"][0]) for r in rows) else ())
    table = Table(title=f"{METRIC_TITLES.get(args.metric, args.metric)} on {args.split} clips: mean ± std over "
                        f"seeds (x100); E = uses exemplars")
    for col in ("experiment", "protocol", "method", "E", "seeds"):
        table.add_column(col)
    for _, title in keys:
        table.add_column(title, justify="right")

    def cell(mean_std: tuple[float, float], n: int) -> str:
        mean, std = mean_std
        if math.isnan(mean):
            return "·"
        return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"

    body = [[r["experiment"], r["protocol"], r["label"], "E" if r["uses_exemplars"] else "",
             ",".join(map(str, r["seeds"])), *[cell(r[k], len(r["seeds"])) for k, _ in keys]] for r in rows]
    if args.format == "md":
        head = ["experiment", "protocol", "method", "E", "seeds", *[t for _, t in keys]]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for line in body:
            print("| " + " | ".join(line) + " |")
        return 0
    for line in body:
        table.add_row(*line)
    Console(width=max(160, Console().width)).print(table)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from clavs.engine.predict import predict_input

    report = predict_input(args.run_dir, args.input, args.out, task_id=args.task_id, checkpoint=args.checkpoint,
                           accelerator=args.accelerator)
    overlay = report["overlay"]
    print(f"{report['input']}: {report['seconds']} s in {len(report['windows'])} window(s) of "
          f"{report['window_seconds']} s, {report['method']} ({report['protocol']}) after task "
          f"{report['tasks_trained'] - 1} ({report['checkpoint']})")
    for window in report["windows"]:
        if window.get("top"):
            print(f"  {window['start']:>4}-{window['end']:<4} s  {window['top']} "
                  f"({100 * window['classes'][window['top']]:.1f}%)")
    print(f"wrote {len(report['masks']['files'])} masks ({args.out}/masks/), overlay.mp4 "
          f"({overlay['video_codec']} + aac), overlay.gif, predictions.json to {args.out}")
    return 0


EPILOG_PREDICT = """examples:
  clavs predict runs/default/cil/atlas/seed0-1a2b3c4d my_video.mp4 --out predicted/
  clavs predict RUN_DIR clip_folder/ --out predicted/ --checkpoint task_3    an earlier task's model
  clavs predict runs/default/til/lwf/seed0-... video.mp4 --out p/ --task-id 2  TIL: the task's mask head

INPUT is a video file with sound (any length, any format FFmpeg reads) or an AVSBench-style clip folder
(frames <name>_1.png, <name>_2.png, ... one per second, and audio.wav). Sampling as AVSBench: one frame
per second (the frame on screen at 15/16 of the second) and each second's audio at 16 kHz; windows of
five seconds, the last one the final five seconds. Writes masks/0000.png, 0001.png, ... (one per
second, 0/255, at the video's resolution), overlay.mp4 (with the input's sound), overlay.gif and
predictions.json (the windows, and class probabilities where the run has a class head).
"""


EPILOG_SWEEP = """examples:
  clavs sweep --methods atlas,finetune --protocols cil,dil --seeds 0,1 --preset smoke --jobs 2
  clavs sweep --methods atlas --protocols cil method.lra=true,false method.pre_conditioning=true,false
  clavs sweep --grid table1 --runs-dir runs --jobs 2        the paper's Table 1 (shipped grids: table1,
                                                            table2, validation; or a YAML file of yours)
  clavs sweep --grid validation --select selected/          choose hyperparameters on validation AA
  clavs sweep --grid table1 --selected selected/            Table 1 with the chosen hyperparameters
  clavs sweep --grid table1 --launcher slurm --partition gpu --gpus-per-job 1 --jobs 32
Relaunching the same sweep skips the finished runs and resumes the unfinished ones. Exit code 1 when
a job failed (the others still run); each job's output is in sweep.log in its run directory.
"""


def _add_job_spec_options(p: argparse.ArgumentParser) -> None:
    """What a sweep's jobs are: shared by `clavs sweep` and `clavs select` (the same options pick the
    same jobs)."""
    p.add_argument("overrides", nargs="*", metavar="key=v1,v2",
                   help="a config value for every job, or an axis of the grid when it lists several values "
                        "(method.* keys reach only the methods that have them)")
    p.add_argument("--grid", metavar="NAME|FILE", help="a YAML grid: table1, table2, validation, first_session (shipped in "
                                                       "clavs/configs/experiments/) or a file of yours")
    p.add_argument("--methods", help="comma-separated methods, or all (with --grid: keep only these)")
    p.add_argument("--protocols", help="comma-separated protocols (default cil; with --grid: keep only these)")
    p.add_argument("--seeds", help="e.g. 0,1,2 or 0-4 (default 0; with --grid: replaces the file's seeds)")
    p.add_argument("--preset", choices=["smoke", "default", "paper"], help="as in clavs run (default: default)")
    p.add_argument("--split", help="task split B-I for every job (default: each protocol's)")
    p.add_argument("--data-root", help="a real AVSBench tree, as in clavs run")
    p.add_argument("--epochs", type=int, help="epochs per task, as in clavs run")
    p.add_argument("--devices", help="devices per job (Fabric), as in clavs run")
    p.add_argument("--accelerator", help="cpu | gpu | auto, as in clavs run")
    p.add_argument("--config", metavar="FILE", help="a config file for every job, as in clavs run --config")
    p.add_argument("--selected", metavar="DIR", help="per job, DIR/<method>.<protocol>.yaml (what clavs select "
                                                     "writes) as its --config where it exists")
    p.add_argument("--metric", default="map", help="metric whose validation AA selection uses (default map)")


def _add_sweep_parsers(sub: argparse._SubParsersAction) -> dict[str, argparse.ArgumentParser]:
    p = sub.add_parser("sweep", help="run many runs: methods x protocols x seeds x grid values; idempotent",
                       description="Expand methods x protocols x seeds x key=v1,v2 values (or a YAML grid file) "
                                   "into `clavs run` jobs, each in its own process, and run them with a launcher. "
                                   "A job's run directory is the one `clavs run` with the same options makes.",
                       epilog=EPILOG_SWEEP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_job_spec_options(p)
    p.add_argument("--runs-dir", help="where run directories go (default ./runs)")
    p.add_argument("--launcher", choices=["local", "slurm", "submitit-local"], default="local",
                   help="local: --jobs processes at once on this machine; slurm: submitit job arrays "
                        "(pip install 'clavs[slurm]'); submitit-local: submitit's local executor, the SLURM "
                        "code path on this machine (to check a sweep before submitting it)")
    p.add_argument("--jobs", type=int, help="jobs at once (default 1; with GPUs: one per visible GPU; slurm: "
                                            "the array's parallelism)")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and their status; run nothing")
    p.add_argument("--select", metavar="OUT", help="after the sweep, run clavs select on its jobs into OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per finished job)")
    slurm = p.add_argument_group("slurm (and submitit-local) options")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--time", type=int, default=24 * 60, metavar="MINUTES", help="time limit per job (default 1440)")
    slurm.add_argument("--gpus-per-job", type=int, default=0)
    slurm.add_argument("--cpus-per-job", type=int)
    slurm.add_argument("--mem-gb", type=float)
    slurm.add_argument("--submitit-folder", help="submitit's files (default <runs-dir>/.submitit)")
    q = sub.add_parser("select", help="per method and protocol, the grid point with the best validation AA",
                       description="Rank the grid points of a sweep's jobs (the same options as the sweep) by "
                                   "validation AA (summary_val.json; test numbers are never read), print the "
                                   "ranking, and write OUT/<method>.<protocol>.yaml with the best point's method "
                                   "section, for `clavs run --config` or `clavs sweep --selected OUT`.")
    q.add_argument("runs_dir", help="the folder of the sweep's run directories")
    _add_job_spec_options(q)
    q.add_argument("--out", default="selected", help="folder for the chosen configs (default ./selected)")
    return {"sweep": p, "select": q}


def _sweep_jobs(args: argparse.Namespace) -> tuple[list, list[str]]:
    from clavs.errors import ClavsError
    from clavs.launch.grid import RunOptions, blocks_from_options, expand

    if args.config and args.selected:
        raise ClavsError("--config and --selected both choose each job's config file: give one")
    blocks, _ = blocks_from_options(grid=args.grid, methods=args.methods, protocols=args.protocols, seeds=args.seeds,
                                    preset=args.preset, split=args.split, overrides=args.overrides)
    options = RunOptions(runs_dir=args.runs_dir, data_root=args.data_root, epochs=args.epochs, devices=args.devices,
                         accelerator=args.accelerator, config=args.config, selected=args.selected)
    return expand(blocks, options)


def _launcher(args: argparse.Namespace):
    from clavs.launch.launchers import LocalLauncher, SubmititLauncher

    if args.jobs is not None and args.jobs < 1:
        from clavs.errors import ClavsError

        raise ClavsError(f"--jobs {args.jobs}: must be at least 1")
    if args.launcher == "local":
        return LocalLauncher(args.jobs)
    folder = args.submitit_folder or str(Path(args.runs_dir or "runs") / ".submitit")
    return SubmititLauncher(folder, cluster="slurm" if args.launcher == "slurm" else "local", jobs=args.jobs,
                            partition=args.partition, time_min=args.time, gpus_per_job=args.gpus_per_job,
                            cpus_per_job=args.cpus_per_job, mem_gb=args.mem_gb)


def cmd_sweep(args: argparse.Namespace) -> int:
    from rich.console import Console

    from clavs.launch.sweep import job_status, run_sweep

    console = Console()
    jobs, notes = _sweep_jobs(args)
    for note in notes:
        console.print(f"not run: {note}")
    if args.dry_run:
        for job in jobs:
            print(f"{job_status(job):10s} {job.label}\n           {job.run_dir}")
        print(f"{len(jobs)} jobs")
        return 0
    try:
        report = run_sweep(jobs, _launcher(args), console, progress=not args.no_progress)
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; relaunch the same sweep to run the rest (unfinished runs "
              "resume from their last task checkpoint)", file=sys.stderr)
        return 130
    if args.select:
        _select(jobs, args.metric, args.select, console)
    return 1 if report.failed else 0


def _select(jobs: list, metric: str, out: str, console) -> None:
    from clavs.launch.select import rank, ranking_tables, write_selection

    ranking = rank(jobs, metric)
    for table in ranking_tables(ranking, metric):
        console.print(table)
    for scores in ranking.values():
        for s in scores:
            for problem in s.problems:
                print(f"warning: skipped {problem}", file=sys.stderr)
    for path in write_selection(ranking, out, metric):
        console.print(f"wrote {path}")


def cmd_select(args: argparse.Namespace) -> int:
    from rich.console import Console

    _check_runs_dir(args.runs_dir)
    jobs, _ = _sweep_jobs(args)
    _select(jobs, args.metric, args.out, Console(width=max(120, Console().width)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from clavs.reports.report import ReportOptions, build_report

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    options = ReportOptions(metric=args.metric, heatmap_metric=args.heatmap_metric,
                            qualitative=not args.no_qualitative, qualitative_protocol=args.qualitative_protocol,
                            methods=methods, clips_per_task=args.clips)
    report = build_report(Path(args.runs_dir), Path(args.out), options,
                          log=lambda message: print(f"  {message}", file=sys.stderr, flush=True))
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"report: {report.index} ({len(report.figures)} figures in {report.index.parent / 'figures'}, "
          f"{report.seconds:.1f} s)")
    if args.screenshot:
        from clavs.reports.browser import screenshot

        status = screenshot(report.index, Path(args.screenshot))
        print(f"screenshot: {args.screenshot} (Chromium decoded {status.loaded} of {status.images} images)")
        if not status.ok:
            from clavs.errors import ClavsError

            raise ClavsError(f"{report.index}: only {status.loaded} of {status.images} images loaded in Chromium")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from clavs.methods import available_methods, get_method_class
    from clavs.methods.base import FAMILIES

    table = Table(title="methods (clavs run --method NAME)")
    for col in ("method", "family", "stores data", "protocols", "what it is"):
        table.add_column(col)
    declined_notes = []
    for name in available_methods():
        cls = get_method_class(name)
        doc = " ".join((cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").split())
        doc = doc.split(". ")[0].rstrip(".")  # the first sentence
        runs = [p for p in cls.protocols if p not in cls.declined]
        declined_notes += [f"{name} declines {p}: {why}" for p, why in cls.declined.items()]
        stores = "yes (exemplars)" if cls.uses_exemplars else "no"
        table.add_row(name, FAMILIES[cls.family], stores, ",".join(runs), doc)
    console = Console(width=max(150, Console().width))
    console.print(table)
    for note in declined_notes:
        console.print(note)
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from clavs.data.synth import generate

    path = generate(Path(args.out), preset=args.preset, seed=args.seed, workers=args.workers, progress=True,
                    overwrite=args.overwrite)
    print(f"SynthAVS ({args.preset}, seed {args.seed}) written to {path}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from clavs.data.check import check_main

    return check_main(Path(args.root))


def cmd_pretrain(args: argparse.Namespace) -> int:
    from clavs.pretrain import ensure_pretrained

    for kind in ("visual", "audio"):
        path = ensure_pretrained(kind, force=args.force, progress=True)
        print(f"{kind}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clavs",
        description="clavs: exemplar-free continual learning for audio-visual segmentation (CL-AVS) and ATLAS.",
        epilog="Start with `clavs run` (the embedded default); `clavs COMMAND --help` for details.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of the one-line message (also CLAVS_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.run_parser = _add_run_parser(sub)  # type: ignore[attr-defined]
    parser.job_parsers = _add_sweep_parsers(sub)  # type: ignore[attr-defined]
    p = sub.add_parser("show", help="print a run's accuracy matrices and summary")
    p.add_argument("run_dir")
    p.add_argument("--metric", action="append", default=None, help="metric(s) to show (default map)")
    p.add_argument("--plot", metavar="PNG", help="also write the accuracy matrix as a heatmap")
    p = sub.add_parser("runs", help="list the run directories under a folder")
    p.add_argument("runs_dir", nargs="?", default="runs")
    p = sub.add_parser("table", help="the paper's tables of finished runs: mean ± std over seeds",
                       description="Layout benchmark (default): the paper's Table 1 (methods x protocols, Avg "
                                   "<metric> = AA and Avg For = Forgetting, mean ± std over seeds, family and a † "
                                   "for exemplar methods, best per column in bold, — where no run finished) and, "
                                   "when runs of a method differ by boolean hyperparameters, the Table 2 ablation "
                                   "layout. Layout runs: one row per config with every summary value (LA, AA, "
                                   "A_inc, Forgetting, BWT, FWT); runs differing in more than the seed are "
                                   "separate rows.")
    p.add_argument("runs_dir", nargs="?", default="runs")
    p.add_argument("--metric", default="map", help="metric (default map)")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="test clips (reported numbers) or validation clips (what choices are made on)")
    p.add_argument("--format", choices=["rich", "md", "latex", "csv", "html"], default="rich",
                   help="rich: a terminal table; md: Markdown; latex: a tabular body (\\input it in a table); "
                        "csv: unrounded numbers, a *_best column per value, empty where missing; html: a <table>")
    p.add_argument("--layout", choices=["benchmark", "runs"], default="benchmark",
                   help="benchmark: Table 1 (+ Table 2 for ablations); runs: every summary value per config "
                        "(rich or md)")
    p = sub.add_parser("report", help="an HTML report of a folder of runs: tables and the paper's figures",
                       description="Write DIR/index.html, a self-contained page (no network) with the benchmark "
                                   "tables and the paper's figures of the finished runs under RUNS_DIR, each figure "
                                   "also as PNG and SVG in DIR/figures/: Figure 4 forward transfer vs forgetting "
                                   "(TIL, DIL), Figure 5 accuracy-matrix heatmaps (CIL), Figure 6 normalised radar "
                                   "profiles (accuracy, retention, plasticity, stability, speed, memory efficiency; "
                                   "each axis defined on the page), Figure 3 qualitative overlays (predictions of "
                                   "the chosen methods' last checkpoints on a few test clips of the first and last "
                                   "task), and per run its files and anytime-accuracy curve. docs/report.md "
                                   "describes every figure.")
    p.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR", help="folder of run directories")
    p.add_argument("--out", default="report", metavar="DIR", help="output folder (default ./report)")
    p.add_argument("--metric", default="map", help="metric of the tables and Figures 4 and 6 (default map)")
    p.add_argument("--heatmap-metric", default="maxf", help="metric of Figure 5's matrices (default maxf, as the paper)")
    p.add_argument("--qualitative-protocol", choices=list(PROTOCOLS),
                   help="protocol of Figure 3 (default cil when there are CIL runs)")
    p.add_argument("--methods", help="Figure 3's methods, comma separated (names or table labels); "
                                     "default the four best by AA")
    p.add_argument("--clips", type=int, default=2, help="Figure 3: test clips per task shown (default 2)")
    p.add_argument("--no-qualitative", action="store_true",
                   help="leave out Figure 3 (which loads checkpoints and reads the dataset tree)")
    p.add_argument("--screenshot", metavar="PNG",
                   help="also open the page in headless Chromium, check every image loaded, and save a "
                        "screenshot of the whole page")
    p = sub.add_parser("predict", help="segment the sounding objects of your video with a run's checkpoint",
                       description="Segment the sounding objects of a video (or an AVSBench-style clip folder) "
                                   "with a trained run: masks per second, an overlay video with the sound, a GIF "
                                   "and the class predictions per window.",
                       epilog=EPILOG_PREDICT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with checkpoints (see `clavs runs`)")
    p.add_argument("input", metavar="INPUT", help="a video file with sound, or a clip folder (frames + audio.wav)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for masks/, overlay.mp4, overlay.gif, "
                                                               "predictions.json")
    p.add_argument("--task-id", type=int, metavar="K", help="TIL runs: the task whose mask head to use (required)")
    p.add_argument("--checkpoint", metavar="task_K", help="the model after task K (default: the latest checkpoint)")
    p.add_argument("--accelerator", default="cpu", help="cpu (default) | gpu | auto")
    sub.add_parser("methods", help="list the available methods")
    p = sub.add_parser("pretrain", help="pretrain the tiny encoders on synthetic classes disjoint from the 23 "
                                        "(cached under $CLAVS_HOME or $XDG_CACHE_HOME/clavs; on x86-64 the "
                                        "weights shipped with clavs are copied in instead: --force to retrain)")
    p.add_argument("--force", action="store_true", help="pretrain again even if cached or shipped")
    data = sub.add_parser("data", help="build SynthAVS or check an AVSBench tree")
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    p = dsub.add_parser("synth", help="write SynthAVS in the exact AVSBench layout")
    p.add_argument("out", help="output folder (gets Single-source/ and Multi-sources/)")
    p.add_argument("--preset", choices=["smoke", "default"], default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if OUT holds a SynthAVS build of other settings")
    p = dsub.add_parser("check", help="validate a whole AVSBench tree; report every problem")
    p.add_argument("root", help="folder holding Single-source/ and Multi-sources/")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `clavs` command. The one error boundary: an expected failure prints `error: <message>` on
    stderr and returns 2 (`data check` findings: 1; a diverged training: 3; Ctrl-C: 130); `--debug`
    (anywhere on the line, or CLAVS_DEBUG=1) shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CLAVS_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        return _main(argv)
    except BrokenPipeError:  # `clavs table ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        if debug:
            raise
        print(_interrupted_message(), file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one boundary
        if debug:
            raise
        from clavs.errors import user_message

        message = user_message(e)
        if message is None:
            message = (f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]}\n"
                       f"(a bug in clavs: rerun with --debug for the traceback and report it)")
        print(f"error: {message}", file=sys.stderr)
        return 2
    finally:
        _ACTIVE_RUN.clear()


def _interrupted_message() -> str:
    path = _ACTIVE_RUN.get("path")
    if path is None:
        return "interrupted"
    from clavs.results import RunDir

    latest = RunDir(path).latest_checkpoint() if path.is_dir() else None
    kept = f"tasks 0..{latest[0]} are finished and kept" if latest else "no task was finished yet"
    return f"interrupted: {kept} in {path}; continue with `clavs run --resume {path}`"


def _main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from clavs.utils.kernels import pin_cpu_kernels

    pin_cpu_kernels()  # before torch runs a kernel: the same numbers on every x86-64 CPU
    parser = build_parser()
    # Options and key=value values may come in any order after these commands.
    intermixed = {"run": parser.run_parser, **parser.job_parsers}
    if argv[:1] and argv[0] in intermixed:
        args = intermixed[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
    else:
        args = parser.parse_args(argv)
    if args.command == "show":
        args.metric = args.metric or ["map"]
    if args.command == "data":
        handler = {"synth": cmd_data_synth, "check": cmd_data_check}.get(args.data_command)
        if handler is None:
            parser.parse_args(["data", "--help"])  # prints the subcommands and exits
        return handler(args)
    handler = {"run": cmd_run, "show": cmd_show, "runs": cmd_runs, "table": cmd_table, "predict": cmd_predict,
               "sweep": cmd_sweep, "select": cmd_select, "report": cmd_report, "methods": cmd_methods,
               "pretrain": cmd_pretrain}.get(args.command)
    if handler is not None:
        return handler(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
