"""The paper preset's cost, measured on the device at hand, and what one run and Table 1 cost there.

1. Weights: random ViT-B/16 (timm's own key layout, with its 1000-class head, as the hub file) and a
   random Cnn14 at 16 kHz in the official PANNs layout (the 84 keys of `{'model': state_dict}`, written
   by the original-architecture reference of tests/test_cnn14.py) are saved into a temporary folder
   and loaded through the real loading code (`model.visual_weights=FILE`, `model.audio_weights=FILE`):
   no download.
2. The networks of the `paper` preset are built as `clavs run --preset paper` builds them (ATLAS's
   AtlasNet: ViT-B/16 with LoRA, and the plain network family (1) methods train whole), on a CIL
   scenario of S4's 23 classes.
3. Timed with the engine's own `Trainer.step` and `Trainer.score` on random clips at 224 px:
   - an S4 training step: clips with one labelled frame each (S4 train labels frame 1 only, and
     only the labelled frames are decoded);
   - an MS3 training step (TF-CL): every frame is labelled, so 5 frames per clip;
   - evaluation per frame (5-frame clips, no gradient);
   - the frozen Cnn14 per second of audio (done once per clip for every run: the embedding cache).
   On a GPU at the preset's batch sizes; on a CPU at smaller ones (--batch 4, --ms3-batch 1,
   --eval-clips 1: the preset's 8 clips of MS3 are 40 frames, minutes per step), scaled linearly to
   the preset's batch (the scale is printed). Time on a CPU is the process's CPU time (all its
   threads), less affected by the machine's other load than wall time (not immune to it: shared
   caches and memory bandwidth): costs are in core-hours; wall time is printed beside it. On a GPU,
   wall time after synchronising. Operation counts (torch.utils.flop_counter) do not depend on the
   device or its load.
   Peak memory: the process's peak RSS on a CPU; torch.cuda.max_memory_allocated on a GPU.
   Checkpoint size: `results/checkpoints.save_checkpoint` of the ATLAS and plain networks.
4. Cost = training steps x step time + evaluated frames x time per frame, from the data sizes of
   AVSBench (reference/avsbench.md) and the schedule of engine/loop.py (the arithmetic is printed);
   Table 1 = 20 methods x 4 protocols x 5 seeds.

Usage: python benchmarks/paper_scale.py [--steps 2] [--batch B] [--ms3-batch B] [--eval-clips N]
       [--accelerator cpu|gpu|auto] [--precision P] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from first_run import cpu_name  # benchmarks/ is the script's folder

ROOT = Path(__file__).resolve().parents[1]

# AVSBench-object sizes (reference/avsbench.md): clips per split, 5 one-second frames per clip.
S4_CLIPS = {"train": 3452, "val": 740, "test": 740}
MS3_CLIPS = {"train": 296, "val": 64, "test": 64}
FRAMES_PER_CLIP = 5
S4_SPLIT = (11, 2)  # the paper's CIL/TIL/DIL split 11-2: 7 tasks
TFCL_TASKS = 50  # the paper's task-free stream
TABLE1 = {"methods": 20, "protocols": ("til", "cil", "dil", "tfcl"), "seeds": 5}
# The networks measured: ATLAS's (LoRA on a frozen ViT) and the plain one family (1) trains whole. A
# method with a network of its own is measured by adding its name here.
MEASURED = ("atlas", "finetune")


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


# ---------------------------------------------------------------------------------------- weights

def write_weights(folder: Path) -> tuple[Path, Path]:
    """ViT-B/16 in timm's layout and Cnn14 (16 kHz) in the PANNs layout, random, as files."""
    import timm

    sys.path.insert(0, str(ROOT / "tests"))
    from test_cnn14 import RefCnn14, randomise  # the original-architecture Cnn14 of the tests

    vit = folder / "vit_base_patch16_224.pth"
    torch.save(timm.create_model("vit_base_patch16_224", pretrained=False).state_dict(), vit)
    cnn14 = folder / "Cnn14_16k_mAP=0.438.pth"
    torch.save({"model": randomise(RefCnn14(16000), seed=0).state_dict(), "iteration": 0}, cnn14)
    return vit, cnn14


# ---------------------------------------------------------------------------------------- timing

def s4_scenario(protocol: str = "cil"):
    """S4's 23 classes split 11-2 into 7 tasks (a fixed alphabetical order; the clips are random)."""
    from clavs.data.categories import S4_CATEGORIES
    from clavs.protocols.scenario import Scenario, Task

    base, inc = S4_SPLIT
    sizes = [base] + [inc] * ((len(S4_CATEGORIES) - base) // inc)
    tasks, seen = [], 0
    for t, n in enumerate(sizes):
        classes = list(range(seen, seen + n))
        seen += n
        tasks.append(Task(id=t, name=f"t{t}", classes=[S4_CATEGORIES[c] for c in classes], class_indices=classes,
                          train=[], val=[], test=[], task_id_visible=protocol == "til",
                          label_space=list(range(seen)), num_seen_classes=seen))
    return Scenario(protocol=protocol, tasks=tasks, class_order=list(S4_CATEGORIES), has_class_head=True,
                    dataset="s4", split=f"{base}-{inc}", seed=0)


def random_store(clips: int, size: int, audio_dim: int, labelled: list[bool]):
    from clavs.engine.clips import ClipStore

    g = torch.Generator().manual_seed(0)
    return ClipStore(frames=torch.randint(0, 256, (clips, FRAMES_PER_CLIP, 3, size, size), dtype=torch.uint8, generator=g),
                     masks=(torch.rand(clips, FRAMES_PER_CLIP, 1, size, size, generator=g) > 0.7).to(torch.uint8),
                     mask_valid=torch.tensor([labelled] * clips), labels=torch.zeros(clips, dtype=torch.long),
                     video_ids=[f"clip{i}" for i in range(clips)],
                     audio=torch.randn(clips, FRAMES_PER_CLIP, audio_dim, generator=g))


class Clock:
    """Seconds of a call: CPU time of the process on a CPU (its threads summed: less affected by the
    machine's other load than wall time), wall time after synchronising on a GPU; the wall time of
    both is kept too."""

    def __init__(self, gpu: bool):
        self.gpu = gpu
        self.wall: dict[str, float] = {}
        self.flops: dict[str, int] = {}

    def timed(self, label: str, fn, repeats: int) -> float:
        """Mean seconds of `fn()` over `repeats` calls after one untimed warm-up call, whose floating-point
        operations torch.utils.flop_counter counts (matmuls and convolutions: what dominates here)."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            fn()
        self.flops[label] = counter.get_total_flops()
        self._sync()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            fn()
        self._sync()
        self.wall[label] = (time.perf_counter() - wall) / repeats
        return self.wall[label] if self.gpu else (time.process_time() - cpu) / repeats

    def _sync(self) -> None:
        if self.gpu:
            torch.cuda.synchronize()


def measure_method(name: str, config: dict, audio_dim: int, args, work: Path, clock: Clock) -> dict:
    """Step and evaluation times of method `name`'s network at the paper preset, and its checkpoint size."""
    from lightning_fabric import Fabric

    from clavs.engine.loop import LoopState, SplitStores, Trainer
    from clavs.methods import get_method_class
    from clavs.methods.context import MethodContext
    from clavs.results.checkpoints import save_checkpoint
    from clavs.results.store import RunDir

    config = {**config, "method": {**config["method"], "name": name}}
    method_cls = get_method_class(name)
    config["method"] = {"name": name, **method_cls.default_hparams(config)}
    fabric = Fabric(accelerator=args.accelerator, devices=1, precision=config["engine"]["precision"])
    scenario = s4_scenario()
    size, batch = config["data"]["image_size"], args.batch
    s4 = random_store(batch, size, audio_dim, [True] + [False] * (FRAMES_PER_CLIP - 1))  # S4 train
    ms3 = random_store(max(args.ms3_batch, args.eval_clips), size, audio_dim, [True] * FRAMES_PER_CLIP)  # all labelled
    index = torch.zeros(max(batch, len(ms3)), dtype=torch.long)
    stores = SplitStores(train=s4, val=ms3, test=ms3, class_index={"train": index, "val": index[:len(ms3)],
                                                                     "test": index[:len(ms3)]})
    t0 = time.perf_counter()
    model = method_cls.build_model(config, scenario, audio_dim).to(fabric.device)
    build_seconds = time.perf_counter() - t0
    ctx = MethodContext(fabric=fabric, config=config, log=lambda m: None)
    method = method_cls(model, method_cls.make_hparams(config["method"]), scenario, ctx)
    trainer = Trainer(method, scenario, stores, ctx)
    method.begin_task(scenario.tasks[0])
    wrapped, optimizer = trainer._optimizer()
    model.train()
    s4_batch = next(iter(trainer.loader("train", range(batch), task_id=0, train=True)))
    ms3_clips = list(range(args.ms3_batch))
    trainer.stores = SplitStores(train=ms3, val=ms3, test=ms3, class_index=stores.class_index)
    ms3_batch = next(iter(trainer.loader("train", ms3_clips, task_id=-1, train=True)))
    trainer.stores = stores

    def step(b):
        return lambda: trainer.step(wrapped, optimizer, b, "benchmark")

    preset_batch = config["train"]["batch_size"]
    eval_clips = list(range(args.eval_clips))
    result = {
        "name": name, "network": method_cls.network, "build_seconds": build_seconds,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in model.parameters()),
        "s4_frames": s4_batch.size * len(s4_batch.decoded_frames),
        "ms3_frames": ms3_batch.size * len(ms3_batch.decoded_frames),
        # linear in the clips of a batch, to the preset's batch
        "s4_step": clock.timed(f"{name} s4", step(s4_batch), args.steps) * preset_batch / batch,
        "ms3_step": clock.timed(f"{name} ms3", step(ms3_batch), args.steps) * preset_batch / args.ms3_batch,
        "eval_per_frame": clock.timed(f"{name} eval", lambda: trainer.score("test", eval_clips, -1), args.steps)
        / (len(eval_clips) * FRAMES_PER_CLIP),
    }
    # the same per step / per frame in floating-point operations: what another device's cost scales with
    result["flops"] = {"s4_step": clock.flops[f"{name} s4"] * preset_batch / batch,
                       "ms3_step": clock.flops[f"{name} ms3"] * preset_batch / args.ms3_batch,
                       "eval_per_frame": clock.flops[f"{name} eval"] / (len(eval_clips) * FRAMES_PER_CLIP)}
    run = RunDir(work / f"run-{name}")
    path = save_checkpoint(run.create(), 0, method, LoopState(), run_config=config)
    result["checkpoint_bytes"] = path.stat().st_size
    path.unlink()
    result["peak_memory_gb"] = peak_memory_gb(fabric.device)
    return result


def measure_audio(config: dict, args, clock: Clock) -> tuple[float, int]:
    """Seconds per second of audio through the frozen Cnn14 (loaded by the real loader), and its width."""
    from clavs.models.build import build_audio_encoder

    encoder, _ = build_audio_encoder(config)  # on the CPU, as the clip cache runs it
    wave = torch.randn(16, 16000) * 0.1
    per = clock.timed("cnn14", lambda: encoder.embed(wave), args.steps) / wave.shape[0]
    return per, int(encoder.embed_dim)


# ---------------------------------------------------------------------------------------- disk

def clip_bytes(image_size: int, audio_dim: int) -> dict[str, int]:
    """Bytes per clip of each tensor the caches hold (engine/clips.py: ClipStore, the audio entry)."""
    def size(shape, dtype):
        return math.prod(shape) * torch.empty(0, dtype=dtype).element_size()

    T, S = FRAMES_PER_CLIP, image_size
    return {"frames": size((T, 3, S, S), torch.uint8), "masks": size((T, 1, S, S), torch.uint8),
            "waveforms": size((T, 16000), torch.float32), "audio embeddings": size((T, audio_dim), torch.float32)}


def print_disk(image_size: int, audio_dim: int, results: list[dict]) -> None:
    per_clip = clip_bytes(image_size, audio_dim)
    print(f"caches at {image_size} px (every split; per clip {', '.join(f'{k} {v / 2**10:,.0f} KiB' for k, v in per_clip.items())}):")
    for name, clips in (("S4", sum(S4_CLIPS.values())), ("MS3", sum(MS3_CLIPS.values()))):
        decoded = sum(v for k, v in per_clip.items() if k != "audio embeddings") * clips
        print(f"  {name}: {clips} clips -> decoded clips (clips/*.pt) {decoded / 2**30:.2f} GiB, audio embeddings "
              f"(audio/*.pt) {per_clip['audio embeddings'] * clips / 2**30:.2f} GiB")
    s4_tasks = 1 + (23 - S4_SPLIT[0]) // S4_SPLIT[1]
    per_run = 3 * s4_tasks + TFCL_TASKS
    runs = TABLE1["methods"] * TABLE1["seeds"]
    for m in results:
        ck = m["checkpoint_bytes"]
        print(f"  checkpoints, {m['name']} ({ck / 2**20:.0f} MiB each, method state excluded): one seed of the four "
              f"protocols {per_run} files = {per_run * ck / 2**30:.1f} GiB; Table 1 at this size: "
              f"{runs * per_run * ck / 2**40:.2f} TiB with train.keep_checkpoints=all, "
              f"{runs * 4 * ck / 2**30:.0f} GiB with last")
    print()


# ---------------------------------------------------------------------------------------- cost

def share(total: int, weights: list[int]) -> list[int]:
    """`total` clips split over tasks in proportion to `weights` (largest remainders)."""
    raw = [total * w / sum(weights) for w in weights]
    out = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)[: total - sum(out)]:
        out[i] += 1
    return out


def matrix_frames(test: list[int]) -> int:
    """Test frames the accuracy matrix scores: every task before training (b), then after task t the
    tasks 0..t+1 (Scenario.tasks_to_evaluate)."""
    T = len(test)
    return (sum(test) + sum(sum(test[: min(t + 2, T)]) for t in range(T))) * FRAMES_PER_CLIP


def priced(m: dict, step: str, steps: int, frames: int) -> tuple[float, float, str]:
    """Seconds and operations of `steps` training steps of kind `step` and `frames` evaluated frames."""
    seconds = steps * m[step] + frames * m["eval_per_frame"]
    flops = steps * m["flops"][step] + frames * m["flops"]["eval_per_frame"]
    return seconds, flops, (f"run = {steps} x {m[step]:.2f} s + {frames} x {m['eval_per_frame']:.3f} s "
                            f"= {seconds / 3600:.1f} h")


def s4_run_cost(m: dict, epochs: int, batch: int) -> tuple[float, float, list[str]]:
    """TIL / CIL / DIL on S4 11-2 (the same 7 tasks, the same clips): training steps, per-epoch model
    selection on the task's validation clips, the test matrix (initial row; after task t: tasks 0..t+1),
    the validation matrix's last row (train.val_matrix=last)."""
    base, inc = S4_SPLIT
    weights = [base] + [inc] * ((23 - base) // inc)
    train, val, test = (share(S4_CLIPS[s], weights) for s in ("train", "val", "test"))
    steps = epochs * sum(math.ceil(n / batch) for n in train)
    select = epochs * sum(val) * FRAMES_PER_CLIP
    matrix = matrix_frames(test)
    last_val = sum(val) * FRAMES_PER_CLIP
    frames = select + matrix + last_val
    seconds, flops, run = priced(m, "s4_step", steps, frames)
    return seconds, flops, [f"train clips per task {train}: steps = {epochs} epochs x sum(ceil(n/{batch})) = {steps}",
                            f"evaluated frames = selection {epochs} x {sum(val)} val clips x 5 = {select} + test matrix "
                            f"{matrix} + last validation row {last_val} = {frames}", run]


def tfcl_run_cost(m: dict, epochs: int, batch: int, anytime_every: int) -> tuple[float, float, list[str]]:
    """TF-CL on MS3, 50 hidden tasks: training steps (all 5 frames labelled), anytime evaluation of the
    seen tasks' test clips every `anytime_every` steps, the test matrix, the validation matrix's last row."""
    train, test = share(MS3_CLIPS["train"], [1] * TFCL_TASKS), share(MS3_CLIPS["test"], [1] * TFCL_TASKS)
    per_task = [epochs * math.ceil(n / batch) for n in train]
    steps = sum(per_task)
    task_of_step = [t for t, n in enumerate(per_task) for _ in range(n)]
    anytime = sum(sum(test[: task_of_step[s - 1] + 1]) for s in range(anytime_every, steps + 1, anytime_every))
    anytime *= FRAMES_PER_CLIP
    matrix = matrix_frames(test)
    last_val = MS3_CLIPS["val"] * FRAMES_PER_CLIP
    frames = anytime + matrix + last_val
    seconds, flops, run = priced(m, "ms3_step", steps, frames)
    return seconds, flops, [f"train clips per task ~{MS3_CLIPS['train'] / TFCL_TASKS:.1f}: steps = {epochs} epochs x "
                            f"sum(ceil(n/{batch})) = {steps}",
                            f"evaluated frames = anytime (every {anytime_every} steps, seen test clips) {anytime} + "
                            f"test matrix {matrix} + last validation row {last_val} = {frames}", run]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2, help="timed repetitions of each step (after one warm-up)")
    p.add_argument("--batch", type=int, help="clips of the timed S4 step (default: the preset's on a GPU, 4 on a "
                                             "CPU; scaled to the preset's batch)")
    p.add_argument("--ms3-batch", type=int, help="clips of the timed MS3 step (default: the preset's on a GPU, 1 on a "
                                                 "CPU; scaled to the preset's batch)")
    p.add_argument("--eval-clips", type=int, help="clips of the timed evaluation (default: 16 on a GPU, 1 on a CPU)")
    p.add_argument("--accelerator", default="cpu", help="cpu | gpu | auto")
    p.add_argument("--precision", default=None,
                   help="default: the preset's (bf16-mixed) on a GPU, 32-true on a CPU (a CPU without bf16 "
                        "instructions runs bf16 autocast several times slower than fp32; docs/scaling.md)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    from clavs.config import resolve_config
    from clavs.utils.kernels import pin_cpu_kernels

    pin_cpu_kernels()
    on_gpu = args.accelerator in ("gpu", "cuda") or (args.accelerator == "auto" and torch.cuda.is_available())
    device = torch.cuda.get_device_name(0) if on_gpu else f"{cpu_name()}, {os.cpu_count()} cores"
    clock = Clock(on_gpu)
    with tempfile.TemporaryDirectory(prefix="clavs-paper-scale-") as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        vit, cnn14 = write_weights(work)
        overrides = [f"model.visual_weights={vit}", f"model.audio_weights={cnn14}"]
        precision = args.precision or (None if on_gpu else "32-true")
        if precision:
            overrides.append(f"engine.precision={precision}")
        config = resolve_config(preset="paper", method="atlas", options={"progress": False, "runs_dir": str(work)},
                                overrides=overrides)
        print(f"device: {device}; torch {torch.__version__}, {torch.get_num_threads()} thread(s); load average "
              f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print(f"weights written in their original layouts: {vit.name} ({vit.stat().st_size / 2**20:.0f} MiB), "
              f"{cnn14.name} ({cnn14.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s")
        preset_batch = config["train"]["batch_size"]
        args.batch = args.batch or (preset_batch if on_gpu else 4)
        args.ms3_batch = args.ms3_batch or (preset_batch if on_gpu else 1)
        args.eval_clips = args.eval_clips or (config["train"]["eval_batch_size"] if on_gpu else 1)
        audio_second, audio_dim = measure_audio(config, args, clock)
        print(f"paper preset: {config['model']['visual']} (ViT-B/16) at {config['data']['image_size']} px, Cnn14 "
              f"{config['model']['audio_sample_rate']} Hz ({audio_dim}-d), batch {config['train']['batch_size']} clips, "
              f"{config['train']['epochs']} epochs, precision {config['engine']['precision']}\n")
        results = [measure_method(name, config, audio_dim, args, work, clock) for name in MEASURED]
    batch, epochs = preset_batch, config["train"]["epochs"]

    what = "wall seconds" if on_gpu else "CPU seconds of the process (wall seconds in brackets)"
    print(f"per step at the preset's batch of {batch} clips, in {what}:")
    print(f"{'network (method)':<20}{'params':>8}{'trained':>9}{'S4 step':>22}{'MS3 step':>22}{'eval/frame':>18}"
          f"{'ckpt':>9}{'peak mem':>10}")
    for m in results:
        n = m["name"]
        cells = [f"{m['s4_step']:.1f} ({clock.wall[n + ' s4'] * batch / args.batch:.1f})",
                 f"{m['ms3_step']:.1f} ({clock.wall[n + ' ms3'] * batch / args.ms3_batch:.1f})",
                 f"{m['eval_per_frame']:.2f} ({clock.wall[n + ' eval'] / (args.eval_clips * FRAMES_PER_CLIP):.2f})"]
        print(f"{m['network'] + ' (' + n + ')':<20}{m['parameters'] / 1e6:>7.1f}M{m['trainable'] / 1e6:>8.1f}M"
              f"{cells[0]:>22}{cells[1]:>22}{cells[2]:>18}{m['checkpoint_bytes'] / 2**20:>5.0f} MiB"
              f"{m['peak_memory_gb']:>6.1f} GiB")
    print(f"measured: S4 step at {args.batch} clips ({results[0]['s4_frames']} labelled frames) x {batch}/{args.batch}; "
          f"MS3 step at {args.ms3_batch} clip(s) ({results[0]['ms3_frames']} frames) x {batch}/{args.ms3_batch}; "
          f"evaluation of {args.eval_clips} clip(s) of 5 frames")
    for m in results:
        f = m["flops"]
        print(f"{m['name']}: {f['s4_step'] / 1e12:.2f} TFLOP per S4 step, {f['ms3_step'] / 1e12:.2f} per MS3 step, "
              f"{f['eval_per_frame'] / 1e9:.0f} GFLOP per evaluated frame (torch.utils.flop_counter)")
    print(f"frozen Cnn14: {audio_second * 1e3:.0f} ms per second of audio (once per clip, cached for every run)")
    print(f"peak memory: the process's {'CUDA max allocated' if on_gpu else 'peak RSS'} after each network\n")
    print_disk(config["data"]["image_size"], audio_dim, results)

    unit = "GPU-hours" if on_gpu else "core-hours"
    per_method = {}
    for m in results:
        print(f"one run, {m['name']} ({m['network']} network):")
        s4, s4_flops, lines = s4_run_cost(m, epochs, batch)
        for line in lines:
            print(f"  S4 (TIL, CIL, DIL each): {line}")
        tf, tf_flops, lines = tfcl_run_cost(m, epochs, batch, config["protocol"]["anytime_every"])
        for line in lines:
            print(f"  MS3 (TF-CL):             {line}")
        per_method[m["name"]] = 3 * s4 + tf
        print(f"  the four protocols: 3 x {s4 / 3600:.1f} h + {tf / 3600:.1f} h = {per_method[m['name']] / 3600:.1f} "
              f"{unit} on {device}")
        m["four_flops"] = 3 * s4_flops + tf_flops
        print(f"  in operations: 3 x {s4_flops / 1e15:.0f} + {tf_flops / 1e15:.0f} = {m['four_flops'] / 1e15:.0f} PFLOP\n")

    clips_seconds = (sum(S4_CLIPS.values()) + sum(MS3_CLIPS.values())) * FRAMES_PER_CLIP
    once = clips_seconds * audio_second
    runs = TABLE1["methods"] * TABLE1["seeds"]
    low, high = min(per_method.values()), max(per_method.values())
    print(f"Table 1 = {TABLE1['methods']} methods x {len(TABLE1['protocols'])} protocols x {TABLE1['seeds']} seeds "
          f"= {runs * len(TABLE1['protocols'])} runs:")
    print("  each method costs what the network it trains costs: the plain network trained whole (Finetune, LwF, EWC,\n"
          "  SI, MAS, DGR, PANDA) or a frozen ViT with few trained parameters (ATLAS's LoRA, L2P's prompts); a\n"
          "  method's own extra work (a teacher's forward, a Fisher pass) is not counted: a lower bound for those")
    for name, cost in per_method.items():
        print(f"  every method at {name}'s cost: {runs} (methods x seeds) x {cost / 3600:.1f} h = "
              f"{runs * cost / 3600:,.0f} {unit}")
    print(f"  + audio embedding once: {clips_seconds} s of audio x {audio_second * 1e3:.1f} ms = {once / 60:.1f} min")
    print(f"  -> between {(runs * low + once) / 3600:,.0f} and {(runs * high + once) / 3600:,.0f} {unit} on {device}")
    if not on_gpu:
        print(f"     ({os.cpu_count()} cores: at best {(runs * low + once) / 3600 / os.cpu_count():,.0f} hours of this "
              f"machine, every core busy)")
    flops = [m["four_flops"] * runs for m in results]
    print(f"  in operations: between {min(flops) / 1e18:.2f} and {max(flops) / 1e18:.2f} EFLOP (device-independent: divide "
          f"by a device's sustained FLOP/s for its time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
