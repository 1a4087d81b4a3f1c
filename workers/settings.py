"""Process settings, from the environment (prefix REMEDIATE_): what is the engine's own.
Where Temporal is and how to reach it: Temporal's own configuration (workers/temporal_config.py)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from workers.coalescer import CoalescePolicy
from workers.temporal_config import TemporalTarget, load_target
from workers.temporal_connect import connect_to
from workflows.names import TASK_QUEUE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REMEDIATE_")

    # Deprecated (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE or a profile instead): used only where
    # Temporal's configuration names no address or namespace.
    temporal_address: str | None = None
    namespace: str | None = None
    task_queue: str = TASK_QUEUE
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Where the CLI finds the approval service: it starts, decides and pauses through it
    # (only the service can sign). The local stack's service listens here.
    api_url: str = "http://127.0.0.1:8000"
    # Duplicates of a firing alert already attached to a running run are batched for this
    # long into one signal (0: every alert is its own signal-with-start), while the run was
    # seen attached within `coalesce_fresh_seconds` (see workers/coalescer.py).
    coalesce_window_seconds: float = 0.25
    coalesce_fresh_seconds: float = 10.0
    # Where the worker serves the Temporal SDK's Prometheus metrics (host:port), among them
    # `remediation_decisions_refused`; unset, it serves none.
    worker_metrics_address: str | None = None
    # After SIGTERM the worker stops polling and gives running activities this long to finish
    # before cancelling them (a cancelled activity is retried elsewhere). An orchestrator's
    # grace period must be longer (infra/k8s/worker.yaml: terminationGracePeriodSeconds).
    worker_drain_seconds: float = Field(default=30.0, ge=0)


def coalesce_policy(settings: Settings) -> CoalescePolicy | None:
    if settings.coalesce_window_seconds <= 0:
        return None
    return CoalescePolicy(
        window_seconds=settings.coalesce_window_seconds,
        fresh_seconds=settings.coalesce_fresh_seconds,
    )


def temporal_target(settings: Settings) -> TemporalTarget:
    return load_target(settings.temporal_address, settings.namespace)


async def connect(settings: Settings | None = None, runtime: Runtime | None = None) -> Client:
    """A client of the Temporal that Temporal's configuration names; a failure raises
    `TemporalConfigError` whose message is one line saying what to fix."""
    return await connect_to(temporal_target(settings or Settings()), runtime)


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A runtime exporting the SDK's metrics for Prometheus, when an address is configured."""
    if not settings.worker_metrics_address:
        return None
    prometheus = PrometheusConfig(bind_address=settings.worker_metrics_address)
    return Runtime(telemetry=TelemetryConfig(metrics=prometheus))
