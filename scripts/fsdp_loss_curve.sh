#!/usr/bin/env bash
# One GPU against FSDP2 on N GPUs: the same data, seed and steps, global batch 32 in both; prints the
# loss curves side by side in 50-step windows. Needs N >= 2 CUDA devices.
#
#   NGPU=2 STEPS=400 bash scripts/fsdp_loss_curve.sh [WORK_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-${ROOT}/build/fsdp}"
PYTHON="${PYTHON:-python}"
NGPU="${NGPU:-2}"
STEPS="${STEPS:-400}"
cd "${ROOT}"
mkdir -p "${WORK}"
if [ ! -f "${WORK}/data/train.jsonl" ]; then
  "${PYTHON}" -m omni.synthetic "${WORK}/data" --n-per-task 3000 --seed 1 --split train \
    --tasks shapes-count,shape-color,read-number --document-format png --workers "$(nproc)"
fi
ARGS=(finetune --data "${WORK}/data/train.jsonl" --init-config bundled-small --mode full --steps "${STEPS}"
      --lr 2e-4 --warmup-steps 40 --seed 0 --num-workers 6 --no-progress)
"${PYTHON}" -m omni "${ARGS[@]}" --batch-size 32 --output "${WORK}/one" > "${WORK}/one.log"
"${PYTHON}" -m torch.distributed.run --standalone --nproc_per_node "${NGPU}" -m omni "${ARGS[@]}" \
  --batch-size $((32 / NGPU)) --output "${WORK}/many" > "${WORK}/many.log"
"${PYTHON}" - "${WORK}/one.log" "${WORK}/many.log" <<'PY'
import re
import statistics
import sys

def losses(path):
    return {int(s): float(v) for s, v in re.findall(r"step (\d+)/\d+ loss ([0-9.]+)", open(path).read())}

one, many = losses(sys.argv[1]), losses(sys.argv[2])
steps = sorted(set(one) & set(many))
print("steps        1 GPU  N GPUs    diff")
for start in range(0, steps[-1], 50):
    window = [s for s in steps if start < s <= start + 50]
    a, b = statistics.mean(one[s] for s in window), statistics.mean(many[s] for s in window)
    print(f"{start + 1:4d}-{start + 50:4d}  {a:7.4f} {b:7.4f} {b - a:+.4f}")
print(f"mean |diff| {statistics.mean(abs(many[s] - one[s]) for s in steps):.4f}")
PY
