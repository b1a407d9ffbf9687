"""clavs: exemplar-free continual learning for audio-visual segmentation (CL-AVS) and ATLAS."""

__version__ = "0.1.0"

# Before torch runs a kernel: the same numbers on every x86-64 CPU (utils/kernels.py).
from clavs.utils.kernels import pin_cpu_kernels as _pin_cpu_kernels  # noqa: E402

_pin_cpu_kernels()
