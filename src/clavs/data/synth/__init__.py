"""SynthAVS: a synthetic audio-visual segmentation dataset written in the exact AVSBench layout.

Modules:

- :mod:`clavs.data.synth.identities`: the visual and sound identities of the categories (the 23
  benchmark ones, and extra ones for encoder pretraining);
- :mod:`clavs.data.synth.audio`: sound synthesis, mixtures and domain background noise;
- :mod:`clavs.data.synth.render`: domains, backgrounds, objects, moving clips with masks and audio;
- :mod:`clavs.data.synth.build`: presets, video planning and :func:`generate`, which writes the tree
  (layout and determinism are described there).

Everything public is re-exported here: ``from clavs.data.synth import generate, PRESETS, ...``.
"""

from clavs.data.synth.audio import SAMPLE_RATE, synthesize_audio
from clavs.data.synth.build import (DURATION, IMAGE_SIZE, MANIFEST, MS3_DIR, N_FRAMES, PRESETS, S4_DIR, SPLITS,
                                    SYNTHAVS_VERSION, SynthPreset, VideoPlan, generate, ms3_video_name,
                                    plan_videos, render_video, s4_video_name)
from clavs.data.synth.identities import (CATEGORY_GROUPS, Identity, SoundIdentity, VisualIdentity,
                                         benchmark_identities, make_identities)
from clavs.data.synth.render import (DOMAINS, Domain, DomainFactors, PlacedObject, SynthClip, make_background,
                                     render_clip, render_frame, sample_domain_factors)

__all__ = [
    "SYNTHAVS_VERSION", "SPLITS", "SynthPreset", "PRESETS", "generate", "VideoPlan", "plan_videos", "render_video",
    "s4_video_name", "ms3_video_name", "MANIFEST", "S4_DIR", "MS3_DIR", "N_FRAMES", "IMAGE_SIZE", "DURATION",
    # rendering primitives, re-exported for encoder pretraining
    "Identity", "VisualIdentity", "SoundIdentity", "CATEGORY_GROUPS", "benchmark_identities", "make_identities",
    "DOMAINS", "Domain", "DomainFactors", "sample_domain_factors", "make_background", "PlacedObject",
    "render_frame", "render_clip", "SynthClip", "synthesize_audio", "SAMPLE_RATE",
]
