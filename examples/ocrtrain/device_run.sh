#!/usr/bin/env bash
# One device call of the demo model's training (see README.md): train for MINUTES on every GPU of the machine,
# resuming from /tmp/ocrtrain/state.pt when the machine is still warm from the last call, else from the bundle
# carried in .ckpt/ (weights + trainer.json + probe_heads.pt), else from the bundled examples/model/ (weights +
# trainer.json); write the bf16 bundle and the log to $OUT; evaluate EVAL pages.
#   bash examples/ocrtrain/device_run.sh MINUTES TOTAL_MINUTES EVAL_PAGES
# TRAIN_ARGS adds train.py options (e.g. "--bag-probe 0.1").
set -euo pipefail
MIN=${1:-8}; TOTAL=${2:-16}; EVAL=${3:-0}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
NGPU=$(python3 -c 'import torch; print(torch.cuda.device_count())')
INIT=()
if [ ! -f /tmp/ocrtrain/state.pt ]; then
  if [ -f .ckpt/config.json ]; then INIT=(--init .ckpt)
  elif [ -f examples/model/trainer.json ]; then INIT=(--init examples/model); fi  # the bundled model
fi
echo "gpus $NGPU cpus $(nproc) resume ${INIT[*]:-state-or-scratch}"
torchrun --nproc-per-node "$NGPU" examples/ocrtrain/train.py --state /tmp/ocrtrain/state.pt "${INIT[@]}" \
  --bundle "$OUT/model" --no-tok-copy --logfile "$OUT/train.log" --minutes "$MIN" --total-minutes "$TOTAL" \
  --workers $(( $(nproc) / NGPU - 1 )) --bs-scale 1 --lr 1e-3 --eval-every 0 ${TRAIN_ARGS:-} --final-eval-pages "$EVAL" --final-eval-modes ${EVAL_MODES:-base gundam} \
  2>&1 | grep -v -i -E 'warn|Writing model shards'
