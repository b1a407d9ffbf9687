"""Where clavs keeps its caches (SynthAVS trees, decoded clips, audio embeddings, pretrained encoders)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_home() -> Path:
    """$CLAVS_HOME, else $XDG_CACHE_HOME/clavs, else ~/.cache/clavs."""
    if os.environ.get("CLAVS_HOME"):
        return Path(os.environ["CLAVS_HOME"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clavs"
