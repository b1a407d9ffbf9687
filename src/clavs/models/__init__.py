"""Networks: encoders, fusion, decoders and architectures (ATLAS)."""

from clavs.models.architectures.atlas import PARAMETER_GROUPS, AtlasNet, AtlasNetConfig
from clavs.models.decoders import DECODERS, ProgressiveDecoder, build_decoder
from clavs.models.fusion import AudioConditioning, CrossModalAttentionFusion

__all__ = ["AtlasNet", "AtlasNetConfig", "AudioConditioning", "CrossModalAttentionFusion", "DECODERS",
           "PARAMETER_GROUPS", "ProgressiveDecoder", "build_decoder"]
