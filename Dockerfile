# The streamapp worker image. In production it runs on a GPU node: torch from PyPI on Linux is
# the CUDA build. Scale with `docker compose up --scale worker=N` (N <= partitions).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY streamapp ./streamapp
RUN pip install .

# Table state lives here; mount a volume to keep it across restarts.
ENV STREAMAPP_DATADIR=/var/lib/streamapp
VOLUME ["/var/lib/streamapp"]
EXPOSE 6066

CMD ["faust", "-A", "streamapp", "worker", "-l", "info"]
