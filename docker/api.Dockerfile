# syntax=docker/dockerfile:1
# The imagegen API: FastAPI + uvicorn, no torch. Build from the repository root:
#   docker build -f docker/api.Dockerfile -t imagegen-api .
# `pip install .` installs the base dependencies only; torch and diffusers come with the `worker` extra,
# which this image never installs (the API does not import the worker package).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core
COPY service ./service
COPY client ./client
COPY launcher ./launcher
COPY worker ./worker
# hadolint ignore=DL3013
RUN pip install --upgrade pip setuptools wheel \
 && pip install . \
 && python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="imagegen-api" \
      org.opencontainers.image.description="imagegen REST API (queues Stable Diffusion jobs in Redis)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 imagegen \
 && useradd --system --uid 10001 --gid imagegen --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin imagegen
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8000
# slim has no curl: probe with the image's own Python. /healthz is liveness; Redis trouble shows on /readyz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
# Exec form: uvicorn is PID 1 and receives SIGTERM directly.
ENTRYPOINT ["imagegen", "api"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
