"""A run's method and network, rebuilt from its run directory and one task checkpoint, for prediction
(`clavs predict` on a user's video; the report's qualitative figure).

What is rebuilt, and from where:
    config.yaml     the resolved config (its hash must still match the folder name: check_run_binding)
    scenario.json   the tasks: class heads sized to the classes seen, TIL's mask head per task
    checkpoints/task_<t>.pt   the network's weights and the method's state after task t
                    (load_checkpoint: the same code a resume runs, so heads grow as they did in training)
The network is built with `model.visual_weights=none`: every weight then comes from the checkpoint,
loaded strictly (a missing or extra key is an error), so a run directory copied to another machine
predicts without the pretrained weight files it was trained from. The frozen audio encoder is not in
the checkpoint (the network consumes its embeddings): it is built from `model.audio` /
`model.audio_weights` exactly as the run built it, and `embed_waveforms` applies it through the
function the clip cache uses (engine/clips.embed_audio), to 16 kHz one-second waveforms.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clavs.batch import Batch, ModelOutput
from clavs.errors import ClavsError, RunDirError
from clavs.results.checkpoints import SCENARIO_FILE, check_run_binding, load_checkpoint
from clavs.results.store import CONFIG_FILE, RunDir

DATA_SAMPLE_RATE = 16000  # what the clip cache holds (AVSBench's wav files); encoders resample from it
_CHECKPOINT_NAME = re.compile(r"^(?:task_)?(\d+)(?:\.pt)?$")
# Fabric has no fp16 autocast on the CPU: a run trained in 16-mixed on a GPU predicts in bf16 there.
_CPU_PRECISION = {"16-mixed": "bf16-mixed", "16-true": "bf16-mixed"}


def find_checkpoint(run: RunDir, which: str | int | None = None) -> tuple[int, Path]:
    """(task, path) of the checkpoint `which` names ('task_3', 'task_3.pt', '3' or 3), or of the latest
    when None. Errors name the run's checkpoint folder and list what is there."""
    folder = run.path / "checkpoints"
    found = sorted((int(m.group(1)), p) for p in folder.glob("task_*.pt")
                   if (m := _CHECKPOINT_NAME.match(p.name))) if folder.is_dir() else []
    if not found:
        raise RunDirError(f"{folder}: no task checkpoint (task_<t>.pt) here: the run has not finished its first "
                          f"task, or its checkpoints were removed; nothing to predict with")
    if which is None:
        return found[-1]
    m = _CHECKPOINT_NAME.match(str(which).strip())
    wanted = int(m.group(1)) if m else None
    for t, p in found:
        if t == wanted:
            return t, p
    raise RunDirError(f"{folder}: no checkpoint {which!r}; there are {', '.join(p.stem for _, p in found)}")


@dataclass
class RestoredRun:
    """A run's method (with its network) after task `task`, on `fabric`'s device, in eval mode."""

    path: Path
    config: dict[str, Any]
    scenario: Any  # protocols.Scenario
    method: Any  # methods.base.Method
    task: int  # the checkpoint's task: tasks 0..task were trained
    checkpoint: Path
    fabric: Any  # lightning_fabric.Fabric (device and the run's autocast)
    audio_encoder: Any  # the frozen audio encoder the run embedded its clips with
    audio_encoder_id: str

    @property
    def model(self) -> torch.nn.Module:
        return self.method.model

    @property
    def protocol(self) -> str:
        return self.scenario.protocol

    @property
    def seen_classes(self) -> list[str]:
        """Names of the class head's outputs after the checkpoint's task (empty without a class head)."""
        if not self.scenario.has_class_head:
            return []
        return list(self.scenario.class_order[: self.scenario.tasks[self.task].num_seen_classes])

    def task_id(self, requested: int | None) -> int:
        """The task id a batch reveals (choose_task_id)."""
        return choose_task_id(self.path, self.scenario, self.task, requested)

    def embed_waveforms(self, waveforms: torch.Tensor) -> torch.Tensor:
        """[N, T, 16000] mono 16 kHz seconds -> [N, T, D] embeddings (on the CPU), as the clip cache computes
        them, on the device the method predicts on (a run embeds on its own accelerator)."""
        from clavs.engine.clips import ClipStore, embed_audio

        n, t, samples = waveforms.shape
        if samples != DATA_SAMPLE_RATE:
            raise ValueError(f"embed_waveforms takes one-second rows of {DATA_SAMPLE_RATE} samples, got {samples}")
        store = ClipStore(frames=torch.empty(n, 0), masks=torch.empty(n, 0), mask_valid=torch.empty(n, 0),
                          labels=torch.full((n,), -1), video_ids=[""] * n, waveforms=waveforms.float())
        embed_audio(store, self.audio_encoder, self.audio_encoder_id, use_cache=False, device=self.fabric.device)
        return store.audio

    @torch.no_grad()
    def predict(self, frames: torch.Tensor, audio: torch.Tensor, *, task_id: int = -1) -> ModelOutput:
        """method.predict on clips: frames [B,T,3,S,S] (uint8, or float in [0, 1]) at the run's
        data.image_size, audio embeddings [B,T,D]; task_id as `task_id()` returns it. Under the run's
        autocast, as its evaluation ran."""
        b, t = frames.shape[:2]
        size = frames.shape[-1]
        batch = Batch(frames=frames, audio=audio.float(), masks=torch.zeros(b, t, 1, size, size, dtype=torch.uint8),
                      mask_valid=torch.ones(b, t, dtype=torch.bool), class_index=torch.full((b,), -1),
                      task_id=torch.full((b,), task_id), index=torch.arange(b))
        batch = batch.to(self.fabric.device).prepared()
        self.model.eval()
        with self.fabric.autocast():
            return self.method.predict(batch)


def choose_task_id(path: Path, scenario: Any, trained: int, requested: int | None) -> int:
    """The task id a batch reveals: TIL needs one (it picks the mask head) among the tasks 0..trained;
    the other protocols reveal none (-1) and refuse one, which would change nothing."""
    if scenario.protocol != "til":
        if requested is not None:
            raise ClavsError(f"{path}: a {scenario.protocol.upper()} run takes no task id (only TIL runs choose a "
                             f"mask head by task); leave out --task-id")
        return -1
    names = "; ".join(f"{t.id}: {t.name}" for t in scenario.tasks[: trained + 1])
    listing = f"tasks 0..{trained} are trained ({names})"
    if requested is None:
        raise ClavsError(f"{path}: a TIL run needs the task id (--task-id K) to choose the mask head; {listing}")
    if not 0 <= int(requested) <= trained:
        raise ClavsError(f"{path}: task id {requested} is not among the tasks task_{trained}.pt was trained on; "
                         f"{listing}")
    return int(requested)


def _fabric(config: dict[str, Any], accelerator: str) -> Any:
    from lightning_fabric import Fabric

    precision = str(config["engine"]["precision"])
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu:
        precision = _CPU_PRECISION.get(precision, precision)
    return Fabric(accelerator=accelerator, devices=1, precision=precision)


def restore_run(run_dir: str | Path, checkpoint: str | int | None = None, *, accelerator: str = "cpu") -> RestoredRun:
    """Rebuild the run's scenario, network and method, load checkpoint `checkpoint` (see find_checkpoint;
    default the latest) and return them ready to predict (eval mode)."""
    from clavs.config import validate_config
    from clavs.methods import get_method_class
    from clavs.methods.context import MethodContext
    from clavs.models.build import build_audio_encoder
    from clavs.utils.seeding import seed_all

    run = RunDir(Path(run_dir))
    if not run.path.is_dir():
        raise RunDirError(f"{run.path}: no such folder (a run directory, see `clavs runs`)")
    if not (run.path / CONFIG_FILE).is_file():
        raise RunDirError(f"{run.path / CONFIG_FILE}: missing; {run.path} is not a clavs run directory")
    config = check_run_binding(run)  # config.yaml as the run was made (its hash is the folder's)
    validate_config(config)
    task, path = find_checkpoint(run, checkpoint)
    scenario = read_scenario(run.path / SCENARIO_FILE)

    fabric = _fabric(config, accelerator)
    encoder, encoder_id = build_audio_encoder(config)
    build_config = copy.deepcopy(config)
    build_config["model"]["visual_weights"] = "none"  # every weight comes from the checkpoint (strict load)
    method_cls = get_method_class(config["method"]["name"])
    seed_all(config["seed"])
    model = method_cls.build_model(build_config, scenario, int(encoder.embed_dim)).to(fabric.device)
    task_free = scenario.protocol == "tfcl" and config["protocol"].get("boundaries", "visible") == "hidden"
    ctx = MethodContext(fabric=fabric, config=config, log=lambda message: None, task_free=task_free)
    method = method_cls(model, method_cls.make_hparams(config["method"]), scenario, ctx)
    load_checkpoint(path, method, task_free=task_free, run_config=config, task=task)
    method.model.eval()
    return RestoredRun(path=run.path, config=config, scenario=scenario, method=method, task=task, checkpoint=path,
                       fabric=fabric, audio_encoder=encoder, audio_encoder_id=encoder_id)


def read_scenario(path: Path) -> Any:
    from clavs.protocols.scenario import Scenario

    try:
        return Scenario.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise RunDirError(f"{path}: missing; the run directory is incomplete (it is written when a run starts)") from None
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise RunDirError(f"{path}: not a clavs scenario file ({type(e).__name__}: {e})") from None
