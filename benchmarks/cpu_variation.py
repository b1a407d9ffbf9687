"""Do a run's numbers depend on which CPU kernels torch picks? Re-run one `clavs run` per ATen CPU capability.

On the CPU, torch dispatches its own (ATen) kernels by CPU capability (DEFAULT, AVX2, AVX512, ...;
`torch.backends.cpu.get_cpu_capability()`), chosen at start-up from the CPU or forced with the
ATEN_CPU_CAPABILITY environment variable. Two machines of the same kind, one with AVX-512 and one
without, therefore round differently: softmax, layer/batch norm, attention, interpolation, AdamW and
torch's normal/uniform samplers give other last bits, which training then amplifies. (MKL's matmul
and oneDNN's convolutions have dispatchers of their own, MKL_CBWR and DNNL_MAX_CPU_ISA /
ONEDNN_MAX_CPU_ISA: this script leaves them as the environment and `clavs` set them, and prints the
run's `cpu_kernels` record from profile.json when there is one.)

For every capability this script runs, in a subprocess with ATEN_CPU_CAPABILITY set,

    clavs run --preset <preset> --no-progress model.visual_weights=none model.audio_weights=none \\
              --runs-dir <work>/<capability>/runs [key=value ...]

with CLAVS_HOME=<work>/<capability>/home (kept between invocations, so SynthAVS is built and the
clip caches, whose audio embeddings are computed by torch too, are filled once per capability), then
prints the capability torch reported, the mAP AA and Forgetting of the run's summary.json, and
whether its matrices.json is byte-identical to the first capability's.

Capability names: default, avx2, avx512 (x86), and `native` (no override: what torch picks itself;
CLAVS_CPU_KERNELS=native is set too, so that clavs does not pin the kernels either).
A capability the CPU lacks (read from /proc/cpuinfo) is skipped: torch would die of SIGILL.

Usage: python benchmarks/cpu_variation.py [--preset smoke] [--capabilities default,avx2,avx512]
                                          [--repeats 1] [--work DIR] [key=value ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# /proc/cpuinfo flags a capability needs (as torch's own detection asks cpuinfo for them)
NEEDS = {"default": (), "avx2": ("avx2", "fma"), "avx512": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "fma")}
DEFAULT_OVERRIDES = ("model.visual_weights=none", "model.audio_weights=none")


def cpu_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def child_env(capability: str, home: Path) -> dict[str, str]:
    env = {**os.environ, "CLAVS_HOME": str(home)}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability == "native":
        env["CLAVS_CPU_KERNELS"] = "native"
    else:
        env["ATEN_CPU_CAPABILITY"] = capability
    return env


def reported_capability(env: dict[str, str]) -> str:
    """What torch says it uses under `env` (an unknown ATEN_CPU_CAPABILITY is ignored with a warning)."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env=env, capture_output=True, text=True, timeout=300)
    return out.stdout.strip() or f"? ({out.stderr.strip()[-200:]})"


def clavs_command() -> list[str]:
    script = Path(sys.executable).with_name("clavs")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from clavs.cli import main; sys.exit(main())"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def max_matrix_difference(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """Largest |difference| between two matrices.json over every metric's R and b entries (None if the
    layouts differ)."""
    worst = 0.0
    try:
        if a["metrics"].keys() != b["metrics"].keys():
            return None
        for name, ma in a["metrics"].items():
            mb = b["metrics"][name]
            rows_a = [*ma.get("R", []), ma.get("b", [])]
            rows_b = [*mb.get("R", []), mb.get("b", [])]
            if len(rows_a) != len(rows_b):
                return None
            for ra, rb in zip(rows_a, rows_b):
                if len(ra) != len(rb):
                    return None
                for x, y in zip(ra, rb):
                    if (x is None) != (y is None):
                        return None
                    if x is not None:
                        worst = max(worst, abs(float(x) - float(y)))
    except (KeyError, TypeError, AttributeError):
        return None
    return worst


def run_one(capability: str, args: argparse.Namespace, overrides: list[str], attempt: int) -> dict[str, Any]:
    base = args.work / capability
    home, runs = base / "home", base / f"runs{attempt}"
    home.mkdir(parents=True, exist_ok=True)
    if runs.exists():
        shutil.rmtree(runs)  # a fresh run each time (a finished one would only be reported again)
    env = child_env(capability, home)
    result: dict[str, Any] = {"capability": capability, "torch_reports": reported_capability(env)}
    command = [*clavs_command(), "run", "--preset", args.preset, "--no-progress", "--runs-dir", str(runs), *overrides]
    log = base / f"run{attempt}.log"
    start = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=args.timeout)
    result["seconds"] = time.perf_counter() - start
    result["log"] = log
    if proc.returncode != 0:
        if proc.returncode == -signal.SIGILL:
            result["error"] = "killed by SIGILL: this CPU lacks the instructions of that capability"
        else:
            tail = log.read_text(errors="replace").strip().splitlines()[-8:]
            result["error"] = f"exit status {proc.returncode}; end of {log}:\n    " + "\n    ".join(tail)
        return result
    done = sorted(runs.glob("**/DONE"))
    if len(done) != 1:
        result["error"] = f"expected one finished run under {runs}, found {len(done)} DONE files"
        return result
    run_dir = done[0].parent
    summary = json.loads((run_dir / "summary.json").read_text())
    result.update(run_dir=run_dir, aa=summary["map"]["aa"], forgetting=summary["map"]["forgetting"],
                  matrices=run_dir / "matrices.json", matrices_sha256=sha256(run_dir / "matrices.json"))
    try:
        kernels = json.loads((run_dir / "profile.json").read_text()).get("cpu_kernels")
    except (OSError, json.JSONDecodeError, AttributeError):
        kernels = None
    if kernels:
        result["kernels"] = kernels
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="passed on to `clavs run`")
    ap.add_argument("--preset", default="smoke", choices=["smoke", "default", "paper"])
    ap.add_argument("--capabilities", default="default,avx2,avx512",
                    help="comma-separated: default, avx2, avx512, native (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs per capability (>1 also checks that a capability repeats itself)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "clavs-cpu-variation",
                    help="one CLAVS_HOME and runs folder per capability under here, kept (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=6 * 3600, help="seconds per run")
    args = ap.parse_args()
    capabilities = [c.strip().lower() for c in args.capabilities.split(",") if c.strip()]
    unknown = [c for c in capabilities if c not in NEEDS and c != "native"]
    if unknown or not capabilities or args.repeats < 1:
        ap.error(f"unknown capabilities {unknown}; choose from {sorted(NEEDS)} and native" if unknown
                 else "need at least one capability and --repeats >= 1")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        ap.error(f"overrides must be key=value, got {bad}")
    given = {o.split("=", 1)[0] for o in args.overrides}
    overrides = [o for o in DEFAULT_OVERRIDES if o.split("=", 1)[0] not in given] + args.overrides
    flags = cpu_flags()

    results = []
    for capability in capabilities:
        missing = [f for f in NEEDS.get(capability, ()) if flags is not None and f not in flags]
        if missing:
            print(f"{capability:8s} skipped: the CPU lacks {', '.join(missing)} (torch would die of SIGILL)")
            continue
        for attempt in range(1, args.repeats + 1):
            r = run_one(capability, args, overrides, attempt)
            r["label"] = label = capability if args.repeats == 1 else f"{capability}#{attempt}"
            results.append(r)
            if "error" in r:
                print(f"{label:8s} torch: {r['torch_reports']:8s} FAILED after {r['seconds']:.0f} s: {r['error']}")
            else:
                print(f"{label:8s} torch: {r['torch_reports']:8s} mAP AA {r['aa']!r}  Forgetting {r['forgetting']!r}  "
                      f"matrices.json sha256 {r['matrices_sha256'][:16]}  ({r['seconds']:.0f} s, {r['run_dir']})",
                      flush=True)
                if "kernels" in r:
                    print(f"{'':8s} profile.json cpu_kernels: {json.dumps(r['kernels'], sort_keys=True)}")

    finished = [r for r in results if "error" not in r]
    if len(finished) > 1:
        ref = finished[0]
        print(f"\nmatrices.json compared with {ref['label']}'s:")
        ref_matrices = json.loads(ref["matrices"].read_text())
        for r in finished[1:]:
            same = r["matrices_sha256"] == ref["matrices_sha256"]
            diff = max_matrix_difference(ref_matrices, json.loads(r["matrices"].read_text()))
            what = "byte-identical" if same else (
                f"DIFFERENT (largest |difference| of an entry: {diff:.3g})" if diff is not None
                else "DIFFERENT (other layout)")
            print(f"  {r['label']:10s} {what}")
    return 0 if results and len(finished) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
