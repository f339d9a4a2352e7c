#!/usr/bin/env bash
# A throw-away Python environment in which the official PaSST / EfficientAT / ATST code runs: timm,
# hear21passt and EfficientAT import torchvision, whose compiled operators do not load beside
# soundsift's torch 2.13 CPU build, so the fixtures are made here with a torch + torchvision pair that
# loads together. Nothing of this environment is committed; the fixtures it writes are data.
#   source scripts/upstream_fixtures/env.sh     -> $UPSTREAM_PY is its python
set -euo pipefail
UPSTREAM_VENV="${UPSTREAM_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.upstream-venv}"
# torch 2.9.1 is the newest release here for which torchvision and torchaudio (which the official front
# ends use for their mel filterbanks) both install and load.
UPSTREAM_TORCH="${UPSTREAM_TORCH:-torch==2.9.1 torchvision==0.24.1}"
UPSTREAM_TORCHAUDIO="${UPSTREAM_TORCHAUDIO:-torchaudio==2.9.*}"
if [ ! -x "$UPSTREAM_VENV/bin/python" ] || [ ! -f "$UPSTREAM_VENV/.ready" ]; then
  python3 -m venv "$UPSTREAM_VENV"
  "$UPSTREAM_VENV/bin/pip" install -q $UPSTREAM_TORCH
  "$UPSTREAM_VENV/bin/pip" install -q "${UPSTREAM_TORCH%% *}" "$UPSTREAM_TORCHAUDIO"
  "$UPSTREAM_VENV/bin/pip" install -q numpy safetensors soundfile "timm==0.9.*"
  "$UPSTREAM_VENV/bin/python" -c "import torch, torchaudio, torchvision; torchvision.ops.nms"
  touch "$UPSTREAM_VENV/.ready"
fi
UPSTREAM_PY="$UPSTREAM_VENV/bin/python"
export UPSTREAM_VENV UPSTREAM_PY
