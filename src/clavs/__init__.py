"""clavs: exemplar-free continual learning for audio-visual segmentation (CL-AVS) and ATLAS."""

__version__ = "0.1.0"
