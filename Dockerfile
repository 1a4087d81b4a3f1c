# syntax=docker/dockerfile:1
# The engine's image: one image, three console scripts. `remediate-worker` is the default
# command; the service runs the same image with `remediate-service`, and `remediate` (the CLI)
# is there for `docker run --rm ... remediate status ID`.
#
#   docker build -t remediation-engine:0.1.0 .
#
# Everything Python comes from the hashed lock (infra/image/requirements.lock, `make lock`), so
# a build installs exactly the wheels that were reviewed; pip refuses anything unhashed.
# No secret is baked in: config, keys and Temporal credentials arrive at run time
# (README "Deploying").
#
# Health: the two long-lived commands answer on different endpoints, so the image declares no
# HEALTHCHECK; the orchestrator probes each one (infra/compose/compose.yaml, infra/k8s/):
#   remediate-service  GET :8000/livez (alive), GET :8000/healthz (ready: Temporal answers)
#   remediate-worker   GET :9464/metrics (the Temporal SDK's Prometheus endpoint)

# Pinned to a patch release; pin the digest too (`@sha256:...`) in your registry's build.
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
COPY infra/image/requirements.lock /tmp/requirements.lock
# The dependencies and the build backend, hashed; then the project itself, built offline
# against that backend and installed without resolving anything more.
RUN /opt/venv/bin/pip install --require-hashes -r /tmp/requirements.lock

WORKDIR /src
COPY pyproject.toml README.md ./
COPY activities ./activities
COPY workflows ./workflows
COPY workers ./workers
COPY infra ./infra
RUN /opt/venv/bin/pip install --no-deps --no-index --no-build-isolation . \
    && /opt/venv/bin/pip uninstall --yes setuptools


FROM python:3.11.14-slim-bookworm

# pg_dump and pg_restore for backup_restore (activities/postgres/client_tools.py looks in
# PG_BIN). Debian's version moves with its security updates, so it is not pinned here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-15 \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid, so volume permissions and Kubernetes' runAsUser/fsGroup can name it.
RUN groupadd --system --gid 10001 remediate \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin remediate

COPY --from=build /opt/venv /opt/venv

# REMEDIATE_API_HOST: the service listens on every interface of its container (the local
# default, 127.0.0.1, is unreachable from outside it). The worker's metrics are served only
# where REMEDIATE_WORKER_METRICS_ADDRESS is set (the manifests set 0.0.0.0:9464).
# PYTHONDONTWRITEBYTECODE: the root filesystem may be read-only (Kubernetes).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PG_BIN=/usr/lib/postgresql/15/bin \
    REMEDIATE_CONFIG=/etc/remediate/config.toml \
    REMEDIATE_API_HOST=0.0.0.0 \
    REMEDIATE_API_PORT=8000

USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 9464

# Both long-lived commands handle SIGTERM themselves (the worker stops polling and drains its
# activities for REMEDIATE_WORKER_DRAIN_SECONDS; uvicorn finishes its requests), so no init
# process is needed in front of them.
CMD ["remediate-worker"]
