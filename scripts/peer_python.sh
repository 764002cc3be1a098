#!/usr/bin/env bash
# Prints the path of a Python that has a current PyTorch, Hugging Face
# transformers and safetensors from PyPI (the peers and oracles that Debian's
# torch 1.13 is too old for), making it first if need be:
#   - $MOE_PEER_PYTHON when set (it must import all three);
#   - else a virtual environment in ${MOE_PEER_VENV:-~/.cache/moe-peer-venv},
#     created and filled by pip on first use (about 6 GB: PyPI's torch wheel
#     brings its CUDA libraries) and reused after.
# Progress goes to stderr; exit 1 with one line saying why when no such
# Python can be had.
set -euo pipefail
modules="import torch, transformers, safetensors, numpy"

if [ -n "${MOE_PEER_PYTHON:-}" ]; then
  if ! "$MOE_PEER_PYTHON" -c "$modules" 2>/dev/null; then
    echo "peer_python: MOE_PEER_PYTHON=$MOE_PEER_PYTHON cannot import torch, transformers, safetensors and numpy" >&2
    exit 1
  fi
  echo "$MOE_PEER_PYTHON"
  exit 0
fi

venv="${MOE_PEER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/moe-peer-venv}"
python="$venv/bin/python"
if [ -x "$python" ] && "$python" -c "$modules" 2>/dev/null; then
  echo "$python"
  exit 0
fi
echo "peer_python: installing torch, transformers, safetensors and numpy from PyPI into $venv" >&2
rm -rf "$venv"
if ! { python3 -m venv "$venv" && "$python" -m pip install -q --disable-pip-version-check \
  torch transformers safetensors numpy; } >&2; then
  echo "peer_python: could not install the peer packages into $venv (see pip's output above)" >&2
  exit 1
fi
"$python" -c "$modules"
echo "$python"
