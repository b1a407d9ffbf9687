"""Encoders: timm visual backbones (ViT, PVT-v2), PANNs Cnn14, a tiny audio CNN, our LoRA."""

from clavs.models.encoders.audio_tiny import TinyAudioCNN
from clavs.models.encoders.cnn14 import CNN14_FRONT_END, CheckpointError, Cnn14, resample_audio
from clavs.models.encoders.logmel import LogMelFrontEnd, slaney_mel_filterbank

__all__ = ["CNN14_FRONT_END", "CheckpointError", "Cnn14", "LogMelFrontEnd", "TinyAudioCNN", "resample_audio",
           "slaney_mel_filterbank"]
