#!/usr/bin/env bash
# Regenerate tests/fixtures/atst_upstream.safetensors by running the OFFICIAL ATST-Frame code
# (Audio-WestlakeU/audiossl, methods/atstframe/audio_transformer.py) in the throw-away upstream venv.
#   AUDIOSSL_SRC=/path/to/audiossl-checkout bash scripts/upstream_fixtures/atst.sh
# Without AUDIOSSL_SRC the repository is cloned (depth 1) into a temporary directory. AUDIOSSL_COMMIT
# overrides the recorded commit (for a source tree that is not a git checkout, e.g. a `git archive`).
# The official code is only imported, never copied into this repository.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
source "$HERE/env.sh"

# einops (imported by audio_transformer.py) goes into a private --target dir, not into the shared venv.
EXTRA="$UPSTREAM_VENV/extra-atst"
if ! PYTHONPATH="$EXTRA" "$UPSTREAM_PY" -c "import einops" 2>/dev/null; then
  "$UPSTREAM_VENV/bin/pip" install -q --no-deps --target "$EXTRA" "einops==0.8.*"
fi

TMP=""
cleanup() { [ -n "$TMP" ] && rm -rf "$TMP"; }
trap cleanup EXIT
if [ -z "${AUDIOSSL_SRC:-}" ]; then
  TMP="$(mktemp -d)"
  git clone -q --depth 1 https://github.com/Audio-WestlakeU/audiossl "$TMP/audiossl"
  AUDIOSSL_SRC="$TMP/audiossl"
fi
if [ -z "${AUDIOSSL_COMMIT:-}" ]; then
  AUDIOSSL_COMMIT="$(git -C "$AUDIOSSL_SRC" rev-parse HEAD 2>/dev/null || echo unknown)"
fi
export AUDIOSSL_SRC AUDIOSSL_COMMIT

cd "$ROOT"
PYTHONPATH="$EXTRA${PYTHONPATH:+:$PYTHONPATH}" "$UPSTREAM_PY" "$HERE/atst_fixture.py" \
  --audiossl "$AUDIOSSL_SRC" --commit "$AUDIOSSL_COMMIT" --out tests/fixtures/atst_upstream.safetensors
