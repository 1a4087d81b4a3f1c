"""Where Temporal is and how to reach it, read the way every Temporal tool reads it.

`temporalio.envconfig` loads the profile named by TEMPORAL_PROFILE (default "default") from
the TOML file in TEMPORAL_CONFIG_FILE (default `~/.config/temporalio/temporal.toml`) and lays
the TEMPORAL_* variables over it: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY,
TEMPORAL_TLS, TEMPORAL_TLS_SERVER_CA_CERT_PATH, TEMPORAL_TLS_CLIENT_CERT_PATH,
TEMPORAL_TLS_CLIENT_KEY_PATH, TEMPORAL_TLS_SERVER_NAME (and the *_DATA forms). The `temporal`
CLI reads the same, so one setting serves both.

REMEDIATE_TEMPORAL_ADDRESS and REMEDIATE_NAMESPACE are deprecated: they are used only where
Temporal's configuration names no address or namespace.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.envconfig import (
    ClientConfigProfile,
    ClientConfigTLS,
    DataSource,
)
from temporalio.service import TLSConfig

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"


class TemporalConfigError(Exception):
    """Temporal's client configuration cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class TlsSources:
    """Where each TLS file came from, in the words a user set it with
    (`TEMPORAL_TLS_SERVER_CA_CERT_PATH=/etc/ca.pem`), for error messages; None: not set."""

    server_ca: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


@dataclass(frozen=True)
class TemporalTarget:
    """What `Client.connect` is given, and how to name its parts to the user."""

    address: str
    namespace: str
    tls: bool | TLSConfig = False
    api_key: str | None = field(default=None, repr=False)
    rpc_metadata: Mapping[str, str] = field(default_factory=dict, repr=False)
    sources: TlsSources = TlsSources()

    @property
    def uses_tls(self) -> bool:
        return self.tls is not False


def load_target(
    legacy_address: str | None = None,
    legacy_namespace: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> TemporalTarget:
    """Temporal's client configuration (profile file and TEMPORAL_* variables), with the
    deprecated REMEDIATE_ address and namespace as a fallback."""
    environ = os.environ if environ is None else environ
    try:
        profile = ClientConfigProfile.load(override_env_vars=dict(environ))
    except (RuntimeError, ValueError, OSError) as err:
        raise TemporalConfigError(f"Temporal client configuration: {err}") from None
    try:
        options = profile.to_client_connect_config()  # reads the TLS files
    except OSError as err:
        raise TemporalConfigError(_unreadable(err, profile.tls, environ)) from None
    return TemporalTarget(
        address=options.get("target_host")
        or _legacy(
            "REMEDIATE_TEMPORAL_ADDRESS", "TEMPORAL_ADDRESS", legacy_address, DEFAULT_ADDRESS
        ),
        namespace=options.get("namespace")
        or _legacy(
            "REMEDIATE_NAMESPACE", "TEMPORAL_NAMESPACE", legacy_namespace, DEFAULT_NAMESPACE
        ),
        tls=options.get("tls", False),
        api_key=options.get("api_key"),
        rpc_metadata=options.get("rpc_metadata", {}),
        sources=_tls_sources(profile.tls, environ),
    )


def _legacy(old: str, new: str, value: str | None, default: str) -> str:
    if value is None:
        return default
    warnings.warn(f"{old} is deprecated: set {new} instead", DeprecationWarning, stacklevel=3)
    return value


def _tls_sources(tls: ClientConfigTLS | None, environ: Mapping[str, str]) -> TlsSources:
    if tls is None:
        return TlsSources()
    return TlsSources(
        server_ca=_describe("SERVER_CA_CERT", "server_ca_cert", tls.server_root_ca_cert, environ),
        client_cert=_describe("CLIENT_CERT", "client_cert", tls.client_cert, environ),
        client_key=_describe("CLIENT_KEY", "client_key", tls.client_private_key, environ),
    )


def _describe(
    variable: str, key: str, source: DataSource | None, environ: Mapping[str, str]
) -> str | None:
    """`TEMPORAL_TLS_<variable>_PATH=/path` if the variable set it, else the profile's key."""
    if source is None:
        return None
    form = "PATH" if isinstance(source, Path) else "DATA"
    name = f"TEMPORAL_TLS_{variable}_{form}"
    shown = str(source) if isinstance(source, Path) else ""
    if name in environ:
        return f"{name}={shown}" if shown else name
    profile = environ.get("TEMPORAL_PROFILE", "default")
    shown = f" = {shown!r}" if shown else ""
    return f"tls.{key}_{form.lower()}{shown} of profile {profile!r}"


def _unreadable(err: OSError, tls: ClientConfigTLS | None, environ: Mapping[str, str]) -> str:
    sources = _tls_sources(tls, environ)
    for source in (sources.server_ca, sources.client_cert, sources.client_key):
        if source and err.filename and str(err.filename) in source:
            return f"cannot read {source}: {err.strerror}"
    return f"cannot read a TLS file of the Temporal client configuration: {err}"
