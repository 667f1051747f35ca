# syntax=docker/dockerfile:1.7
#
# rlhf-triton: NVIDIA Triton Inference Server with what the platform's Python-backend
# model needs. Every served version's model.py is a copy of rlhf.serving.backend, which
# imports numpy, torch and transformers; the NGC image has numpy and no torch or
# transformers, so a version fails to load on the stock image.
#
# Build from the repository root (the context needs src/rlhf/serving/backend.py):
#   docker build -f services/triton.Dockerfile -t ghcr.io/rlhf-platform/rlhf-triton:0.1.0 .
# The chart's triton.image points here. Triton's Python backend runs the base image's
# system python3, so the packages go there. The torch and transformers versions are the
# ones the test suite runs backend.py with (tests/serving). PyPI's Linux torch wheel
# brings its CUDA libraries (torch 2.15: CUDA 13, so an R580 or newer driver on GPU
# nodes); for nodes with an older driver (Triton 25.01 itself needs R570), pass the
# PyTorch wheel index for CUDA 12.8 as TORCH_INDEX_URL. On CPU either works.
# The base is pinned by version; pin it by digest too in your registry mirror.

ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3

FROM ${TRITON_IMAGE} AS runtime
ARG TORCH_VERSION=2.15.0
ARG TRANSFORMERS_VERSION=5.24.0
ARG TORCH_INDEX_URL=""
LABEL org.opencontainers.image.title="rlhf-triton" \
      org.opencontainers.image.description="Triton Inference Server with the RLHF platform's Python-backend dependencies (HTTP :8000, gRPC :8001, metrics :8002)" \
      org.opencontainers.image.source="https://github.com/rlhf-platform/rlhf-platform" \
      org.opencontainers.image.licenses="Apache-2.0"
# The base image's Python is system-managed (PEP 668): the packages are the image's own.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m pip install ${TORCH_INDEX_URL:+--index-url "${TORCH_INDEX_URL}"} \
      "torch==${TORCH_VERSION}" \
 && python3 -m pip install "transformers==${TRANSFORMERS_VERSION}"
# The backend is imported as Triton imports it (triton_python_backend_utils is Triton's
# own and optional at import time), so a missing dependency fails the build, not a load.
COPY src/rlhf/serving/backend.py /opt/rlhf/check/model.py
RUN cd /opt/rlhf/check && python3 -c "import model" && rm -rf /opt/rlhf/check
# Hugging Face and torch caches on the chart's writable emptyDir (/tmp).
ENV HOME=/tmp \
    HF_HOME=/tmp/huggingface \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor
# triton-server, the NGC image's user (the chart's triton.runAsUser).
USER 1000:1000
EXPOSE 8000 8001 8002
