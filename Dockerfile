# syntax=docker/dockerfile:1
# marketgraph: build a virtual environment in one stage, run it as a non-root user in another.
# Without any *_DATABASE_URL the container runs the embedded PostgreSQL under /data;
# compose.yaml shows the usual set-up with PostgreSQL 16 and Redis 7.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# Dependencies first, in their own layer: code changes do not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt
COPY marketgraph ./marketgraph
# The wheel, as operators install it: the migrations ship inside the package.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip install --no-deps /wheels/marketgraph-*.whl

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/data \
    LOG_FORMAT=json
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/marketgraph marketgraph \
 && mkdir /data \
 && chown marketgraph:marketgraph /data
# Only the virtual environment: the package and its migrations live in it.
COPY --from=build /opt/venv /opt/venv
WORKDIR /data
USER marketgraph
VOLUME ["/data"]
EXPOSE 8000
# No curl in the slim image: ask /health with the standard library (503 raises, so exit 1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
CMD ["marketgraph", "serve", "--host", "0.0.0.0", "--port", "8000"]
