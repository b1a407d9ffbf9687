"""Finetune: the plain AVS network with every weight trained (visual encoder included) and no
continual mechanism — the lower bound of Table 1."""

from __future__ import annotations

from clavs.methods.base import Method, register


@register
class Finetune(Method):
    name = "finetune"
    family = "baseline"
    trains = ("visual", "audio_proj", "fusion", "decoder", "mask_head", "class_head")
