"""`clavs run`: resolve data, scenario, encoders and method, drive the Trainer, write the run dir."""

from __future__ import annotations

import os
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

import torch

from clavs.engine.clips import ClipStore, dataset_key, decode_split, embed_audio
from clavs.engine.loop import LoopState, SplitStores, Trainer, TrainingDiverged, seed_all
from clavs.methods.context import MethodContext
from clavs.models.build import build_audio_encoder  # noqa: F401  (the registry of audio encoders lives there)
from clavs.errors import ClavsError, RunDirError
from clavs.results.checkpoints import check_or_write_scenario, check_run_binding, load_checkpoint, save_checkpoint
from clavs.results.store import CONFIG_FILE, RunDir, config_differences, run_dir_for
from clavs.utils.locks import file_lock
from clavs.utils.paths import cache_home

TFCL_PAPER_TASKS = 50
# Which AVSBench subset each protocol reads (data.avsbench.READERS).
PROTOCOL_SUBSET = {"til": "s4", "cil": "s4", "dil": "s4", "tfcl": "ms3"}


def dataset_root(config: dict[str, Any], *, progress: bool) -> Path:
    """The AVSBench tree to read: the user's, or SynthAVS built into the cache if absent."""
    root = config["data"]["root"]
    if root:
        path = Path(root).expanduser()
        if not (path / "Single-source").is_dir() and not (path / "Multi-sources").is_dir():
            raise FileNotFoundError(f"data.root={root}: no Single-source/ or Multi-sources/ folder there "
                                    f"(expected the AVSBench layout; see `clavs data check`)")
        return path
    from clavs.data.synth import generate

    # generate() returns at once for a complete build of these settings and redoes an interrupted one.
    return generate(synth_root(config), preset=config["data"]["synth_preset"], seed=config["data"]["synth_seed"],
                    progress=progress)


def synth_root(config: dict[str, Any]) -> Path:
    """Where the SynthAVS build of the config's data.synth_preset and data.synth_seed lives in the cache."""
    return cache_home() / "data" / f"synthavs-{config['data']['synth_preset']}-seed{config['data']['synth_seed']}"


def check_run_target(path: Path) -> None:
    """Refuse a run directory that cannot be written, before any data is built: the nearest existing
    folder on its path must be a writable folder (nothing is created here)."""
    probe = Path(os.path.abspath(path))
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise RunDirError(f"{probe} is a file, but the run directory {path} must go under it: choose another "
                          f"--runs-dir (or runs_dir=...)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirError(f"{probe} is not writable, so the run directory {path} cannot be made there: choose "
                          f"another --runs-dir or fix the folder's permissions")


def check_protocol_needs(config: dict[str, Any], datasets: dict[str, Any]) -> None:
    """Refuse a tree whose CSV rows cannot serve the protocol (a split or a category without videos),
    before anything is decoded; the message names the CSV."""
    from clavs.engine.clips import metadata_csv
    from clavs.protocols.requirements import protocol_problems

    protocol = config["protocol"]["name"]
    problems = protocol_problems(protocol, [r for ds in datasets.values() for r in ds.records])
    if problems:
        csv = metadata_csv(datasets["train"])
        raise ClavsError(f"{csv}: this tree cannot serve protocol {protocol}: {'; '.join(problems)}. "
                         f"`clavs data check {datasets['train'].root}` lists what each protocol needs")


def bind_run_dir(run: RunDir, config: dict[str, Any], log: Any) -> dict[str, Any]:
    """Under the run directory's lock: a new run writes config.yaml; an existing one must have been
    made for this config (check_run_binding). Removes temporary files a killed writer left. Returns
    the config the run directory is bound to (its config.yaml)."""
    if (run.path / CONFIG_FILE).exists():
        saved = check_run_binding(run, config)
        changed = config_differences(saved, config)
        if changed:
            log(f"continuing with {'; '.join(changed)} (config.yaml keeps the values the run started with)")
    else:
        run.write_config(config)
        saved = run.config()
    for folder in (run.path, run.path / "checkpoints"):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)  # a write a kill interrupted: the old file (if any) is whole
    return saved


def open_datasets(config: dict[str, Any], root: Path) -> dict[str, Any]:
    """The readers of the three splits (S4 for TIL/CIL/DIL, MS3 for TF-CL), yielding waveforms."""
    from clavs.data.avsbench import READERS

    reader = READERS[PROTOCOL_SUBSET[config["protocol"]["name"]]]
    size = config["data"]["image_size"]
    return {s: reader(root, split=s, image_size=size, audio="wav", normalize=False) for s in ("train", "val", "test")}


def build_scenario_for(config: dict[str, Any], datasets: dict[str, Any], stores: dict[str, ClipStore]) -> Any:
    """The Scenario of the config's protocol over the splits' records."""
    from clavs.protocols import build_scenario

    pc = config["protocol"]
    kwargs = dict(split=pc["split"], seed=config["seed"], class_order=pc["class_order"], variant=pc["variant"],
                  num_tasks=pc["num_tasks"], blur=pc["blur"])
    if pc["name"] == "tfcl" and not pc["num_tasks"]:
        # The paper's 50 tasks, or as many as the data allows (each task needs a train and a test video).
        kwargs["num_tasks"] = min(TFCL_PAPER_TASKS, len(datasets["train"]), len(datasets["test"]))
    if pc["name"] == "tfcl" and not all(r.sources for ds in datasets.values() for r in ds.records):
        # Real MS3 does not say which objects sound: order the stream by cheap audio-visual statistics
        # of the clips already decoded (no second read of the tree).
        from clavs.protocols import compute_video_features

        kwargs["video_features"] = {name: vec for store in stores.values()
                                    for name, vec in compute_video_features(store).items()}
    return build_scenario(pc["name"], datasets["train"].records, datasets["val"].records,
                          datasets["test"].records, **kwargs)


def decode_stores(config: dict[str, Any], datasets: dict[str, Any], progress: Any) -> dict[str, ClipStore]:
    """Every split decoded once (frames, masks, waveforms), from the clip cache when it has them."""
    size = config["data"]["image_size"]
    stores: dict[str, ClipStore] = {}
    for split, ds in datasets.items():
        bar = progress.add_task(f"decode {split}", total=len(ds)) if progress else None
        cb = (lambda d, n, bar=bar: progress.update(bar, completed=d)) if progress else None
        stores[split] = decode_split(ds, dataset_key(ds, split, size), use_cache=config["data"]["cache_frames"],
                                     progress=cb, workers=min(2, os.cpu_count() or 1))
        if progress:
            progress.remove_task(bar)
    return stores


def embed_stores(config: dict[str, Any], datasets: dict[str, Any], stores: dict[str, ClipStore], scenario: Any,
                 progress: Any, device: torch.device | str = "cpu") -> tuple[SplitStores, int]:
    """Run the frozen audio encoder once per clip (cached), in batches on `device` (the run's
    accelerator), and map every clip to its model class index."""
    encoder, enc_id = build_audio_encoder(config)
    for split, store in stores.items():
        total = len(store) * store.waveforms.shape[1]
        bar = progress.add_task(f"embed audio {split}", total=total) if progress else None
        cb = (lambda d, n, bar=bar: progress.update(bar, completed=d)) if progress else None
        embed_audio(store, encoder, enc_id, use_cache=config["data"]["cache_frames"], device=device, progress=cb)
        store.waveforms = None  # embedded once; the raw audio is not needed again
        if progress:
            progress.remove_task(bar)
    class_index = {s: torch.tensor(scenario.class_indices_of(datasets[s].records), dtype=torch.long) for s in stores}
    return SplitStores(train=stores["train"], val=stores["val"], test=stores["test"], class_index=class_index), \
        int(stores["train"].audio.shape[-1])


def ensure_weights(config: dict[str, Any]) -> None:
    """Pretrained tiny encoders the config asks for, in the cache (shipped copies or pretraining) now,
    so that the run's setup times this phase on its own."""
    from clavs.pretrain import ensure_pretrained

    mc = config["model"]
    for kind in ("visual", "audio"):
        if mc[kind] == "tiny" and mc[f"{kind}_weights"] == "pretrained":
            ensure_pretrained(kind, progress=config["progress"])


class _Phases(dict):
    """Wall seconds of the setup phases of this invocation (profile.json `setup_seconds`)."""

    def timed(self, name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start


def write_results(run: RunDir, scenario: Any, state: LoopState, method: Any) -> None:
    """matrices.json / summary.json (test), matrices_val.json / summary_val.json (validation),
    anytime.json (task-free streams), profile.json."""
    from clavs.metrics import anytime_auc, continual_summary

    T = len(scenario.tasks)
    empty = [[float("nan")] * T for _ in range(T)]  # rows not trained yet
    finished = state.next_task == T  # summaries are of finished matrices only
    for split, R, b in (("test", state.R, state.b), ("val", state.R_val, state.b_val)):
        matrices = {name: {"R": R.get(name, empty), "b": b.get(name)} for name in {**b, **R}}
        run.write_matrices(T, matrices, split=split)
        if finished:
            summary = {name: continual_summary(m["R"], m["b"]) for name, m in matrices.items()}
            if split == "test" and state.anytime:
                clips = [p["clips_seen"] for p in state.anytime]
                for name in summary:
                    if all(name in p["scores"] for p in state.anytime):
                        summary[name]["a_auc"] = anytime_auc(clips, [p["scores"][name] for p in state.anytime])
            run.write_summary(summary, split=split)
    if state.anytime:
        run.write_anytime({"every_steps": method.ctx.config["protocol"].get("anytime_every"), "points": state.anytime})
    total = sum(p.numel() for p in method.model.parameters())
    trainable = max((t.get("trainable_parameters", 0) for t in state.profile["tasks"]), default=0)
    profile = dict(state.profile)
    from clavs.utils.kernels import kernel_report

    fabric, engine = method.ctx.fabric, method.ctx.config["engine"]
    # Frame counts and rates in `tasks` are of every process together (engine/loop.py _totals_across_ranks).
    processes = {"world_size": fabric.world_size, "num_nodes": int(engine["num_nodes"]),
                 "devices_per_node": fabric.world_size // int(engine["num_nodes"]), "device": fabric.device.type,
                 "precision": str(engine["precision"])}
    profile.update({"method": method.info(), "cpu_kernels": kernel_report(), "total_parameters": total, "trainable_parameters_max": trainable,
                    "tasks_done": state.next_task, "tasks_total": T, "processes": processes})
    run.write_profile(profile)


def devices_per_node(engine: dict[str, Any]) -> int:
    """How many processes engine.devices starts on a node: a count, a list of indices ('0,1'), or
    every GPU (auto / -1)."""
    devices = engine["devices"]
    if devices in ("auto", -1, "-1"):
        return torch.cuda.device_count() if engine["accelerator"] in ("gpu", "cuda", "auto") else 1
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    return int(devices)


def run_experiment(config: dict[str, Any], *, run_dir: Path | None = None, console: Any = None) -> Path:
    """Train config's method through config's protocol; returns the run directory (DONE when complete)."""
    from lightning_fabric import Fabric

    from clavs.config import validate_config
    from clavs.methods import get_method_class

    validate_config(config)  # before anything is built or written
    ec = config["engine"]
    if ec.get("threads"):
        torch.set_num_threads(int(ec["threads"]))
    # Methods may leave parts of the network without gradients in a task (a frozen head, a class head
    # without labels): DDP must not wait for them.
    multi = devices_per_node(ec) > 1 or int(ec["num_nodes"]) > 1
    fabric = Fabric(accelerator=ec["accelerator"], devices=ec["devices"], num_nodes=ec["num_nodes"],
                    precision=ec["precision"], strategy="ddp_find_unused_parameters_true" if multi else "auto")
    fabric.launch()
    show = config["progress"] and fabric.is_global_zero
    progress_cm = _progress(console) if show else nullcontext(None)
    run = RunDir(run_dir or run_dir_for(config, config["runs_dir"]))
    if fabric.is_global_zero:
        check_run_target(run.path)
    with progress_cm as progress, ExitStack() as held:
        with fabric.rank_zero_first():
            # Rank 0 builds every cache first (SynthAVS, pretrained encoders, decoded clips, audio
            # embeddings); the other ranks then read them.
            method_cls = get_method_class(config["method"]["name"])
            method_cls.check_protocol(config["protocol"]["name"])
            phases = _Phases()
            root = phases.timed("dataset", dataset_root, config, progress=show)
            phases.timed("pretrained_weights", ensure_weights, config)
            datasets = phases.timed("dataset", open_datasets, config, root)
            check_protocol_needs(config, datasets)
            decoded = phases.timed("decode", decode_stores, config, datasets, progress)
            scenario = phases.timed("scenario", build_scenario_for, config, datasets, decoded)
            seed_all(config["seed"])
            stores, audio_dim = phases.timed("embed_audio", embed_stores, config, datasets, decoded, scenario, progress,
                                             fabric.device)
            seed_all(config["seed"])
            model = phases.timed("build_model", method_cls.build_model, config, scenario, audio_dim).to(fabric.device)
        task_free = scenario.protocol == "tfcl" and config["protocol"].get("boundaries", "visible") == "hidden"  # runs made before it: visible
        ctx = MethodContext(fabric=fabric, config=config, log=run.log if fabric.is_global_zero else (lambda m: None),
                            task_free=task_free)
        method = method_cls(model, method_cls.make_hparams(config["method"]), scenario, ctx)

        # One process writes a run directory: a second one waits here, then continues it or finds it done.
        if fabric.is_global_zero:
            held.enter_context(file_lock(run.path / ".lock", f"run directory {run.path}"))
        if fabric.broadcast(run.done):
            return run.path
        # Rank 0 decides where to continue from, so every process resumes the same task.
        run_config = None
        if fabric.is_global_zero:
            run.create()
            run_config = bind_run_dir(run, config, ctx.log)
        run_config = fabric.broadcast(run_config)
        latest = fabric.broadcast(run.latest_checkpoint())
        if fabric.is_global_zero:
            check_or_write_scenario(run, scenario, resuming=latest is not None)
        state = LoopState()
        if latest is not None:
            state = load_checkpoint(latest[1], method, task_free=task_free, run_config=run_config, task=latest[0])
        state.profile["setup_seconds"] = dict(phases)  # this invocation's (a resumed run's own)
        if latest is not None:
            ctx.log(f"resumed from {latest[1].name}: continuing at task {state.next_task}")
        else:
            ctx.log(f"start: {config['method']['name']} on {config['protocol']['name']} {config['protocol']['split']}, "
                    f"seed {config['seed']}, data {root}")
            ctx.log(scenario.describe())

        def on_task_end(t: int | None, st: LoopState) -> None:
            if fabric.is_global_zero and t is None:  # the initial scores b
                write_results(run, scenario, st, method)
            elif fabric.is_global_zero:
                save_checkpoint(run, t, method, st, run_config=run_config,
                                keep=config["train"].get("keep_checkpoints", "all"))
                write_results(run, scenario, st, method)
                last = st.profile["tasks"][-1]
                ctx.log(f"task {t} done in {last['wall_seconds']:.1f}s; "
                        + ", ".join(f"{k}={st.R[k][t][t]:.2f}" for k in ("map", "maxf", "miou") if k in st.R))

        trainer = Trainer(method, scenario, stores, ctx, progress=progress, on_task_end=on_task_end)
        try:
            state = trainer.run(state)
        except TrainingDiverged as e:
            ctx.log(f"STOPPED: {e}")
            raise
        if fabric.is_global_zero:
            write_results(run, scenario, state, method)
            run.mark_done()
            ctx.log("DONE")
    return run.path


def _progress(console: Any):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)
