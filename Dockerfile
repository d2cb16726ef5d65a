# Production image of the Benxi CIM service. PostGIS runs as a separate service: pass its URL as
# CIM_DATABASE_URL. Built with the same scripts/install.sh the README's set-up uses.
FROM python:3.12-slim-bookworm

WORKDIR /opt/cim
COPY . .

# no test extras, no local PostgreSQL server in the image; the interpreter of the base image
ENV CIM_VENV=/opt/cim/.venv \
    CIM_EXTRAS= \
    CIM_WITH_POSTGRES_SERVER=0 \
    CIM_PYTHON=/usr/local/bin/python3.12
RUN bash scripts/install.sh && rm -rf /var/lib/apt/lists/* /root/.cache/pip

ENV CIM_HOST=0.0.0.0 \
    CIM_PORT=5000 \
    CIM_WORKERS=2 \
    CIM_DATA_DIR=/var/lib/cim
VOLUME /var/lib/cim
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s \
  CMD ["/opt/cim/.venv/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/healthz')"]
CMD ["sh", "-c", "/opt/cim/.venv/bin/cim db init && /opt/cim/.venv/bin/cim db upgrade && exec /opt/cim/.venv/bin/cim serve"]
