#!/usr/bin/env bash
# Regenerate tests/fixtures/mn_upstream.safetensors from the OFFICIAL EfficientAT code
# (github fschmid56/EfficientAT: models/mn/model.py get_model, models/preprocess.py AugmentMelSTFT).
#   bash scripts/upstream_fixtures/mn.sh                       # clones EfficientAT (needs network)
#   EFFICIENTAT_SRC=/path/to/EfficientAT bash scripts/upstream_fixtures/mn.sh   # an existing checkout
# EfficientAT is not a package: its checkout goes on PYTHONPATH only for this run and is never
# vendored or committed. The official code needs torch + torchvision + torchaudio (env.sh's venv).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"

OUT="${MN_FIXTURE_OUT:-$ROOT/tests/fixtures/mn_upstream.safetensors}"
if [ -n "${EFFICIENTAT_SRC:-}" ]; then
  SRC="$(cd "$EFFICIENTAT_SRC" && pwd)"
else
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  git clone -q --depth 1 https://github.com/fschmid56/EfficientAT "$TMP/EfficientAT"
  SRC="$TMP/EfficientAT"
fi
for f in models/mn/model.py models/mn/block_types.py models/preprocess.py helpers/utils.py; do
  [ -f "$SRC/$f" ] || { echo "mn.sh: $SRC is not an EfficientAT checkout (no $f)" >&2; exit 1; }
done
# the checkout's commit (only when SRC is itself the top of a git work tree), else EFFICIENTAT_COMMIT
COMMIT="unknown"
if [ "$(git -C "$SRC" rev-parse --show-toplevel 2>/dev/null || true)" = "$SRC" ]; then
  COMMIT="$(git -C "$SRC" rev-parse HEAD)"
fi
COMMIT="${EFFICIENTAT_COMMIT:-$COMMIT}"

# Extra packages, should the official imports ever need any, live beside the shared venv, not in it.
EXTRA="$UPSTREAM_VENV/extra-mn"
# helpers/utils.py reads metadata/class_labels_indices.csv relative to the working directory
cd "$SRC"
PYTHONPATH="$SRC${EXTRA:+:$EXTRA}${PYTHONPATH:+:$PYTHONPATH}" \
  "$UPSTREAM_PY" "$HERE/mn_fixture.py" --out "$OUT" --upstream-commit "$COMMIT"
