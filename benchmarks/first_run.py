"""A newcomer's first run, timed: `clavs run` (the embedded default) from empty caches, then again warm,
then the training step's arithmetic rate against the machine's.

1. Cold: `clavs run --no-progress` in a subprocess with HOME, XDG_CACHE_HOME and CLAVS_HOME pointed
   at empty temporary folders (a new user's machine; the environment is the one install.sh built).
2. Warm: the run directory is deleted and the same command runs again (every cache kept).
3. The phases of each, from the run's profile.json: the setup (`setup_seconds`: SynthAVS build,
   pretrained weights, decoding, audio embedding, scenario, model), then summed over the tasks:
   training, model selection (validation after each epoch), the test matrix, the validation matrix,
   end_task, checkpoints and result files; the initial scores; "start-up and the rest" is the wall
   time minus all of these (interpreter start, imports, Fabric, the final table).
4. In this process, on one thread as the default preset runs: the FLOP/s of the default ATLAS
   training step (forward and backward of one batch of task 0, counted by torch.utils.flop_counter,
   timed over several steps of the engine's own `Trainer.step`) against a single-thread matrix
   multiply measured just before; then the ten operators that take most of the step's time.

Usage: python benchmarks/first_run.py [--work DIR] [--steps 20] [--no-runs] [key=value ...]
(key=value: overrides for both runs, e.g. train.epochs=2 for a quicker look.) Prints tables; the
machine is named by its CPU model and core count. Times vary with the load on the machine: compare
the cold and warm figures of one invocation, not figures of different machines or moments.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETUP = [("dataset", "SynthAVS build (or find) and read the CSVs"),
         ("pretrained_weights", "pretrained tiny encoders into the cache"),
         ("decode", "decode frames, masks, waveforms"),
         ("embed_audio", "frozen audio encoder over every second"),
         ("scenario", "tasks from the records"),
         ("build_model", "build the network")]
PER_TASK = [("train_seconds", "training steps"),
            ("select_seconds", "model selection (validation each epoch)"),
            ("eval_seconds", "test matrix rows"),
            ("val_eval_seconds", "validation matrix rows"),
            ("end_task_seconds", "end_task (consolidation)"),
            ("write_seconds", "checkpoints and result files")]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def clavs_command() -> list[str]:
    exe = Path(sys.executable).with_name("clavs")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from clavs.cli import main; sys.exit(main())"]


def timed_run(home: Path, runs: Path, overrides: list[str]) -> tuple[float, dict]:
    env = dict(os.environ, HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), CLAVS_HOME=str(home / "clavs"))
    start = time.perf_counter()
    done = subprocess.run([*clavs_command(), "run", "--no-progress", "--runs-dir", str(runs), *overrides],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"clavs run failed ({done.returncode}):\n{done.stdout[-3000:]}")
    profiles = list(runs.rglob("profile.json"))
    if len(profiles) != 1:
        sys.exit(f"expected one run under {runs}, found {len(profiles)}")
    return wall, json.loads(profiles[0].read_text())


def phases(wall: float, profile: dict) -> dict[str, float]:
    out = {name: float(profile.get("setup_seconds", {}).get(name, 0.0)) for name, _ in SETUP}
    out["initial_scores"] = float(profile.get("initial_eval_seconds", 0.0))
    for key, _ in PER_TASK:
        out[key] = sum(float(t.get(key) or 0.0) for t in profile["tasks"])
    out["rest"] = wall - sum(out.values())
    return out


def print_phases(cold: tuple[float, dict], warm: tuple[float, dict]) -> None:
    pc, pw = phases(*cold), phases(*warm)
    labels = dict(SETUP) | {"initial_scores": "scores before training (b)"} | dict(PER_TASK) | {"rest": "start-up and the rest"}
    print(f"\n{'phase':44s} {'cold s':>9s} {'warm s':>9s}")
    for key, label in labels.items():
        print(f"{label:44s} {pc[key]:9.1f} {pw[key]:9.1f}")
    print(f"{'total (wall)':44s} {cold[0]:9.1f} {warm[0]:9.1f}")
    print(f"cold / warm: {cold[0] / warm[0]:.2f}")


def matmul_rate(n: int = 1024, k: int = 512, m: int = 512, seconds: float = 2.0) -> float:
    import torch

    a, b = torch.randn(n, k), torch.randn(k, m)
    for _ in range(3):
        a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    return 2 * n * k * m * reps / (time.perf_counter() - start)


def step_rate(work: Path, overrides: list[str], steps: int) -> None:
    """FLOP/s of the default ATLAS training step vs the single-thread matmul rate, and its top operators."""
    os.environ["CLAVS_HOME"] = str(work / "home" / "clavs")  # the warm caches of the runs above
    import torch
    from lightning_fabric import Fabric
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from clavs.config import resolve_config
    from clavs.engine import runner
    from clavs.engine.loop import Trainer
    from clavs.methods import get_method_class
    from clavs.methods.context import MethodContext

    config = resolve_config(options={"progress": False, "runs_dir": str(work / "bench-runs")}, overrides=overrides)
    torch.set_num_threads(int(config["engine"]["threads"] or torch.get_num_threads()))
    root = runner.dataset_root(config, progress=False)
    datasets = runner.open_datasets(config, root)
    decoded = runner.decode_stores(config, datasets, None)
    scenario = runner.build_scenario_for(config, datasets, decoded)
    stores, audio_dim = runner.embed_stores(config, datasets, decoded, scenario, None)
    method_cls = get_method_class(config["method"]["name"])
    model = method_cls.build_model(config, scenario, audio_dim)
    fabric = Fabric(accelerator="cpu", devices=1, precision=config["engine"]["precision"])
    ctx = MethodContext(fabric=fabric, config=config, log=lambda m: None, task_free=False)
    method = method_cls(model, method_cls.make_hparams(config["method"]), scenario, ctx)
    trainer = Trainer(method, scenario, stores, ctx)
    task = scenario.tasks[0]
    method.begin_task(task)
    wrapped, optimizer = trainer._optimizer()
    batch = next(iter(trainer.loader("train", task.train, task_id=0, train=True, seed=0)))
    model.train()
    rate = matmul_rate()
    for _ in range(3):
        trainer.step(wrapped, optimizer, batch, "warm-up")
    with FlopCounterMode(display=False) as counter:
        trainer.step(wrapped, optimizer, batch, "count")
    flops = counter.get_total_flops()
    start = time.perf_counter()
    for i in range(steps):
        trainer.step(wrapped, optimizer, batch, f"step {i}")
    per_step = (time.perf_counter() - start) / steps
    print(f"\ntraining step ({config['method']['name']}, {batch.size} clips x {len(batch.decoded_frames)} decoded "
          f"frame(s) at {config['data']['image_size']} px, {torch.get_num_threads()} thread(s)):")
    print(f"  {flops / 1e9:.2f} GFLOP per step, {per_step * 1e3:.0f} ms per step -> {flops / per_step / 1e9:.1f} GFLOP/s")
    print(f"  single-thread matmul (1024x512 @ 512x512), same process: {rate / 1e9:.1f} GFLOP/s")
    print(f"  ratio: {flops / per_step / rate:.2f} of the matmul rate")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(3):
            trainer.step(wrapped, optimizer, batch, f"profiled step {i}")
    print("\nwhere a step's time goes (3 steps, operators by self time):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=48))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", help="folder for the caches and runs (default: a temporary folder, removed after)")
    ap.add_argument("--steps", type=int, default=20, help="training steps timed for the FLOP rate")
    ap.add_argument("--no-runs", action="store_true", help="only the training-step measurement (needs --work "
                                                           "holding the caches of an earlier invocation)")
    ap.add_argument("overrides", nargs="*", help="key=value for both runs and the step measurement")
    args = ap.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="clavs-first-run-"))
    print(f"machine: {cpu_name()}, {os.cpu_count()} logical cores, {platform.system()} {platform.machine()}; "
          f"python {platform.python_version()}")
    try:
        if not args.no_runs:
            home = work / "home"
            if home.exists() and any(home.iterdir()):
                sys.exit(f"{home} is not empty: the cold run needs empty caches (choose another --work)")
            home.mkdir(parents=True, exist_ok=True)
            cold = timed_run(home, work / "runs", args.overrides)
            print(f"cold run: {cold[0]:.1f} s")
            shutil.rmtree(work / "runs")
            warm = timed_run(home, work / "runs", args.overrides)
            print(f"warm run: {warm[0]:.1f} s")
            print_phases(cold, warm)
        step_rate(work, args.overrides, args.steps)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
