"""Declare a checkpoint's physical bounds and missing-value markers from a shipped recipe, weights
untouched (its version, a digest of the weights, stays the same). For models trained before the
recipe declared them; training on the recipe declares them itself. A checkpoint that did not record
which statistics normalise it gets the recipe's (`data.normalize`), so messages name its scale.
`--time TEXT` rewrites what its training data's times are (shown by GET /models).

    python scripts/declare_validity.py models/embedded/pbcseq.pt --recipe pbcseq \
        --time "days since first visit (model time: years)"
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from latentcast.models.checkpoint import load_checkpoint, save_checkpoint
from latentcast.models.training import build_experiment
from latentcast.models.validity import Validity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--recipe", required=True, help="a shipped recipe: models/training/configs/NAME.toml")
    ap.add_argument("--time", help="what the training data's times are, e.g. 'days since first visit'")
    args = ap.parse_args()
    data = build_experiment(args.recipe).data
    bundle = load_checkpoint(args.checkpoint)
    validity = Validity.from_config(data.bounds, data.missing_values, bundle.channels, data.bounds_source)
    before = bundle.version
    norm = bundle.normalizer
    if not norm.method:
        norm = dataclasses.replace(norm, method=data.normalize)
    described = {**bundle.data, "time": args.time} if args.time else bundle.data
    save_checkpoint(args.checkpoint, dataclasses.replace(bundle, validity=validity, normalizer=norm, data=described))
    after = load_checkpoint(args.checkpoint)
    assert after.version == before, "the weights changed"
    sys.stdout.write(f"{args.checkpoint}: version {after.version}, {validity.describe()}\n")


if __name__ == "__main__":
    main()
