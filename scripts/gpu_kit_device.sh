#!/usr/bin/env bash
# Runs this project through Ray on a GPU node that has PyTorch but no Ray and no network, from the repository
# root, with the kit built by `python scripts/gpu_kit.py build` copied beside it (docs/gpu.md):
#   bash scripts/gpu_kit_device.sh
# Everything lands under $OUT (one log and JSON per step); a step that fails is logged and the next one runs.
# Each step has its own timeout (seconds below); the whole run takes under 9 minutes.
set -uo pipefail
OUT=${OUT:-gpu_out}
SITE=${KIT_SITE:-/tmp/ray_sbir_kit}
mkdir -p "$OUT"
t_start=$(date +%s)

note() { echo "[kit $(( $(date +%s) - t_start ))s] $*" | tee -a "$OUT/steps.log"; }
step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  note "$name: start ($limit s at most)"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  note "$name: exit $rc"
  tail -n 25 "$OUT/$name.log"
}

note "installing the kit into $SITE (--no-index --no-deps)"
python3 -c "import sys; sys.path.insert(0, 'scripts'); import gpu_kit, pathlib; gpu_kit.install(pathlib.Path('gpu_kit'), pathlib.Path('$SITE'))" \
  > "$OUT/install.log" 2>&1 || { note "install failed"; tail -n 40 "$OUT/install.log"; exit 1; }
export PYTHONPATH="$SITE:$PWD"
unset RAY_ADDRESS
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" 2>&1
python3 -c "import torch, ray; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ray', ray.__version__)" \
  | tee -a "$OUT/steps.log"

# 0) the smoke run: Ray task, Ray Data, the tiny demo through Ray Train, /search over HTTP (CPU model)
step smoke 150 python3 scripts/gpu_kit_smoke.py --work /tmp/kit_smoke
# a) GPU search: ExactShard strategies vs torch.mm + topk vs copy bandwidth; Hamming on CUDA
step gpu_search 90 python3 bench/bench_gpu_search.py --device cuda --json "$OUT/gpu_search.json"
step hamming_cuda 60 python3 bench/bench_hamming.py --device cuda --json "$OUT/hamming_cuda.json"
# b) the CUDA tests (they skip without a GPU elsewhere)
step cuda_tests 90 python3 -m pytest -q -p no:cacheprovider tests/search -k cuda
# c) Ray Train on the GPU, Ray Data decoding on the machine's cores: triplets/s of the training loop
step train_gpu 120 python3 bench/bench_train_loop.py --set train.use_gpu=true --set train.amp=true \
  --num-cpus 16 --json "$OUT/train_gpu.json"
# e) QuickDraw indexing through Ray Data with the encoder on the GPU (drawings/s per GPU)
step quickdraw_gpu 120 python3 bench/bench_quickdraw_scale.py --use-gpu --cpus 16 --drawings 200000 \
  --data /tmp/qd/data --out /tmp/qd/index --clean --json "$OUT/quickdraw_gpu.json"
note "done"
