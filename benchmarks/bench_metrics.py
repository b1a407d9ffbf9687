"""Time clavs.metrics.segmentation_scores against the official AVSBench evaluation loops.

The official evaluation (reference/avsbench.md section 2) is re-written below as that code runs it:
per test batch, a mask-IoU pass and, for every non-empty frame, 255 threshold passes over its pixels;
batch means averaged over batches. Both run on the same synthetic frames (discs plus noise, a share
of empty ground truths); the script checks that mIoU and the official Max-F agree exactly, optionally
checks per-frame AP against scikit-learn on a few frames, and prints both times and their ratio.

    python benchmarks/bench_metrics.py --frames 1000 --size 224
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from clavs.metrics import segmentation_scores


def make_frames(n: int, size: int, seed: int, empty_share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Disc-shaped masks and logits that roughly follow them (blurred noise, a bias inside the disc)."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.arange(size, dtype=torch.float32)
    centre = torch.rand(n, 2, generator=g) * size
    radius = (0.05 + 0.25 * torch.rand(n, generator=g)) * size

    def inside(cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
        dist2 = (coords[None, :, None] - cy[:, None, None]) ** 2 + (coords[None, None, :] - cx[:, None, None]) ** 2
        return dist2 <= radius[:, None, None] ** 2

    disc = inside(centre[:, 0], centre[:, 1])
    noise = torch.nn.functional.avg_pool2d(torch.randn(n, 1, size, size, generator=g), 9, 1, 4)[:, 0] * 6
    shift = (torch.rand(n, 2, generator=g) - 0.5) * 0.2 * size  # predictions slightly off the target
    logits = 4.0 * inside(centre[:, 0] + shift[:, 0], centre[:, 1] + shift[:, 1]).float() - 2.5 + noise
    masks = disc.float()
    masks[torch.rand(n, generator=g) < empty_share] = 0
    return logits, masks


# --- the official evaluation, as AVSBench's utility.py / test.py run it (CPU) ----------------------
def official_mask_iou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    n = pred.size(0)
    num_pixels = pred.size(-1) * pred.size(-2)
    no_obj = target.sum(2).sum(1) == 0
    hard = (torch.sigmoid(pred) > 0.5).int()
    inter = (hard * target).sum(2).sum(1)
    union = torch.max(hard, target).sum(2).sum(1)
    inter_no_obj = ((1 - target) * (1 - hard)).sum(2).sum(1)
    inter[no_obj] = inter_no_obj[no_obj]
    union[no_obj] = num_pixels
    return torch.sum(inter / (union + eps)) / n


def official_eval_pr(y_pred: torch.Tensor, y: torch.Tensor, num: int) -> tuple[torch.Tensor, torch.Tensor]:
    prec, recall = torch.zeros(num), torch.zeros(num)
    thlist = torch.linspace(0, 1 - 1e-10, num)
    for i in range(num):
        y_temp = (y_pred >= thlist[i]).float()
        tp = (y_temp * y).sum()
        prec[i], recall[i] = tp / (y_temp.sum() + 1e-20), tp / (y.sum() + 1e-20)
    return prec, recall


def official_fmeasure(pred: torch.Tensor, gt: torch.Tensor, pr_num: int = 255) -> float:
    pred = torch.sigmoid(pred)
    beta2 = 0.3
    avg_f, img_num = 0.0, 0
    score = torch.zeros(pr_num)
    for img_id in range(pred.size(0)):
        if torch.mean(gt[img_id]) == 0.0:  # frames with empty ground truth are skipped
            continue
        prec, recall = official_eval_pr(pred[img_id], gt[img_id], pr_num)
        f_score = (1 + beta2) * prec * recall / (beta2 * prec + recall)
        f_score[f_score != f_score] = 0
        avg_f += f_score
        img_num += 1
        score = avg_f / img_num
    return score.max().item()


def official_evaluation(logits: torch.Tensor, masks: torch.Tensor, batch_frames: int) -> tuple[float, float]:
    """(mIoU, F) as test.py reports them: AverageMeter means of the per-batch values."""
    miou_sum, f_sum, count = 0.0, 0.0, 0
    for start in range(0, logits.shape[0], batch_frames):
        pred, gt = logits[start : start + batch_frames], masks[start : start + batch_frames]
        miou_sum += official_mask_iou(pred, gt)
        f_sum += official_fmeasure(pred, gt)
        count += 1
    return (miou_sum / count).item(), f_sum / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-frames", type=int, default=20, help="official test batch in frames (4 clips x 5)")
    parser.add_argument("--empty-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sklearn-frames", type=int, default=20,
                        help="frames whose AP is checked against scikit-learn (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    logits, masks = make_frames(args.frames, args.size, args.seed, args.empty_share)
    n_empty = int((masks.flatten(1).sum(1) == 0).sum())
    print(f"{args.frames} frames of {args.size}x{args.size}, {n_empty} with empty "
          f"ground truth, official batches of {args.batch_frames} frames, {torch.get_num_threads()} threads")

    start = time.perf_counter()
    ours = segmentation_scores(logits, masks, official_batch_frames=args.batch_frames)
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    miou, maxf = official_evaluation(logits, masks, args.batch_frames)
    t_official = time.perf_counter() - start

    print(f"clavs  (all metrics)      : {t_ours:8.2f} s  " + ", ".join(
        f"{k}={v:.4f}" for k, v in ours.items() if isinstance(v, float) and k != "maxf_threshold"))
    print(f"official loops (mIoU + F) : {t_official:8.2f} s  "
          f"miou={100 * miou:.4f}, maxf_official={100 * maxf:.4f}")
    print(f"speed-up                  : {t_official / t_ours:8.1f}x")
    agree = ours["miou"] == 100 * miou and ours["maxf_official"] == 100 * maxf
    print(f"mIoU and official Max-F identical: {agree}")

    if args.sklearn_frames:
        from sklearn.metrics import average_precision_score

        worst = 0.0
        checked = 0
        for j in range(args.frames):
            if checked == args.sklearn_frames:
                break
            if masks[j].sum() == 0:
                continue
            one = segmentation_scores(logits[j : j + 1], masks[j : j + 1], pooled_aupr=False)["map"] / 100
            ref = average_precision_score(masks[j].ravel().numpy(), torch.sigmoid(logits[j]).ravel().numpy())
            worst = max(worst, abs(one - ref))
            checked += 1
        print(f"per-frame AP vs scikit-learn on {checked} frames: max abs difference {worst:.2e}")
        agree = agree and worst < 1e-12
    if not agree or any(isinstance(v, float) and math.isnan(v) for k, v in ours.items()):
        raise SystemExit("MISMATCH")


if __name__ == "__main__":
    main()
