"""The same numbers on every x86-64 CPU: pin the CPU kernels torch, MKL and oneDNN choose.

On the CPU, torch's vectorised kernels (ATen), MKL's matrix products and oneDNN's convolutions each
dispatch on the instruction set of the machine (AVX2, AVX-512, ...), and each path rounds
differently: the same seed then gives different numbers on two CPUs of the same kind (measured in
docs/reproducibility.md). clavs pins all three to AVX2, which every x86-64 CPU of the last decade
has, unless the user chose (the variables are only set when absent; CLAVS_CPU_KERNELS=native turns
the pin off). It must happen before torch runs its first kernel, so the CLI does it first thing.
"""

from __future__ import annotations

import os
import platform

PIN = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " avx2" in f.read()
    except OSError:
        return False


def pin_cpu_kernels() -> dict[str, str]:
    """Set the pin (where not set already) on an x86-64 CPU with AVX2; returns what is in effect."""
    if os.environ.get("CLAVS_CPU_KERNELS", "avx2") != "native" and platform.machine() in ("x86_64", "AMD64") \
            and _has_avx2():
        for key, value in PIN.items():
            os.environ.setdefault(key, value)
    return {k: os.environ[k] for k in PIN if k in os.environ}


def kernel_tag() -> str:
    """'avx2' when the pin is in effect, else 'native': part of the keys of caches that torch's kernels
    make (pretrained encoders, audio embeddings), so weights made under other kernels are not reused."""
    return "avx2" if all(os.environ.get(k, "").lower() == v.lower() for k, v in PIN.items()) else "native"


def kernel_report() -> dict[str, str]:
    """What the run's CPU kernels are (recorded in profile.json)."""
    import torch

    report = {k: os.environ.get(k, "") for k in PIN}
    report["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    report["machine"] = platform.machine()
    return report
