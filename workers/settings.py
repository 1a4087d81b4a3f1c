"""Process settings, from the environment (prefix REMEDIATE_): what is the engine's own.
Where Temporal is and how to reach it: Temporal's own configuration (workers/temporal_config.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from activities.refs import SecretRef
from workers.exits import fail
from workers.logs import LogFormat
from workflows.names import TASK_QUEUE

# The Temporal SDK, the codec and the connection helpers are imported where they are used:
# the CLI reads its settings on every command, most of which only call the service.
if TYPE_CHECKING:
    from temporalio.client import Client
    from temporalio.runtime import Runtime

    from workers.coalescer import CoalescePolicy
    from workers.payload_codec import EncryptionCodec
    from workers.temporal_config import TemporalTarget

DEFAULT_MAX_CACHED_WORKFLOWS = 200


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
    # Where the worker serves Prometheus metrics (host:port): the Temporal SDK's `temporal_*`
    # and the engine's `remediation_*` (workflows/run_metrics.py); unset, it serves none.
    worker_metrics_address: str | None = None
    # On SIGTERM the worker stops polling and gives its running activities this long to
    # finish; those still running are then cancelled and handed back to Temporal, which
    # retries them on another worker at once. Keep the orchestrator's grace period longer
    # (Kubernetes terminationGracePeriodSeconds, Compose stop_grace_period).
    worker_drain_seconds: float = Field(default=30.0, ge=0)
    # Runs the worker keeps in memory between their tasks. A run evicted is replayed from its
    # history at its next task (a decision, a timer, a query): runs parked at gates then cost
    # their history, not their memory. Measured (benchmarks/parked_gates.py, 1,000 parked):
    # RSS 357 MB with the SDK's default of 1,000, 179 MB with 100; about 230 KB a cached run.
    worker_max_cached_workflows: int = Field(default=DEFAULT_MAX_CACHED_WORKFLOWS, ge=0)
    # Log lines as JSON objects with the run's ids as fields (workers/logs.py), or "text".
    log_format: LogFormat = "json"
    # The payload codec (workers/payload_codec.py, workers/codec_keys.py): key id -> secret
    # reference (JSON: {"k1": {"env": "CODEC_K1"}}), and the id that encrypts. The same in
    # every process that talks to Temporal; unset, payloads stay plain.
    codec_keys: Annotated[dict[str, SecretRef], NoDecode] = Field(default_factory=dict)
    codec_encrypt_with: str | None = None

    @field_validator("codec_keys", mode="before")
    @classmethod
    def _codec_keys_json(cls, value: Any) -> Any:
        """JSON read here, so a typo is a one-line validation error naming the variable
        (pydantic-settings' own decoding fails with a traceback)."""
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value) if value.strip() else {}
        except ValueError:
            raise ValueError(
                'must be JSON: {"<key id>": {"env": "VAR"} or {"secret_arn": "arn:..."}}'
            ) from None


def load_settings() -> Settings:
    """The settings from the environment; invalid ones end the process with one line naming
    each variable and what is wrong with it (not pydantic's traceback)."""
    try:
        return Settings()
    except ValidationError as err:
        problems = "; ".join(
            f"REMEDIATE_{'_'.join(str(p) for p in e['loc'][:1]).upper()}: {e['msg']}"
            for e in err.errors()
        )
        fail(f"invalid settings: {problems}")


def coalesce_policy(settings: Settings) -> CoalescePolicy | None:
    from workers.coalescer import CoalescePolicy

    if settings.coalesce_window_seconds <= 0:
        return None
    return CoalescePolicy(
        window_seconds=settings.coalesce_window_seconds,
        fresh_seconds=settings.coalesce_fresh_seconds,
    )


def temporal_target(settings: Settings) -> TemporalTarget:
    from workers.temporal_config import load_target

    return load_target(settings.temporal_address, settings.namespace)


def payload_codec(settings: Settings) -> EncryptionCodec:
    """The codec with its keys resolved; a missing or malformed key raises `CodecKeyError`
    (a `TemporalConfigError`) saying which one and what to fix."""
    from workers.codec_keys import codec_for

    return codec_for(settings.codec_keys, settings.codec_encrypt_with)


async def connect(settings: Settings | None = None, runtime: Runtime | None = None) -> Client:
    """A client of the Temporal that Temporal's configuration names, with the payload codec
    the settings configure; a failure raises `TemporalConfigError` whose message is one line
    saying what to fix."""
    from workers.temporal_connect import connect_to

    settings = settings or Settings()
    return await connect_to(temporal_target(settings), runtime, payload_codec(settings))


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A runtime exporting the SDK's metrics for Prometheus, when an address is configured."""
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    from workflows import run_metrics

    if not settings.worker_metrics_address:
        return None
    prometheus = PrometheusConfig(
        bind_address=settings.worker_metrics_address,
        histogram_bucket_overrides=run_metrics.HISTOGRAM_BUCKETS,
    )
    return Runtime(telemetry=TelemetryConfig(metrics=prometheus))
