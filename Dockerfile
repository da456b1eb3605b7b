# syntax=docker/dockerfile:1
#
# inventory-proxy as a container: wheels are built in the first stage and installed
# in the second, which has no build tools, runs as UID/GID 10001 and reads its
# config from a mounted file:
#
#   docker build -t inventory-proxy .
#   docker run --rm -p 127.0.0.1:8080:8080 -e IV_CLIENT_SECRET \
#     -v "$PWD/proxy.toml:/etc/inventory-proxy/proxy.toml:ro" inventory-proxy
#
# The config must set `host = "0.0.0.0"` (the default, 127.0.0.1, is unreachable
# from outside the container) and list the networks whose callers need no
# credentials in `server.trusted_networks`; everyone else must authenticate.
# Secrets come from `${VAR}` placeholders filled from the environment or from
# `*_file` keys naming mounted files (/run/secrets/...). docker-compose.yml runs it
# beside a demo backend.

# Both stages use the interpreter the test suite runs on. The tag is written out in
# each FROM (not an ARG) so that hadolint can check that it is pinned.
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy

# The project and every dependency as wheels. The dependencies all publish binary
# wheels for CPython 3.11 on Linux, so this stage needs no compiler either.
RUN pip wheel --wheel-dir /wheels .


FROM python:3.11-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="inventory-proxy" \
      org.opencontainers.image.description="Authenticating reverse proxy that attaches OAuth2 tokens to an OMS's inventory, price, reservation and delivery calls" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INVENTORY_PROXY_CONFIG=/etc/inventory-proxy/proxy.toml \
    PORT=8080

# The wheels are bind-mounted from the build stage, so they never become a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --no-cache-dir --disable-pip-version-check \
        --root-user-action=ignore /wheels/*.whl \
    && groupadd --system --gid 10001 proxy \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin proxy

# Numeric, so that an orchestrator's runAsNonRoot can verify it.
USER 10001:10001

EXPOSE 8080

# /healthz answers 200 while the process serves, whoever asks. PORT must match
# server.port; a listener with TLS (server.tls_cert_file) needs another check.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8080') + '/healthz', timeout=2)"]

ENTRYPOINT ["inventory-proxy"]
CMD ["serve"]
