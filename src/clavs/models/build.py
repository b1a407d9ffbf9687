"""Build networks from a resolved run config."""

from __future__ import annotations

from typing import Any

from clavs.models.architectures.atlas import AtlasNet, AtlasNetConfig


def resolve_visual_weights(config: dict[str, Any]) -> str | None:
    """'pretrained' = the tiny encoder of `clavs pretrain` (built if absent); 'none' = random init."""
    mc = config["model"]
    weights = mc["visual_weights"]
    if weights in (None, "none"):
        return None
    if weights == "pretrained":
        if mc["visual"] != "tiny":
            raise ValueError(f"model.visual_weights=pretrained exists only for model.visual=tiny (got "
                             f"'{mc['visual']}'); pass a weights file or 'hub'")
        from clavs.pretrain import ensure_pretrained

        return str(ensure_pretrained("visual", progress=config["progress"]))
    return str(weights)


def _targets(value: Any) -> tuple[str, ...] | None:
    """model.lora_targets: null (Q/V of attention), a name ('qkv') or a list of names."""
    if not value:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


def atlas_net_config(config: dict[str, Any], scenario: Any, audio_dim: int, *, pre_conditioning: bool = True) -> AtlasNetConfig:
    mc = config["model"]
    return AtlasNetConfig(
        visual=mc["visual"],
        visual_weights=resolve_visual_weights(config),
        img_size=config["data"]["image_size"],
        audio_dim=audio_dim,
        dim=mc["width"],
        num_heads=mc["heads"],
        audio_context=mc["audio_context"],
        pre_conditioning=pre_conditioning,
        lora_r=mc["lora_r"],
        lora_alpha=mc["lora_alpha"],
        lora_targets=_targets(mc["lora_targets"]),
        decoder_dim=mc["decoder_dim"],
        decoder_lora=mc["decoder_lora"],
        use_class_head=scenario.has_class_head,
        num_classes=0,
    )


def build_atlas_net(config: dict[str, Any], scenario: Any, audio_dim: int, *, pre_conditioning: bool = True) -> AtlasNet:
    return AtlasNet(atlas_net_config(config, scenario, audio_dim, pre_conditioning=pre_conditioning))
