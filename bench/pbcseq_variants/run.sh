#!/usr/bin/env bash
# Train the pbcseq recipe variants (bench/results/pbcseq_variants.md), one thread each, and print each
# one's best validation epoch, NMSE and 80% coverage. Usage: bench/pbcseq_variants/run.sh A B C ...
set -euo pipefail
here=$(dirname "$0")
for c in "$@"; do
  OMP_NUM_THREADS=1 latentcast train --data pbcseq --config "$here/$c.toml" --out "runs/pbcseq_variants/$c" --quiet
  python -c "import json; b=json.load(open('runs/pbcseq_variants/$c/metrics.json'))['best']; \
print('$c', b['epoch'], round(b['val_nmse'], 4), round(b['val_coverage80'], 3))"
done
