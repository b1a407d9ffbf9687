"""Resolved run configuration: base.yaml, then a preset, then the method's declared
hyperparameters, then command-line options and `key=value` overrides. Unknown keys are errors."""

from __future__ import annotations

import copy
import re
from importlib import resources
from typing import Any, Iterable

import yaml

from clavs.metrics.names import MATRIX_METRICS
from clavs.protocols.scenario import PROTOCOLS

PRESETS = ("smoke", "default", "paper")
_DECIMAL_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
# The split a protocol uses unless the user names one (TF-CL runs on MS3 with the paper's 31-5).
DEFAULT_SPLITS = {"til": "11-2", "cil": "11-2", "dil": "11-2", "tfcl": "31-5"}
SELECT_METRICS = MATRIX_METRICS + ("last",)


class ConfigError(ValueError):
    """A config key or value the user gave is not valid; the message names it."""


def _load_yaml(name: str) -> dict[str, Any]:
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


def resolve_config(
    *,
    preset: str = "default",
    method: str | None = None,
    options: dict[str, Any] | None = None,
    overrides: Iterable[str] = (),
) -> dict[str, Any]:
    """Build the fully resolved config dict of a run.

    options: values of named command-line options as dotted keys ({'protocol.name': 'til', ...}),
    applied before `overrides` (['method.lra=false', ...]).
    """
    from clavs.methods import get_method_class  # late: methods import the engine's types

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    config = deep_merge(_load_yaml("base.yaml"), _load_yaml(f"preset_{preset}.yaml"), strict=True)
    config["preset"] = preset
    parsed = [parse_override(o) for o in overrides]
    # The method decides which hyperparameters exist, so settle it first.
    for key, value in list((options or {}).items()) + parsed:
        if key == "method.name" and value is not None:
            method = value
    method = method or config["method"]["name"]
    method_cls = get_method_class(method)
    config["method"] = {"name": method_cls.name, **method_cls.default_hparams(config)}
    for key, value in (options or {}).items():
        if value is not None:
            apply_override(config, key, value)
    named = {k for k, v in (options or {}).items() if v is not None} | {k for k, _ in parsed}
    for key, value in parsed:
        if key == "method.name":
            continue
        if key.startswith("method.") and key.split(".", 1)[1] not in config["method"]:
            valid = ", ".join(sorted(k for k in config["method"] if k != "name")) or "(none)"
            raise ConfigError(f"unknown hyperparameter '{key}' for method '{method_cls.name}'; valid: {valid}")
        apply_override(config, key, value)
    if "protocol.split" not in named:
        config["protocol"]["split"] = DEFAULT_SPLITS.get(config["protocol"]["name"], config["protocol"]["split"])
    method_cls.validate_hparams(config["method"])
    validate_config(config)
    return config


def validate_config(config: dict[str, Any]) -> None:
    protocol = config["protocol"]["name"]
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol.name='{protocol}' is not one of {', '.join(PROTOCOLS)}")
    if config["protocol"]["boundaries"] not in ("hidden", "visible"):
        raise ConfigError(f"protocol.boundaries={config['protocol']['boundaries']!r} is not one of hidden, visible")
    every = config["protocol"]["anytime_every"]
    if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 0):
        raise ConfigError(f"protocol.anytime_every={every!r} must be null or an integer >= 0 (training steps)")
    for key in ("train.epochs", "train.batch_size", "train.eval_batch_size", "data.image_size"):
        section, leaf = key.split(".")
        value = config[section][leaf]
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value!r} must be a positive integer")
    if config["train"]["val_matrix"] not in ("last", "full"):
        raise ConfigError(f"train.val_matrix={config['train']['val_matrix']!r} is not one of last, full")
    if config["train"]["select_metric"] not in SELECT_METRICS:
        raise ConfigError(f"train.select_metric={config['train']['select_metric']!r} is not one of "
                          f"{', '.join(SELECT_METRICS)}")
    if not isinstance(config["seed"], int):
        raise ConfigError(f"seed={config['seed']!r} must be an integer")
