"""Networks: encoders, fusion, decoders and architectures (ATLAS, the plain AVS network of family (1))."""

from clavs.models.architectures.atlas import PARAMETER_GROUPS, AtlasNet, AtlasNetConfig
from clavs.models.architectures.plain import PlainAVSNet, PlainAVSNetConfig
from clavs.models.protocol import AVSModel
from clavs.models.decoders import DECODERS, ProgressiveDecoder, build_decoder
from clavs.models.encoders import Cnn14, TinyAudioCNN, create_visual_encoder
from clavs.models.fusion import AudioConditioning, CrossModalAttentionFusion

__all__ = ["AVSModel", "PlainAVSNet", "PlainAVSNetConfig", "AtlasNet", "AtlasNetConfig", "AudioConditioning", "Cnn14", "CrossModalAttentionFusion", "DECODERS",
           "PARAMETER_GROUPS", "ProgressiveDecoder", "TinyAudioCNN", "build_decoder", "create_visual_encoder"]
