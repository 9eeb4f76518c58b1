# syntax=docker/dockerfile:1
# latentcast serving image: `latentcast serve` (one uvicorn process) with the embedded default models.
#
# Build arguments:
#   BASE_IMAGE     a Debian-family image with Python >= 3.11 and `python3 -m venv`, used by both stages
#                  (default python:3.11-slim-bookworm; deploy/README.md builds one with debootstrap).
#   TORCH_VARIANT  cuda (default): torch from PyPI, whose Linux wheels bring the CUDA runtime, cuDNN and
#                  NCCL as nvidia-* wheels (the host needs only the NVIDIA driver and container toolkit);
#                  cpu: torch's CPU build from TORCH_CPU_INDEX, about 1/10 of the size, for CPU-only hosts.
#   TORCH_VERSION  the torch release (default 2.13.0).
# Optional build-context inputs (empty in git): deploy/wheels/*.whl are preferred over any index (offline
# builds), and deploy/certs/*.crt is used as pip's CA bundle when the index sits behind a TLS proxy.
#
# Why a slim Python base and not nvidia/cuda:*-runtime: the torch wheels already carry their CUDA
# libraries, so a CUDA runtime base would ship a second copy (~3 GB more) for nothing.
#
#   docker build -t latentcast:cuda .
#   docker build -t latentcast:cpu --build-arg TORCH_VARIANT=cpu .
#   docker run --gpus all -p 8000:8000 latentcast:cuda

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG TORCH_VARIANT=cuda
ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# the package's extras: serve (the HTTP API); serve,ray for the batch image a KubeRay RayJob runs
ARG EXTRAS=serve
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
COPY deploy/wheels/ /tmp/wheels/
COPY deploy/certs/ /tmp/certs/
RUN python3 -m venv /opt/latentcast
RUN set -eu; \
    cert=$(ls /tmp/certs/*.crt 2>/dev/null | head -n1 || true); \
    if [ -n "$cert" ]; then export PIP_CERT="$cert"; fi; \
    case "$TORCH_VARIANT" in \
      cuda) rm -f /tmp/wheels/torch-*+cpu*.whl; \
            /opt/latentcast/bin/pip install --find-links /tmp/wheels "torch==${TORCH_VERSION}" ;; \
      cpu)  /opt/latentcast/bin/pip install --find-links /tmp/wheels --extra-index-url "$TORCH_CPU_INDEX" \
              "torch==${TORCH_VERSION}+cpu" ;; \
      *) echo "TORCH_VARIANT must be cuda or cpu, got '$TORCH_VARIANT'" >&2; exit 2 ;; \
    esac
COPY pyproject.toml README.md /src/
COPY latentcast/ /src/latentcast/
COPY models/ /src/models/
COPY service/ /src/service/
RUN set -eu; \
    cert=$(ls /tmp/certs/*.crt 2>/dev/null | head -n1 || true); \
    if [ -n "$cert" ]; then export PIP_CERT="$cert"; fi; \
    /opt/latentcast/bin/pip install --find-links /tmp/wheels "/src[${EXTRAS}]" \
    && /opt/latentcast/bin/python -c "import latentcast.service, torch; print('torch', torch.__version__)"

FROM ${BASE_IMAGE} AS runtime
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/latentcast latentcast
COPY --from=build /opt/latentcast /opt/latentcast
# Every LATENTCAST_* setting can be set at `docker run -e` time (README "Settings"); these are defaults.
ENV PATH=/opt/latentcast/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    LATENTCAST_HOST=0.0.0.0 \
    LATENTCAST_PORT=8000 \
    LATENTCAST_DEVICE=auto
USER 10001:10001
WORKDIR /home/latentcast
EXPOSE 8000
# /readyz turns 200 once the models are loaded and warmed up (CUDA graphs captured on a GPU): the start
# period covers that.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request as u; p = os.environ.get('LATENTCAST_PORT', '8000'); sys.exit(0 if u.urlopen(f'http://127.0.0.1:{p}/readyz', timeout=4).status == 200 else 1)"]
CMD ["latentcast", "serve"]
