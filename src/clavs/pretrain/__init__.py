"""Pretraining of the tiny encoders on synthetic classes disjoint from the 23 benchmark categories.

The paper's methods (LoRA, L2P, RanPAC, FeCAM, ATLAS) start from pretrained encoders. The embedded
default has no hub weights, so `ensure_pretrained` trains the tiny ViT and the tiny audio CNN once on
extra SynthAVS identities (`make_identities`, which differ from every benchmark category in at least
two visual and two sound attributes) and caches the result under
``cache_home()/pretrained/v<VERSION>/``:

- ``visual_tiny.pt``: the ViT backbone in timm's key layout (``create_visual_encoder('tiny', weights=path)``);
- ``audio_tiny.pt``: a :class:`TinyAudioCNN` checkpoint (``TinyAudioCNN.from_checkpoint(path)``);
- ``<kind>_tiny.json``: settings, identities, held-out accuracies, wall times, sha256 of the weights.
  It is written last, so it marks a complete job.

The default settings' weights for x86-64 (the AVX2 kernels clavs pins) ship in ``shipped/``; a first
run copies them into the cache after checking their sha256 (`clavs pretrain --force` retrains; a
slow test checks that retraining gives the shipped bits).

Visual task: 64x64 images (rendered at 224 like SynthAVS frames, then resized bilinearly as the
benchmark's reader does) of 1-3 extra objects on the SynthAVS domain backgrounds and lighting.
Objectives: multi-label classification on the pooled embedding (softmax cross-entropy against the
labels spread evenly, which learns far faster than sigmoids in a short job), plus a cheap dense one (each patch
token predicts the share of every class and of the background in its patch), so the tokens the
segmentation decoder reads already localise objects. Frames are ImageNet-normalised, as the engine
feeds them (`clavs.batch.Batch.prepared`: values in [0, 1]); the encoder applies its own mean/std.

Audio task: 1 s clips (16 kHz) mixing 1-2 extra sounds with a SynthAVS domain's coloured noise at the
domain's SNR, peak-normalised like the benchmark wavs; multi-label classification.

Deterministic: every sample has its own numpy Generator seeded from (seed, kind, split, index); the
torch RNG is seeded inside a forked RNG state (the caller's global torch RNG is left untouched), and
torch runs on `settings.threads` threads (1 by default), so the weights' bits do not depend on the
machine's core count. About 1.5 minutes on a 2-core CPU (visual ~50 s, audio ~30 s).

Modules, by job:

- :mod:`clavs.pretrain.settings`: :class:`PretrainSettings`, :data:`DEFAULT`, :data:`FAST`, :data:`VERSION`;
- :mod:`clavs.pretrain.data`: the synthetic pretraining images and audio clips;
- :mod:`clavs.pretrain.train`: :func:`pretrain_visual`, :func:`pretrain_audio` and their training loop;
- :mod:`clavs.pretrain.cache`: :func:`pretrained_path`, :func:`ensure_pretrained` (file lock), the json report.
"""

from clavs.pretrain.cache import ensure_pretrained, pretrained_path
from clavs.pretrain.data import AudioData, VisualData, make_audio_data, make_visual_data, pretraining_identities
from clavs.pretrain.settings import DEFAULT, FAST, KINDS, VERSION, Kind, PretrainSettings
from clavs.pretrain.train import pretrain_audio, pretrain_visual, set_accuracy

__all__ = ["VERSION", "PretrainSettings", "DEFAULT", "FAST", "KINDS", "ensure_pretrained", "pretrained_path",
           "pretrain_visual", "pretrain_audio", "pretraining_identities", "make_visual_data", "make_audio_data",
           "set_accuracy", "VisualData", "AudioData", "Kind"]
