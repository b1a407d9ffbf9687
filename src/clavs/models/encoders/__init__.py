"""Encoders: timm visual backbones (ViT, PVT-v2), PANNs Cnn14, a tiny audio CNN, our LoRA."""

from clavs.models.encoders.audio_tiny import TinyAudioCNN
from clavs.models.encoders.cnn14 import CNN14_FRONT_END, CheckpointError, Cnn14, resample_audio
from clavs.models.encoders.logmel import LogMelFrontEnd, slaney_mel_filterbank
from clavs.models.encoders.lora import (LoRAConv2d, LoRALinear, LoRAQKV, LoRASlicedLinear, apply_lora, lora_parameters,
                                        merge_lora, merged_state_dict)
from clavs.models.encoders.visual import (VISUAL_PRESETS, VisualEncoder, VisualFeatures, WeightsLoadError,
                                          create_visual_encoder)

__all__ = ["CNN14_FRONT_END", "CheckpointError", "Cnn14", "LoRAConv2d", "LoRALinear", "LoRAQKV", "LoRASlicedLinear",
           "LogMelFrontEnd", "TinyAudioCNN", "VISUAL_PRESETS", "VisualEncoder", "VisualFeatures", "WeightsLoadError",
           "apply_lora", "create_visual_encoder", "lora_parameters", "merge_lora", "merged_state_dict", "resample_audio",
           "slaney_mel_filterbank"]
