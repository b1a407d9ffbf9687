"""Is the audio necessary on SynthAVS? Score audio-blind oracles against the ground truth.

An audio-blind model can at best find *objects*; which one sounds is only in the audio. This script
re-renders SynthAVS test clips (deterministic from the preset and seed) and scores, with the same
metrics as the benchmark:
  - `all objects`: a perfect object segmenter that ignores audio (every object's pixels);
  - `random object`: picks one object per frame at random (a blind guess of the sounding one);
  - `sounding only`: the ground truth itself (what a model with the right audio can reach).
Usage: python benchmarks/audio_necessity.py [--preset default] [--subset s4|ms3] [--clips 200]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from clavs.data.synth import PRESETS, plan_videos, render_video
from clavs.metrics import segmentation_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default", choices=sorted(PRESETS))
    ap.add_argument("--subset", default="s4", choices=["s4", "ms3"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clips", type=int, default=200, help="test clips to render (spread over categories)")
    args = ap.parse_args()
    s4, ms3 = plan_videos(PRESETS[args.preset], args.seed)
    plans = [p for p in (s4 if args.subset == "s4" else ms3) if p.split == "test"]
    plans = plans[:: max(1, len(plans) // args.clips)][: args.clips]
    rng = np.random.default_rng(0)
    gt, blind_all, blind_one = [], [], []
    for plan in plans:
        clip = render_video(plan)
        for t in range(clip.frames.shape[0]):
            labels = clip.labels[t]
            present = [k for k in np.unique(labels) if k >= 0]
            gt.append(clip.masks[t])
            blind_all.append(labels >= 0)
            blind_one.append(labels == rng.choice(present))
    masks = torch.from_numpy(np.stack(gt)).float()

    def as_logits(pred: list[np.ndarray]) -> torch.Tensor:  # hard masks -> confident logits
        return torch.from_numpy(np.stack(pred)).float().mul(20).sub(10)

    print(f"SynthAVS {args.preset} {args.subset} test: {len(plans)} clips, {len(gt)} frames")
    print(f"{'oracle':<16}{'mAP':>8}{'Max-F':>8}{'mIoU':>8}{'F1':>8}")
    for name, pred in (("all objects", blind_all), ("random object", blind_one), ("sounding only", gt)):
        s = segmentation_scores(as_logits(pred), masks)
        print(f"{name:<16}{s['map']:8.2f}{s['maxf']:8.2f}{s['miou']:8.2f}{s['f1']:8.2f}")


if __name__ == "__main__":
    main()
