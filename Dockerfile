# The speedrun environment: CUDA 13.0 + cuDNN 9 on Ubuntu 24.04, PyTorch pinned by requirements.txt.
#   docker build -t speedrun .
#   docker run --gpus all --ipc=host -v "$PWD/data/fineweb10B:/speedrun/data/fineweb10B" -v "$PWD/logs:/speedrun/logs" speedrun
# The devel image (not runtime) because torch.compile's Triton kernels need a C compiler at run time.
FROM nvidia/cuda:13.0.1-cudnn-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Ubuntu's own Python 3.12; its packages move with the pinned base image, so they are not pinned twice.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV"

WORKDIR /speedrun

# Dependencies first, so that editing the code does not reinstall PyTorch.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# 8x H100: the record run (data/fineweb10B must be mounted or downloaded first);
# without a GPU: the CPU smoke run on synthetic data.
CMD ["./run.sh"]
