"""Resolved run configuration: base.yaml, then a preset, then the method's declared
hyperparameters, then command-line options and `key=value` overrides. Unknown keys are errors."""

from __future__ import annotations

import copy
import functools
import math
import os
import re
from importlib import resources
from typing import Any, Iterable

import yaml

from clavs.errors import ClavsError
from clavs.metrics.names import MATRIX_METRICS
from clavs.protocols.scenario import PROTOCOLS
from clavs.utils.io import read_yaml_mapping

PRESETS = ("smoke", "default", "paper")
_DECIMAL_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
# The split a protocol uses unless the user names one (TF-CL runs on MS3 with the paper's 31-5).
DEFAULT_SPLITS = {"til": "11-2", "cil": "11-2", "dil": "11-2", "tfcl": "31-5"}
SELECT_METRICS = MATRIX_METRICS + ("last",)


class ConfigError(ClavsError, ValueError):
    """A config key or value the user gave is not valid; the message names it."""


@functools.lru_cache(maxsize=None)
def _load_yaml(name: str) -> dict[str, Any]:
    """A shipped config file, parsed once per process (a sweep resolves many configs); callers must not
    modify it (deep_merge copies)."""
    text = resources.files("clavs.configs").joinpath(name).read_text()
    return yaml.safe_load(text) or {}


def deep_merge(base: dict[str, Any], update: dict[str, Any], *, strict: bool, where: str = "") -> dict[str, Any]:
    """Merge `update` into a copy of `base`. With strict, every key of update must exist in base."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{where}{key}"
        if strict and key not in out:
            raise ConfigError(f"unknown config key '{path}'; valid keys here: {', '.join(sorted(out))}")
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value, strict=strict, where=f"{path}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in config.items():
        if isinstance(v, dict) and v:
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """'train.epochs=3' -> ('train.epochs', 3). The value is parsed as YAML (numbers, bools, lists)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value (e.g. method.lra=false)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML ({e})") from None
    if isinstance(value, str) and _DECIMAL_EXPONENT.fullmatch(value):  # YAML 1.1 reads '3e-4' as a string
        value = float(value)
    return key, value


def apply_override(config: dict[str, Any], key: str, value: Any) -> None:
    node = config
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            raise ConfigError(_unknown_key_message(config, key))
        node = node[part]
    leaf = parts[-1]
    if leaf not in node:
        raise ConfigError(_unknown_key_message(config, key))
    node[leaf] = value


def _unknown_key_message(config: dict[str, Any], key: str) -> str:
    valid = sorted(flatten(config))
    section = key.split(".")[0]
    near = [k for k in valid if k.startswith(section + ".")] or valid
    return f"unknown config key '{key}'; valid keys: {', '.join(near)}"


def load_config_file(path: str | os.PathLike) -> list[tuple[str, Any]]:
    """The values of a config file (`clavs run --config FILE`; what `clavs select` writes) as dotted
    (key, value) pairs: a YAML mapping holding any part of the config, e.g. `method: {name: atlas, lra_lambda: 5.0}`."""
    data = read_yaml_mapping(path, ConfigError, where=f"--config {path}",
                             expected="a mapping of config values (e.g. method: {name: atlas})")
    return list(flatten(data).items())


def resolve_config(
    *,
    preset: str = "default",
    method: str | None = None,
    options: dict[str, Any] | None = None,
    overrides: Iterable[str] = (),
    config_file: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Build the fully resolved config dict of a run.

    Later wins: base.yaml, the preset, the method's declared defaults, the values of `config_file`,
    `options` (named command-line options as dotted keys, {'protocol.name': 'til', ...}), then
    `overrides` (['method.lra=false', ...]). The method is --method or a method.name override, else
    the file's method.name, else base.yaml's.
    """
    from clavs.methods import get_method_class  # late: methods import the engine's types

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    config = deep_merge(_load_yaml("base.yaml"), _load_yaml(f"preset_{preset}.yaml"), strict=True)
    config["preset"] = preset
    parsed = [parse_override(o) for o in overrides]
    from_file = load_config_file(config_file) if config_file is not None else []
    # The method decides which hyperparameters exist, so settle it first.
    for key, value in list((options or {}).items()) + parsed:
        if key == "method.name" and value is not None:
            method = value
    file_method = dict(from_file).get("method.name")
    method = method or file_method or config["method"]["name"]
    method_cls = get_method_class(method)
    if file_method not in (None, method_cls.name):
        raise ConfigError(f"--config {config_file} holds settings of method '{file_method}', "
                          f"not of '{method_cls.name}'")
    config["method"] = {"name": method_cls.name, **method_cls.default_hparams(config)}

    def apply(pairs: list[tuple[str, Any]], where: str) -> None:
        for key, value in pairs:
            if key == "method.name":
                continue
            if key.startswith("method.") and key.split(".", 1)[1] not in config["method"]:
                valid = ", ".join(sorted(k for k in config["method"] if k != "name")) or "(none)"
                raise ConfigError(f"{where}unknown hyperparameter '{key}' for method '{method_cls.name}'; valid: {valid}")
            try:
                apply_override(config, key, value)
            except ConfigError as e:
                raise ConfigError(f"{where}{e}") from None

    apply(from_file, f"--config {config_file}: ")
    for key, value in (options or {}).items():
        if value is not None:
            apply_override(config, key, value)
    named = {k for k, v in (options or {}).items() if v is not None} | {k for k, _ in parsed + from_file}
    apply(parsed, "")
    if "protocol.split" not in named:
        config["protocol"]["split"] = DEFAULT_SPLITS.get(config["protocol"]["name"], config["protocol"]["split"])
    method_cls.validate_hparams(config["method"])
    validate_config(config)
    return config


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_SIMPLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true",
              "transformer-engine", "transformer-engine-float16")


def validate_config(config: dict[str, Any]) -> None:
    """Check the type and range of every value before anything is written; the message names the key."""
    from clavs.data.synth import PRESETS as SYNTH_PRESETS

    def get(key: str) -> Any:
        node: Any = config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"config key '{key}' is missing")
            node = node[part]
        return node

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={get(key)!r} {what}")

    for section in ("data", "protocol", "model", "method", "train", "engine"):
        if not isinstance(config.get(section), dict):
            raise ConfigError(f"config section '{section}' must be a mapping, got {config.get(section)!r}")
    experiment = get("experiment")
    need(isinstance(experiment, str) and bool(_SIMPLE_NAME.fullmatch(experiment)) and ".." not in experiment,
         "experiment", "must be a simple folder name (letters, digits, . _ + -; no '/' or '..'): it names a "
                       "folder under --runs-dir")
    need(_is_int(get("seed")) and get("seed") >= 0, "seed", "must be an integer >= 0")
    need(isinstance(get("runs_dir"), str) and get("runs_dir").strip() != "", "runs_dir", "must be a folder path")
    need(isinstance(get("progress"), bool), "progress", "must be true or false")
    root = get("data.root")
    need(root is None or (isinstance(root, str) and root.strip() != ""), "data.root",
         "must be null (SynthAVS) or the path of an AVSBench tree")
    need(get("data.synth_preset") in SYNTH_PRESETS, "data.synth_preset", f"is not one of {', '.join(SYNTH_PRESETS)}")
    need(_is_int(get("data.synth_seed")) and get("data.synth_seed") >= 0, "data.synth_seed", "must be an integer >= 0")
    need(isinstance(get("data.cache_frames"), bool), "data.cache_frames", "must be true or false")

    protocol = config["protocol"]["name"]
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol.name={protocol!r} is not one of {', '.join(PROTOCOLS)}")
    need(isinstance(get("protocol.split"), str) and bool(re.fullmatch(r"\s*\d+\s*-\s*\d+\s*", get("protocol.split"))),
         "protocol.split", "must be a split string B-I, e.g. 11-2")
    order = get("protocol.class_order")
    need(order in ("random", "alphabetical") or (isinstance(order, list) and all(isinstance(c, str) for c in order)),
         "protocol.class_order", "must be random, alphabetical or a list of category names")
    need(get("protocol.variant") in (None, "domains"), "protocol.variant", "must be null or domains (dil only)")
    num_tasks = get("protocol.num_tasks")
    need(num_tasks is None or (_is_int(num_tasks) and num_tasks >= 1), "protocol.num_tasks",
         "must be null or a positive integer")
    need(_is_number(get("protocol.blur")) and 0 <= get("protocol.blur") <= 0.5, "protocol.blur",
         "must be a number in [0, 0.5]")
    if config["protocol"]["boundaries"] not in ("hidden", "visible"):
        raise ConfigError(f"protocol.boundaries={config['protocol']['boundaries']!r} is not one of hidden, visible")
    every = config["protocol"]["anytime_every"]
    if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 0):
        raise ConfigError(f"protocol.anytime_every={every!r} must be null or an integer >= 0 (training steps)")

    for key in ("model.visual", "model.audio"):
        need(isinstance(get(key), str) and get(key) != "", key, "must be a name")
    for key in ("model.visual_weights", "model.audio_weights"):
        need(get(key) is None or (isinstance(get(key), str) and get(key) != ""), key,
             "must be pretrained, none, hub, null or a file path")
    for key in ("model.audio_sample_rate", "model.width", "model.heads", "model.lora_r", "model.decoder_dim"):
        need(_is_int(get(key)) and get(key) >= 1, key, "must be a positive integer")
    need(_is_number(get("model.lora_alpha")) and get("model.lora_alpha") > 0, "model.lora_alpha",
         "must be a positive number")
    need(get("model.audio_context") in ("clip", "frame"), "model.audio_context", "must be clip or frame")
    need(isinstance(get("model.decoder_lora"), bool), "model.decoder_lora", "must be true or false")
    targets = get("model.lora_targets")
    need(targets is None or isinstance(targets, str) or (isinstance(targets, list) and all(isinstance(t, str) for t in targets)),
         "model.lora_targets", "must be null, a module name or a list of module names")
    for key, value in config["method"].items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"method.{key}={value!r} must be a finite number")

    for key in ("train.epochs", "train.batch_size", "train.eval_batch_size", "data.image_size"):
        section, leaf = key.split(".")
        value = config[section][leaf]
        if not _is_int(value) or value < 1:
            raise ConfigError(f"{key}={value!r} must be a positive integer")
    need(_is_number(get("train.lr")) and get("train.lr") > 0, "train.lr", "must be a finite number > 0")
    need(_is_number(get("train.weight_decay")) and get("train.weight_decay") >= 0, "train.weight_decay",
         "must be a finite number >= 0")
    clip = get("train.grad_clip")
    need(clip is None or (_is_number(clip) and clip > 0), "train.grad_clip", "must be null (no clipping) or a number > 0")
    need(_is_int(get("train.num_workers")) and get("train.num_workers") >= 0, "train.num_workers",
         "must be an integer >= 0")
    if config["train"].get("keep_checkpoints", "all") not in ("all", "last"):  # absent in runs made before it
        raise ConfigError(f"train.keep_checkpoints={config['train']['keep_checkpoints']!r} is not one of all, last")
    if config["train"].get("val_matrix", "full") not in ("last", "full"):  # absent in runs made before it: full
        raise ConfigError(f"train.val_matrix={config['train']['val_matrix']!r} is not one of last, full")
    if config["train"]["select_metric"] not in SELECT_METRICS:
        raise ConfigError(f"train.select_metric={config['train']['select_metric']!r} is not one of "
                          f"{', '.join(SELECT_METRICS)}")

    need(get("engine.accelerator") in ACCELERATORS, "engine.accelerator", f"is not one of {', '.join(ACCELERATORS)}")
    devices = get("engine.devices")
    need((_is_int(devices) and (devices >= 1 or devices == -1)) or devices == "auto"
         or (isinstance(devices, str) and bool(re.fullmatch(r"\d+(,\d+)*,?", devices))),
         "engine.devices", "must be a positive integer, -1, auto or a list of device indices like 0,1")
    need(_is_int(get("engine.num_nodes")) and get("engine.num_nodes") >= 1, "engine.num_nodes", "must be a positive integer")
    need(str(get("engine.precision")) in PRECISIONS and not isinstance(get("engine.precision"), bool),
         "engine.precision", f"is not one of {', '.join(PRECISIONS)}")
    threads = get("engine.threads")
    need(threads is None or (_is_int(threads) and threads >= 1), "engine.threads", "must be null or a positive integer")
    if not isinstance(config["seed"], int):
        raise ConfigError(f"seed={config['seed']!r} must be an integer")
