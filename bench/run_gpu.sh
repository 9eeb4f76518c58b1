#!/usr/bin/env bash
# The GPU measurements of bench/results/*_gpu*.{md,json}, as run on the device machine (an H100/H200
# whose python3 has torch, torchdiffeq and pandas; the service's other dependencies come as wheels in
# .whl/, see README "Performance"). Writes into $OUT (default bench/results). Each part is bounded.
#   PARTS="solver profile train http" BENCH_COMMIT=$(git rev-parse --short HEAD) bash bench/run_gpu.sh
set -u
OUT=${OUT:-bench/results}
PARTS=${PARTS:-"gputest solver eager profile train http"}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, torchdiffeq; print('torch', torch.__version__, torch.cuda.get_device_name())"
for part in $PARTS; do
  echo "=== $part $(date -u +%T)"
  case $part in
    bulkprof) timeout 120 python3 -m bench.profile_bulk --device cuda --reps 5 ;;
    gputest) timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/models/test_solve_gpu.py \
               tests/models/test_forecast_gpu.py 2>&1 | tail -15 ;;
    solver) timeout 240 python3 -m bench.solver --device cuda --batches 1,64,1024,8192,65536 --reps 5 --out "$OUT" \
              > "$OUT/solver.log" 2>&1; grep -E "^(ours|C |D |B |A )|Error|error" "$OUT/solver.log" | head -30 ;;
    eager) timeout 90 python3 -m bench.solver --device cuda --batches 1,64,1024,8192,65536 --reps 5 --ours-only \
             --graphs 0 --tag _eager --out "$OUT" | tail -12 ;;
    profile) timeout 60 python3 -m bench.profile_predict --device cuda --batch 1024 --rows 12 > "$OUT/profile_gpu_1024.txt" 2>&1
             head -3 "$OUT/profile_gpu_1024.txt" ;;
    train) rm -rf /tmp/gpu_train
           timeout 150 python3 -m latentcast train --data pbcseq --out /tmp/gpu_train --device cuda --epochs 3 --quiet
           python3 - <<'PY'
import json
from latentcast.models.checkpoint import load_checkpoint
best = json.load(open("/tmp/gpu_train/metrics.json"))["best"]
print("trained on cuda: best epoch", best["epoch"], "val_nmse", round(best["val_nmse"], 3))
bundle = load_checkpoint("/tmp/gpu_train/best.pt", device="cpu")
print("checkpoint loads on CPU:", bundle.name, bundle.version)
PY
           ;;
    http) timeout 540 python3 -m bench.http --device cuda --models '["runs/bench/anchor.pt"]' --model anchor \
            --rates 10,20,50,100,200,400,800 --duration 4 --min-requests 300 --bulk-reps 5 --out "$OUT" > "$OUT/http.log" 2>&1
          tail -5 "$OUT/http.log" ;;
  esac
done
