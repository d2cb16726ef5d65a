# Production image of the Benxi CIM service. PostGIS runs as a separate service (compose.yml): pass its URL
# as CIM_DATABASE_URL (and a streaming replica's as CIM_READ_DATABASE_URL). Built with the same
# scripts/install.sh the README's set-up uses. Scale-out, limits and metrics: docs/deployment.md.
FROM python:3.12-slim-bookworm

WORKDIR /opt/cim
COPY . .

# no test extras, no local PostgreSQL server in the image; the interpreter of the base image
ENV CIM_VENV=/opt/cim/.venv \
    CIM_EXTRAS= \
    CIM_WITH_POSTGRES_SERVER=0 \
    CIM_PYTHON=/usr/local/bin/python3.12
RUN bash scripts/install.sh && rm -rf /var/lib/apt/lists/* /root/.cache/pip \
 && useradd --system --uid 10001 --home-dir /var/lib/cim --shell /usr/sbin/nologin cim \
 && mkdir -p /var/lib/cim && chown cim:cim /var/lib/cim

# Workers: about one per core (docs/deployment.md). Logs: JSON lines on standard error.
ENV CIM_HOST=0.0.0.0 \
    CIM_PORT=5000 \
    CIM_WORKERS=2 \
    CIM_LOG_FORMAT=json \
    CIM_DATA_DIR=/var/lib/cim \
    CIM_TILE_CACHE_DIR=/var/lib/cim/tile-cache \
    PROMETHEUS_MULTIPROC_DIR=/var/lib/cim/metrics/5000 \
    PATH=/opt/cim/.venv/bin:$PATH
USER cim
VOLUME /var/lib/cim
EXPOSE 5000
# liveness only: a database outage shows in /readyz (503), and must not get the container restarted
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/healthz', timeout=4)"]
# `cim db upgrade` is a no-op on a current schema; run it from one place when scaling out (docs/deployment.md)
CMD ["sh", "-c", "cim db init && cim db upgrade && exec cim serve"]
