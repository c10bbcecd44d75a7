# One image for all four TKM services; docker-compose.yml picks the service with
# `command: ["python", "-m", "services.<name>"]`, so there is no default CMD here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Install from pyproject.toml (only the packages listed in [tool.setuptools.packages.find]).
COPY pyproject.toml ./
COPY shared/ shared/
COPY services/ services/
COPY scripts/ scripts/
RUN pip install . \
    && rm -rf build *.egg-info

RUN groupadd --system --gid 10001 tkm \
    && useradd --system --uid 10001 --gid tkm --no-create-home --shell /usr/sbin/nologin tkm
USER tkm

# recruitment 8101, groups 8102, mentoring 8103, evaluation 8104 (shared.settings.SERVICE_PORTS)
EXPOSE 8101-8104
