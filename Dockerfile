# roamsign: the remote signing service.
#
#   docker build -t roamsign .
#   docker run IMAGE db upgrade          # migrations run as a separate step, before serving
#   docker run -p 8000:8000 \
#       -e ROAMSIGN_DATABASE_URL=postgresql+psycopg://USER@HOST/DB \
#       -e ROAMSIGN_MASTER_KEY_FILE=/run/secrets/roamsign-master-key \
#       IMAGE                            # = python -m app serve --host 0.0.0.0 (ROAMSIGN_PORT)
#
# The production profile refuses to start without a master key file (mount it as a secret,
# mode 0600). Another port: set ROAMSIGN_PORT (not `serve --port`), which the health check reads.
# No apt packages are needed: every dependency in requirements.lock ships a manylinux wheel
# (psycopg[binary] bundles libpq); each file is checked against the lock's hashes.
# The base image is pinned by digest (python:3.11-slim's index digest, every platform; from
# docker-library/repo-info): to update, `docker buildx imagetools inspect python:3.11-slim`.
# The demo mail sink (app/services/mail/sink.py) stays out of the image (.dockerignore).
# Swagger UI for /docs (app/static/vendor/, gitignored) comes from the `web` stage, which runs
# scripts/vendor-web.sh as `make install` does: from the npm registry, pinned by version and
# integrity hash; a local copy never enters the build context (.dockerignore).

FROM python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff AS web

WORKDIR /src
COPY scripts/vendor-web.sh scripts/vendor-web.sh
RUN bash scripts/vendor-web.sh \
    && test -s app/static/vendor/swagger-ui/swagger-ui-bundle.js \
    && test -s app/static/vendor/swagger-ui/swagger-ui.css


FROM python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements.lock \
    && /opt/venv/bin/pip check


FROM python:3.11-slim@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    ROAMSIGN_PROFILE=production \
    ROAMSIGN_PORT=8000

RUN groupadd --system --gid 10001 roamsign \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin roamsign

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
COPY pyproject.toml alembic.ini ./
COPY migrations/ migrations/
COPY app/ app/
COPY --from=web /src/app/static/vendor/ app/static/vendor/
# var/ holds the SQLite database of a single-process deployment; mount a volume there to keep it.
RUN mkdir -p /app/var && chown roamsign:roamsign /app/var

USER 10001:10001

EXPOSE ${ROAMSIGN_PORT}

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; from app.settings import Settings; url = f'http://127.0.0.1:{Settings().port}/healthz'; sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)"]

ENTRYPOINT ["python", "-m", "app"]
CMD ["serve", "--host", "0.0.0.0"]
