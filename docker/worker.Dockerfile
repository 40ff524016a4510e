# syntax=docker/dockerfile:1
# The imagegen GPU worker: CUDA build of torch + diffusers, one process per GPU. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t imagegen-worker .
# CPU-only image (e.g. for the compose `cpu` profile and the `demo` model):
#   docker build -f docker/worker.Dockerfile --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#
# Base: NVIDIA's CUDA `base` flavour. PyTorch's CUDA wheels carry their own CUDA runtime, cuBLAS and cuDNN as pip
# packages (nvidia-*-cu12), so the `runtime`/`cudnn-runtime` flavours would only ship a second copy of them; `base`
# adds what the NVIDIA container runtime needs (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES,
# NVIDIA_REQUIRE_CUDA, cuda-compat). Keep CUDA_IMAGE's CUDA version and TORCH_INDEX_URL's cuXYZ in step; the host needs
# an NVIDIA driver new enough for that CUDA 12.x (or a datacenter driver covered by cuda-compat).
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-base-ubuntu24.04

FROM ${CUDA_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG TORCH_SPEC="torch>=2.4,<3"
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from PyTorch's CUDA index; `.[worker]` then finds torch>=2.4,<3 satisfied and keeps this build.
# hadolint ignore=DL3013
RUN pip install --upgrade pip setuptools wheel \
 && pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY service ./service
COPY client ./client
COPY launcher ./launcher
COPY worker ./worker
# Versions come from pyproject.toml's ranges (a lock file would pin them).
# hadolint ignore=DL3013
RUN pip install ".[worker]" \
 && python -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

FROM ${CUDA_IMAGE}
LABEL org.opencontainers.image.title="imagegen-worker" \
      org.opencontainers.image.description="imagegen GPU worker (Stable Diffusion through diffusers)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/*
# Ubuntu 24.04 images ship a user `ubuntu` with uid 1000; replace it with ours so uid 1000 is `imagegen`.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
 && groupadd --gid 1000 imagegen \
 && useradd --uid 1000 --gid imagegen --create-home --home-dir /home/imagegen --shell /usr/sbin/nologin imagegen \
 && mkdir -p /models/hf \
 && chown -R imagegen:imagegen /models
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/models/hf \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    IMAGEGEN_METRICS_HOST=0.0.0.0
# Hugging Face downloads land here: mount a named volume / PVC so restarts do not download the model again.
VOLUME ["/models/hf"]
USER 1000:1000
WORKDIR /home/imagegen
# /metrics, /healthz (alive) and /readyz (model loaded and warmed up) on IMAGEGEN_METRICS_PORT, bound to every
# interface of the container (IMAGEGEN_METRICS_HOST above; outside a container the default is loopback).
EXPOSE 9101
# The first start may download several GB: failures in the start period do not count.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9101/readyz', timeout=4).status != 200)"]
# Exec form: the worker is PID 1 and gets SIGTERM itself; it finishes the job in hand and exits 0, so give it a stop
# timeout above IMAGEGEN_JOB_TIMEOUT_SECONDS (compose stop_grace_period, Kubernetes terminationGracePeriodSeconds).
ENTRYPOINT ["imagegen", "worker"]
