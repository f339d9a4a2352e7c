#!/usr/bin/env bash
# The GPU check: one prepared run (under 10 minutes on one GPU) of
#   1. the test suite's GPU-marked tests (pytest -m gpu),
#   2. the tiny pipeline end to end on CUDA (synth -> stage 1 -> teachers -> stage 2 -> evaluate),
#   3. samples/s and peak GPU memory of stage 1 and stage 2 for the paper's PaSST + RoBERTa-large
#      config, random weights, batch 64 (scripts/gpu_throughput.py).
# Without a GPU it runs its CPU part (the same steps at test size on the CPU) so it stays working.
#   bash scripts/gpu_check.sh            (after `make install`; uses .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
SS="$PY -m soundsift.cli.main"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  GPU=1; ACC=gpu; echo "GPU: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')"
else
  GPU=0; ACC=cpu; echo "no GPU: running the CPU part"
fi
START=$(date +%s)

echo "== 1. GPU-marked tests"
"$PY" -m pytest -q -m gpu tests -p no:cacheprovider || [ "$GPU" = 0 ]

echo "== 2. tiny pipeline end to end ($ACC)"
TINY=("model.audio_encoder={name: cnn, size: tiny}" "model.text_encoder={name: tiny-bert}" "model.embed_dim=16"
      "optim.epochs=2" "optim.batch_size=16" "trainer.accelerator=$ACC" "trainer.progress_bar=false")
$SS -q synth --preset tiny --out "$WORK/data"
$SS -q train --config demo/stage1.yaml "data.root=$WORK/data" "out_dir=$WORK/s1" "${TINY[@]}" > /dev/null
$SS -q teachers --model "$WORK/s1/model.pt" --data-root "$WORK/data" --out "$WORK/t.safetensors"
$SS -q train --config demo/stage2.yaml "data.root=$WORK/data" "out_dir=$WORK/s2" "init_from=$WORK/s1/model.pt" \
    "teachers=[$WORK/t.safetensors]" "${TINY[@]}" > /dev/null
$SS -q evaluate --model "$WORK/s2/model.pt" --data-root "$WORK/data" | "$PY" -c \
    "import json, sys; r = json.load(sys.stdin)['text_to_audio']; print('  stage 2 test mAP@10 %.4f' % r['mAP@10'])"

echo "== 3. paper config throughput"
if [ "$GPU" = 1 ]; then
  "$PY" scripts/gpu_throughput.py --config paper/table1-passt-stage1.yaml --batch 64 --steps 10
else
  "$PY" scripts/gpu_throughput.py --tiny --steps 4
fi
echo "gpu_check: done in $(( $(date +%s) - START )) s"
