import os

# Tests never touch the network: any hub lookup must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest


@pytest.fixture(scope="module")
def clavs_home(tmp_path_factory):
    """CLAVS_HOME pointed at a fresh folder for one test module (SynthAVS and caches built there)."""
    home = tmp_path_factory.mktemp("clavs_home")
    old = os.environ.get("CLAVS_HOME")
    os.environ["CLAVS_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("CLAVS_HOME", None)
    else:
        os.environ["CLAVS_HOME"] = old


@pytest.fixture(scope="module")
def smoke_run(clavs_home, tmp_path_factory):
    """run(method, protocol, *overrides) -> run directory of a SynthAVS `smoke` run (random tiny encoders,
    the protocol's small split: method_helpers.SMOKE_FAST, SMOKE_SPLIT); each distinct run is trained
    once per module, in the module's fresh CLAVS_HOME (clavs_home)."""
    from method_helpers import SMOKE_FAST, SMOKE_SPLIT

    from clavs.config import resolve_config
    from clavs.engine.runner import run_experiment

    done: dict[tuple, object] = {}
    root = tmp_path_factory.mktemp("method_runs")

    def run(method: str, protocol: str, *overrides: str, runs_dir=None):
        key = (method, protocol, overrides, str(runs_dir))
        if key not in done:
            config = resolve_config(preset="smoke", method=method,
                                    options={"runs_dir": str(runs_dir or root / f"r{len(done)}"), "progress": False,
                                             "protocol.name": protocol},
                                    overrides=[*SMOKE_FAST, *SMOKE_SPLIT[protocol], *overrides])
            done[key] = run_experiment(config)
        return done[key]

    return run
