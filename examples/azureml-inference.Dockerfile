# Azure ML inference base image: the documented starting point for a custom base image.
#
# Build it and check it in one go (build-then-test):
#   pytest --base-image-dockerfile=examples/azureml-inference.Dockerfile \
#          --build-arg PYTHON_VERSION=3.10 --build-arg CONDA_VERSION=23.11.0-2 --base-image-profile=azureml-current
#
# It does NOT build offline: it pulls ubuntu from Docker Hub, apt packages from archive.ubuntu.com,
# Miniconda from repo.anaconda.com and azureml-defaults from PyPI. Behind a proxy or a mirror, change
# those sources (or FROM your registry's copy of ubuntu) before building.
#
# What Azure ML expects of a base image (pytest-baseimage's azureml-current profile checks each):
#   an accepted Ubuntu release; conda on PATH; a supported Python in conda's base environment; the
#   inferencing stack's apt packages; azureml-inference-server-http (pulled in by azureml-defaults).
FROM ubuntu:22.04

# Miniconda's release (https://repo.anaconda.com/miniconda/) and the Python it is built for.
ARG CONDA_VERSION=23.11.0-2
ARG PYTHON_VERSION=3.10

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8 \
    PATH=/opt/miniconda/bin:$PATH

# The inferencing stack (as the Azure ML inference images install it) and what the installer needs.
# Ubuntu 20.04 has liblttng-ust0 instead of liblttng-ust1.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates wget bzip2 \
        libcurl4 liblttng-ust1 libunwind8 libxml++2.6-2v5 nginx-light psmisc rsyslog runit unzip \
    && rm -rf /var/lib/apt/lists/*

# Miniconda into /opt/miniconda, built for PYTHON_VERSION (installer names use py310 for 3.10).
RUN py_tag="py$(echo "${PYTHON_VERSION}" | tr -d .)" \
    && wget -q -O /tmp/miniconda.sh \
        "https://repo.anaconda.com/miniconda/Miniconda3-${py_tag}_${CONDA_VERSION}-Linux-x86_64.sh" \
    && bash /tmp/miniconda.sh -b -p /opt/miniconda \
    && rm /tmp/miniconda.sh \
    && conda clean -a -y \
    && python --version

# Azure ML's runtime packages; azureml-defaults brings azureml-inference-server-http (azmlinfsrv).
RUN pip install --no-cache-dir azureml-defaults \
    && python -c "import azureml_inference_server_http"

# Azure ML's own images run as an unprivileged user and start runit; add these when you need them:
#   RUN useradd --create-home dockeruser
#   USER dockeruser
#   CMD ["runsvdir", "/var/runit"]
