# Two commands do all the set-up on a fresh machine:
#   make serve   install, then serve forecasts from the embedded default models
#   make test    install, then run lint, the type checker and the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# A known-good torch. On PyPI this is the CUDA build for Linux; on machines with a local CPU
# wheel of this version (our CI), pip takes that. Override with TORCH= to keep what you have.
TORCH  ?= torch==2.13.0
PHYSIONET ?= ../shared/data/physionet2012
# what each target installs: serving needs the [serve] extra ([client] for `latentcast forecast`, [plot]
# for the PNGs the README shows),
# tests need everything ([dev])
SERVE_STAMP := $(VENV)/.installed-serve
DEV_STAMP   := $(VENV)/.installed-dev

.PHONY: install test lint typecheck pytest serve embedded-models container-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(SERVE_STAMP): $(BIN)/python pyproject.toml
	$(if $(TORCH),$(BIN)/python -m pip install -q "$(TORCH)")
	$(BIN)/python -m pip install -q -e '.[serve,client,plot]'
	touch $(SERVE_STAMP)

$(DEV_STAMP): $(BIN)/python pyproject.toml
	$(if $(TORCH),$(BIN)/python -m pip install -q "$(TORCH)")
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(DEV_STAMP) $(SERVE_STAMP)

install: $(DEV_STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -q -m "not slow and not gpu"

test: lint typecheck pytest

serve: $(SERVE_STAMP)
	$(BIN)/latentcast serve

# Rebuild the default models shipped in models/embedded/ (about 2 h on 2 CPU cores): train, evaluate
# (which writes bench/results/ and an evaluated copy of each checkpoint), then copy those. PhysioNet
# 2012 needs the challenge archives (PHYSIONET, default ../shared/data/physionet2012); seed 0 ships.
embedded-models: install
	$(BIN)/python -m bench.evaluate spirals --retrain --runs runs/spirals --quiet
	$(BIN)/latentcast train --data pbcseq --out runs/pbcseq --quiet
	$(BIN)/python -m bench.evaluate pbcseq --checkpoint runs/pbcseq/best.pt
	$(BIN)/python -m bench.evaluate physionet2012 --retrain --data physionet2012:$(PHYSIONET) --quiet
	cp runs/spirals/latent_ode/best.evaluated.pt models/embedded/spirals.pt
	cp runs/pbcseq/best.evaluated.pt models/embedded/pbcseq.pt
	cp runs/physionet2012/seed0/best.pt models/embedded/physionet2012.pt

# Build the image with buildah (no Docker daemon), run it, POST a forecast, check it runs as non-root
# (root, buildah and debootstrap needed; minutes). TORCH_VARIANT=cuda for the GPU image.
container-smoke:
	TORCH_VARIANT=$${TORCH_VARIANT:-cpu} bash deploy/smoke.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
