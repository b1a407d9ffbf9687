"""Build networks from a resolved run config."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from clavs.models.architectures.atlas import AtlasNet, AtlasNetConfig
from clavs.models.architectures.plain import PlainAVSNet, PlainAVSNetConfig


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


def _common(config: dict[str, Any], scenario: Any, audio_dim: int) -> dict[str, Any]:
    mc = config["model"]
    return dict(visual=mc["visual"], visual_weights=resolve_visual_weights(config), img_size=config["data"]["image_size"],
                audio_dim=audio_dim, dim=mc["width"], decoder_dim=mc["decoder_dim"],
                use_class_head=scenario.has_class_head, num_classes=0,
                # TIL's multi-head reading: the task id chooses the mask head (docs/protocols.md)
                task_heads=scenario.protocol == "til")


def atlas_net_config(config: dict[str, Any], scenario: Any, audio_dim: int, *, pre_conditioning: bool = True) -> AtlasNetConfig:
    mc = config["model"]
    return AtlasNetConfig(
        **_common(config, scenario, audio_dim),
        num_heads=mc["heads"],
        audio_context=mc["audio_context"],
        pre_conditioning=pre_conditioning,
        lora_r=mc["lora_r"],
        lora_alpha=mc["lora_alpha"],
        lora_targets=_targets(mc["lora_targets"]),
        decoder_lora=mc["decoder_lora"],
    )


def build_atlas_net(config: dict[str, Any], scenario: Any, audio_dim: int, *, pre_conditioning: bool = True) -> AtlasNet:
    return AtlasNet(atlas_net_config(config, scenario, audio_dim, pre_conditioning=pre_conditioning))


def build_plain_net(config: dict[str, Any], scenario: Any, audio_dim: int) -> PlainAVSNet:
    """The family-(1) network: encoder, audio projection, concatenation fusion, decoder; no ATLAS parts."""
    return PlainAVSNet(PlainAVSNetConfig(**_common(config, scenario, audio_dim)))


def _build_atlas(config: dict[str, Any], scenario: Any, audio_dim: int) -> AtlasNet:
    return build_atlas_net(config, scenario, audio_dim, pre_conditioning=config["method"].get("pre_conditioning", True))


# The networks methods name in their `network` attribute; a new architecture adds one line here.
NETWORKS = {"atlas": _build_atlas, "plain": build_plain_net}


def build_network(name: str, config: dict[str, Any], scenario: Any, audio_dim: int):
    if name not in NETWORKS:
        raise ValueError(f"unknown network '{name}'; known: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name](config, scenario, audio_dim)


def _tiny_audio(config: dict[str, Any], weights: Any) -> tuple[Any, Path | None]:
    from clavs.utils.seeding import seed_all
    from clavs.models.encoders.audio_tiny import TinyAudioCNN

    if weights == "pretrained":
        from clavs.pretrain import ensure_pretrained

        path = ensure_pretrained("audio", progress=config["progress"])
        return TinyAudioCNN.from_checkpoint(path), path
    if weights in (None, "none"):
        seed_all(config["seed"])
        return TinyAudioCNN(), None
    return TinyAudioCNN.from_checkpoint(Path(weights)), Path(weights)


def _cnn14(config: dict[str, Any], weights: Any) -> tuple[Any, Path | None]:
    from clavs.models.encoders.cnn14 import Cnn14

    if weights in (None, "none", "pretrained"):
        raise ValueError("model.audio=cnn14 needs model.audio_weights=/path/to/Cnn14 checkpoint "
                         "(the PANNs .pth file; see docs/reproducibility.md)")
    return Cnn14.from_checkpoint(Path(weights), sample_rate=config["model"]["audio_sample_rate"]), Path(weights)


# The frozen audio encoders `model.audio` names: (config, model.audio_weights) -> (encoder, weights file).
AUDIO_ENCODERS = {"tiny": _tiny_audio, "cnn14": _cnn14}


def build_audio_encoder(config: dict[str, Any]) -> tuple[Any, str]:
    """The frozen audio encoder and a string that identifies its weights (for the embedding cache)."""
    mc = config["model"]
    kind, weights = mc["audio"], mc["audio_weights"]
    if kind not in AUDIO_ENCODERS:
        raise ValueError(f"model.audio='{kind}' is not one of {', '.join(AUDIO_ENCODERS)}")
    enc, path = AUDIO_ENCODERS[kind](config, weights)
    ident = f"{kind}|{mc['audio_sample_rate']}|{_file_digest(path) if path else 'random-seed' + str(config['seed'])}"
    enc.eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc, ident


def _file_digest(path: Path) -> str:
    st = Path(path).stat()
    return hashlib.sha1(f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
