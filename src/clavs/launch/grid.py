"""A sweep as a job list: methods x protocols x seeds x grid points, each job one `clavs run`.

A sweep is one or more blocks (a YAML grid file's `runs:` list, or the command line's one block).
A block crosses its methods, protocols and seeds with its grid points: the cartesian product of the
`grid` axes (`key: [v1, v2]`), crossed with the explicit `points` (a list of `{key: value}`), with the
fixed `set` values in every job. A `method.*` key reaches only the methods that declare that
hyperparameter (so `method.lra=true,false` sweeps ATLAS's switch and runs the other methods once).

Every job is described by the argv of `clavs run` that makes it, and its config is resolved by
parsing that argv with the `clavs run` parser (cli.run_config): a job's run directory is by
construction the one `clavs run` with the same options makes, so a sweep recognises runs made by
hand, skips the finished ones and lets `clavs run` resume the unfinished ones.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from clavs.config import PRESETS, ConfigError, flatten, parse_override
from clavs.protocols.scenario import PROTOCOLS
from clavs.results.store import run_dir_for
from clavs.utils.io import parse_yaml_mapping, read_yaml_mapping

BLOCK_KEYS = ("methods", "protocols", "seeds", "split", "preset", "set", "grid", "points")
FILE_KEYS = ("description", "runs") + BLOCK_KEYS
LOG_NAME = "sweep.log"
JOB_KEYS = {"method.name": "methods (--methods)", "protocol.name": "protocols (--protocols)", "seed": "seeds (--seeds)",
            "preset": "preset (--preset)"}


@dataclass
class Block:
    methods: list[str] | None  # None: every registered method (that supports the protocol)
    protocols: list[str]
    seeds: list[int]
    split: str | None = None
    preset: str = "default"
    axes: dict[str, list[str]] = field(default_factory=dict)  # key -> value texts (fixed values: one text)
    points: list[dict[str, str]] = field(default_factory=lambda: [{}])


@dataclass
class RunOptions:
    """`clavs run` options every job of a sweep shares."""

    runs_dir: str | None = None
    data_root: str | None = None
    epochs: int | None = None
    devices: str | None = None
    accelerator: str | None = None
    config: str | None = None  # one --config file for every job
    selected: str | None = None  # a folder of `clavs select` files: <method>.<protocol>.yaml per job


@dataclass(frozen=True)
class Job:
    label: str
    method: str
    protocol: str
    seed: int
    point: tuple[tuple[str, str], ...]  # the grid values of this job (key, value text), seed excluded
    argv: tuple[str, ...]  # `clavs run` options that make this run
    run_dir: Path
    cwd: str = field(default_factory=os.getcwd)
    config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_NAME


# -- values ---------------------------------------------------------------------------------------
def split_values(text: str) -> list[str]:
    """'true,false' -> ['true', 'false']; commas inside brackets or quotes do not split ('[a,b],[c]',
    "'0,1'")."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def value_text(key: str, value: Any) -> str:
    """A YAML value as the text of a `key=value` override that parses back to the same value."""
    if isinstance(value, str):
        text = value if _parses_to(key, value, value) else json.dumps(value)
    else:
        text = json.dumps(value)
    if not _parses_to(key, text, value):
        raise ConfigError(f"{key}: the value {value!r} cannot be written as key=value")
    return text


def _parses_to(key: str, text: str, value: Any) -> bool:
    try:
        parsed = parse_override(f"{key}={text}")[1]
    except ConfigError:
        return False
    return parsed == value and type(parsed) is type(value)


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-4' (inclusive) or a mix."""
    seeds: list[int] = []
    for part in split_values(text):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ConfigError(f"--seeds {text}: '{part}' is not a seed (an integer >= 0) or a range like 0-4")
        seeds += list(range(int(lo), int(hi or lo) + 1))
    return list(dict.fromkeys(seeds))


def parse_axes(texts: list[str]) -> dict[str, list[str]]:
    """['method.lra=true,false', 'train.epochs=1'] -> {'method.lra': ['true', 'false'], 'train.epochs': ['1']}."""
    axes: dict[str, list[str]] = {}
    for text in texts:
        key, _ = parse_override(text)  # the message names a malformed one
        values = split_values(text.split("=", 1)[1])
        for v in values:
            parse_override(f"{key}={v}")
        axes[key] = values
    return axes


# -- grid files -------------------------------------------------------------------------------------
def shipped_grids() -> list[str]:
    folder = resources.files("clavs.configs").joinpath("experiments")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_grid(name_or_path: str) -> tuple[list[Block], str]:
    """The blocks of a grid file (a path, or the name of a grid shipped in configs/experiments/) and
    its description."""
    path = Path(name_or_path)
    expected = "a mapping (methods, protocols, seeds, set, grid, points, runs)"
    if path.is_file():
        where = str(path)
        data = read_yaml_mapping(path, ConfigError, expected=expected)
    elif name_or_path in shipped_grids():
        where = f"configs/experiments/{name_or_path}.yaml"
        text = resources.files("clavs.configs").joinpath("experiments").joinpath(f"{name_or_path}.yaml").read_text()
        data = parse_yaml_mapping(text, where, ConfigError, expected=expected)
    else:
        raise ConfigError(f"--grid {name_or_path}: no such file, and not a shipped grid ({', '.join(shipped_grids())})")
    _check_keys(data, FILE_KEYS, where)
    top = {k: v for k, v in data.items() if k not in ("runs", "description")}
    runs = data.get("runs") or [{}]
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise ConfigError(f"{where}: runs must be a list of mappings (blocks)")
    blocks = []
    for i, run in enumerate(runs):
        here = f"{where} runs[{i}]" if "runs" in data else where
        _check_keys(run, BLOCK_KEYS, here)
        merged = {**top, **run}
        for key in ("set", "grid"):
            merged[key] = {**_mapping(top.get(key), f"{where} {key}"), **_mapping(run.get(key), f"{here} {key}")}
        blocks.append(_block(merged, here))
    return blocks, str(data.get("description", "")).strip()


def _check_axis_keys(keys: list[str], where: str) -> None:
    for key in keys:
        if key in JOB_KEYS:
            raise ConfigError(f"{where}: {key} is chosen by {JOB_KEYS[key]}, not by a key=value")


def _check_keys(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; a grid file has {', '.join(allowed)}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping of config keys")
    return flatten(value)


def _block(d: dict[str, Any], where: str) -> Block:
    methods = d.get("methods", "all")
    if methods != "all" and not (isinstance(methods, list) and methods and all(isinstance(m, str) for m in methods)):
        raise ConfigError(f"{where}: methods must be 'all' or a list of method names, got {methods!r}")
    protocols = d.get("protocols", ["cil"])
    if not isinstance(protocols, list) or not protocols or not all(p in PROTOCOLS for p in protocols):
        raise ConfigError(f"{where}: protocols must be a list of {', '.join(PROTOCOLS)}, got {protocols!r}")
    seeds = d.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                           for s in seeds):
        raise ConfigError(f"{where}: seeds must be a list of integers >= 0, got {seeds!r}")
    preset = d.get("preset", "default")
    if preset not in PRESETS:
        raise ConfigError(f"{where}: preset {preset!r} is not one of {', '.join(PRESETS)}")
    split = d.get("split")
    if split is not None and not isinstance(split, str):
        raise ConfigError(f"{where}: split must be a string like '11-2', got {split!r}")
    axes = {k: [value_text(k, v)] for k, v in d["set"].items()}
    for key, values in d["grid"].items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where} grid: {key} must be a non-empty list of values, got {values!r}")
        axes[key] = [value_text(key, v) for v in values]
    points = d.get("points") or [{}]
    if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
        raise ConfigError(f"{where}: points must be a list of mappings {{key: value}}")
    points = [{k: value_text(k, v) for k, v in flatten(p).items()} for p in points]
    _check_axis_keys(list(axes) + [k for p in points for k in p], where)
    return Block(methods=None if methods == "all" else list(methods), protocols=list(protocols), seeds=list(seeds),
                 split=split, preset=preset, axes=axes, points=points)


# -- expansion --------------------------------------------------------------------------------------
def expand(blocks: list[Block], options: RunOptions) -> tuple[list[Job], list[str]]:
    """The jobs of a sweep (one per distinct run directory, in order) and notes on method x protocol
    pairs left out because the method does not support the protocol."""
    from clavs.cli import parse_run_argv, run_config
    from clavs.methods import available_methods, get_method_class

    jobs: dict[Path, Job] = {}
    notes: list[str] = []
    used: set[str] = set()
    method_keys = {k for b in blocks for k in list(b.axes) + [k for p in b.points for k in p] if k.startswith("method.")}
    for block in blocks:
        for method in block.methods or available_methods():
            cls = get_method_class(method)  # an unknown name: the message lists the available ones
            hparams = set(cls.default_hparams({}))
            for protocol in block.protocols:
                try:
                    cls.check_protocol(protocol)  # not supported, or declined with a reason
                except ValueError as e:
                    notes.append(str(e))
                    continue
                for point in _points(block, hparams):
                    used.update(k for k, _ in point)
                    for seed in block.seeds:
                        argv = _argv(block, options, cls.name, protocol, seed, point)
                        config = run_config(parse_run_argv(argv))
                        run_dir = Path(os.path.abspath(run_dir_for(config, config["runs_dir"])))
                        jobs.setdefault(run_dir, Job(label="", method=cls.name, protocol=protocol, seed=seed,
                                                     point=point, argv=tuple(argv), run_dir=run_dir, config=config))
    unused = sorted(method_keys - used)
    if unused:
        raise ConfigError(f"{', '.join(unused)}: no method of this sweep has this hyperparameter")
    varying = varying_keys([j.point for j in jobs.values()])
    return [replace(j, label=" ".join([j.method, j.protocol, f"seed{j.seed}",
                                       *(f"{k}={v}" for k, v in j.point if k in varying)]))
            for j in jobs.values()], list(dict.fromkeys(notes))


def varying_keys(points: list[tuple[tuple[str, str], ...]]) -> set[str]:
    """The grid keys whose value (or absence) is not the same in all these points: what tells them apart."""
    keys = {k for p in points for k, _ in p}
    return {k for k in keys if len({dict(p).get(k) for p in points}) > 1}


def _points(block: Block, hparams: set[str]) -> list[tuple[tuple[str, str], ...]]:
    """The grid points of a block for one method: axes x points, keys the method lacks dropped."""
    def keep(key: str) -> bool:
        return not key.startswith("method.") or key.split(".", 1)[1] in hparams

    axes = [[(k, v) for v in values] for k, values in block.axes.items() if keep(k)]
    out = []
    for explicit in block.points:
        for combo in itertools.product(*axes):
            values = {**{k: v for k, v in explicit.items() if keep(k)}, **dict(combo)}
            out.append(tuple(values.items()))
    return list(dict.fromkeys(out))


def _argv(block: Block, options: RunOptions, method: str, protocol: str, seed: int,
          point: tuple[tuple[str, str], ...]) -> list[str]:
    argv = ["--no-progress", "--preset", block.preset, "--method", method, "--protocol", protocol, "--seed", str(seed)]
    config_file = options.config
    if options.selected:
        chosen = Path(options.selected) / f"{method}.{protocol}.yaml"
        config_file = str(chosen.resolve()) if chosen.is_file() else None
    for flag, value in (("--split", block.split),
                        ("--runs-dir", os.path.abspath(options.runs_dir) if options.runs_dir else None),
                        ("--data-root", options.data_root), ("--epochs", options.epochs),
                        ("--devices", options.devices), ("--accelerator", options.accelerator),
                        ("--config", os.path.abspath(config_file) if config_file else None)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + [f"{k}={v}" for k, v in point]


def blocks_from_options(*, grid: str | None, methods: str | None, protocols: str | None, seeds: str | None,
                        preset: str | None, split: str | None, overrides: list[str]) -> tuple[list[Block], str]:
    """The blocks of `clavs sweep`/`clavs select`: a grid file's, narrowed by --methods and
    --protocols, with --seeds, --preset and --split replacing the file's and key=v1,v2 axes added to
    every block (replacing the file's values of that key); or the command line's one block."""
    from clavs.methods import available_methods

    axes = parse_axes(overrides)
    _check_axis_keys(list(axes), "key=value")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset {preset}: not one of {', '.join(PRESETS)}")
    wanted_protocols = split_values(protocols) if protocols else None
    if wanted_protocols and not set(wanted_protocols) <= set(PROTOCOLS):
        raise ConfigError(f"--protocols {protocols}: not a list of {', '.join(PROTOCOLS)}")
    wanted_methods = None if methods in (None, "all") else split_values(methods)
    if grid is None:
        if methods is None:
            raise ConfigError("give --methods (e.g. atlas,finetune, or all) or --grid NAME|FILE "
                              f"(shipped: {', '.join(shipped_grids())})")
        blocks, description = [Block(methods=wanted_methods, protocols=wanted_protocols or ["cil"],
                                     seeds=[0])], "command line"
    else:
        blocks, description = load_grid(grid)
        for b in blocks:
            if wanted_methods is not None:
                b.methods = [m for m in (b.methods or available_methods()) if m in wanted_methods]
            if wanted_protocols is not None:
                b.protocols = [p for p in b.protocols if p in wanted_protocols]
        blocks = [b for b in blocks if b.protocols and (b.methods is None or b.methods)]
        if not blocks:
            raise ConfigError(f"--grid {grid}: no job left after --methods {methods} --protocols {protocols}")
    for b in blocks:
        b.seeds = parse_seeds(seeds) if seeds else b.seeds
        b.preset = preset or b.preset
        b.split = split or b.split
        b.axes.update(axes)
        b.points = [{k: v for k, v in p.items() if k not in axes} for p in b.points]
    return blocks, description
