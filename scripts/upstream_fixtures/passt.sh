#!/usr/bin/env bash
# Regenerate tests/fixtures/passt_upstream.safetensors from the OFFICIAL PaSST code (PyPI hear21passt,
# source github.com/kkoutini/passt_hear21). hear21passt goes into a target folder of the throw-away venv
# of env.sh (nothing of it is committed or vendored); the generator imports it from there.
#   bash scripts/upstream_fixtures/passt.sh [--out PATH]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/env.sh"
HEAR21PASST="${HEAR21PASST:-hear21passt==0.0.26}"
PASST_TARGET="$UPSTREAM_VENV/extra-passt"
if ! PYTHONPATH="$PASST_TARGET" "$UPSTREAM_PY" -c "import hear21passt, sys; sys.exit(hear21passt.__version__ != '${HEAR21PASST##*==}')" 2>/dev/null; then
  # --no-deps: its dependencies (timm, torchaudio) are already in the venv, pinned by env.sh
  "$UPSTREAM_PY" -m pip install -q --no-deps --upgrade --target "$PASST_TARGET" "$HEAR21PASST"
fi
cd "$HERE/../.."
PYTHONPATH="$PASST_TARGET${PYTHONPATH:+:$PYTHONPATH}" "$UPSTREAM_PY" "$HERE/passt_fixture.py" "$@"
