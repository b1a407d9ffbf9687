import os

# Tests never touch the network: any hub lookup must fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest


@pytest.fixture(scope="session")
def smoke_synthavs(tmp_path_factory):
    """SynthAVS `smoke` (seed 0), built once per test session (a build is deterministic, so every
    module would build the same bytes); clavs_home copies it into each module's fresh cache."""
    from clavs.data.synth import generate

    return generate(tmp_path_factory.mktemp("synthavs_once") / "synthavs-smoke-seed0", preset="smoke", seed=0,
                    progress=False)


@pytest.fixture(scope="module")
def clavs_home(tmp_path_factory, smoke_synthavs):
    """CLAVS_HOME pointed at a fresh folder for one test module (caches built there), holding a copy
    of the session's SynthAVS smoke build (copied with its timestamps, so it is complete as built)."""
    import shutil

    home = tmp_path_factory.mktemp("clavs_home")
    shutil.copytree(smoke_synthavs, home / "data" / smoke_synthavs.name)
    old = os.environ.get("CLAVS_HOME")
    os.environ["CLAVS_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("CLAVS_HOME", None)
    else:
        os.environ["CLAVS_HOME"] = old


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a test module, as the smoke preset's engine.threads=1: tiny networks gain
    nothing from more, and lose a lot when the cores are shared. Use with pytest.mark.usefixtures."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def smoke_run(clavs_home, tmp_path_factory):
    """run(method, protocol, *overrides, runs_dir=None) -> run directory of a smoke-preset run (random
    encoders, tests/method_helpers.py SPLIT); each distinct run is trained once per test module."""
    from method_helpers import smoke_runner

    return smoke_runner(tmp_path_factory.mktemp("method_runs"))
