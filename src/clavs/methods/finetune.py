"""Finetune: the ATLAS network with every weight trained (visual encoder included) and no continual
mechanism — the lower bound of Table 1."""

from __future__ import annotations

from clavs.methods.base import Method, register


@register
class Finetune(Method):
    name = "finetune"
    trains = ("visual", "visual_lora", "audio_proj", "conditioning", "fusion", "decoder", "decoder_lora", "class_head")
