#!/usr/bin/env bash
# Create (or reuse) the virtual environment of clavs and link it as ./.venv.
# The environment lives outside the clone, keyed by a hash of the dependency files, so a second
# clone or a CI run reuses it; a machine without it builds it from scratch (a few minutes).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
key="$(cat pyproject.toml install.sh | sha1sum | cut -c1-12)"
venv="${CLAVS_VENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/clavs-venvs}/$key"
if [ ! -f "$venv/.complete" ]; then
  echo "install.sh: building the environment in $venv"
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip setuptools wheel
  # torch first, pinned to the builds this project is tested with (see README)
  "$venv/bin/pip" install -q "torch==2.14.1" "torchvision==0.29.1"
  "$venv/bin/pip" install -q -e ".[test]"
  touch "$venv/.complete"
fi
# Point the (possibly shared) environment at this clone's sources.
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e . >/dev/null
ln -sfn "$venv" .venv
echo "install.sh: environment ready (.venv -> $venv)"
