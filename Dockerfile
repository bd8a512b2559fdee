# One image for every driftline process: consume, consume-labels, evaluate, webhook, demo, ...
#   docker build -t driftline .        docker run --rm driftline --help
# The config file is mounted (deploy/compose, deploy/k8s); /metrics listens on 18000 and the
# webhook receiver on 18080 when the config says so (evaluator.metrics_host: 0.0.0.0).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/driftline
COPY pyproject.toml README.md ./
COPY driftline ./driftline
COPY consumers ./consumers
COPY detectors ./detectors
COPY alerting ./alerting
RUN pip install . \
    && useradd --system --uid 10001 --create-home --home-dir /home/driftline driftline

USER 10001
EXPOSE 18000 18080
ENTRYPOINT ["driftline"]
CMD ["--help"]
