#!/usr/bin/env bash
# Regenerates models/training/datasets/data/pbcseq.csv.gz from R's `survival` package (data set `pbcseq`).
# Needs Rscript with the survival package: on Debian/Ubuntu `apt-get install r-base-core r-cran-survival`.
# The output is deterministic (gzip -n: no name or timestamp), so a re-run reproduces the same bytes
# for the same survival version; the version used is recorded in the data set's PROVENANCE.md.
set -euo pipefail
out="$(dirname "$0")/../models/training/datasets/data/pbcseq.csv.gz"
Rscript --vanilla -e '
  suppressMessages(library(survival))
  d <- survival::pbcseq
  stopifnot(nrow(d) == 1945, length(unique(d$id)) == 312)
  write.csv(d, stdout(), row.names = FALSE, na = "")
  message("survival ", as.character(packageVersion("survival")))
' | gzip -9 -n > "$out"
echo "wrote $out ($(stat -c %s "$out") bytes)"
