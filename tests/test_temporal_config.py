"""Reading Temporal's client configuration: TEMPORAL_* over a TOML profile, each TLS file named
as the user set it, the deprecated REMEDIATE_ fallback, and unreadable files told in a line."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from workers.temporal_config import TemporalConfigError, load_target

NO_FILE = {"TEMPORAL_CONFIG_FILE": "/nonexistent/temporal.toml"}


def test_defaults_without_any_configuration() -> None:
    target = load_target(environ=NO_FILE)
    assert (target.address, target.namespace, target.tls) == ("localhost:7233", "default", False)


def test_remediate_variables_are_a_deprecated_fallback() -> None:
    with pytest.warns(DeprecationWarning, match="set TEMPORAL_ADDRESS instead"):
        target = load_target("old:7233", None, NO_FILE)
    assert target.address == "old:7233"
    with pytest.warns(DeprecationWarning, match="set TEMPORAL_NAMESPACE instead"):
        newer = load_target("old:7233", "ns", NO_FILE | {"TEMPORAL_ADDRESS": "new:7233"})
    assert newer.address == "new:7233" and newer.namespace == "ns"


def test_api_key_turns_tls_on_and_stays_out_of_repr() -> None:
    environ = NO_FILE | {"TEMPORAL_ADDRESS": "x.tmprl.cloud:7233", "TEMPORAL_API_KEY": "k-123"}
    target = load_target(environ=environ)
    assert target.api_key == "k-123" and target.uses_tls
    assert "k-123" not in repr(target)


def test_tls_files_are_named_as_they_were_set(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_text("PEM")
    profile = tmp_path / "temporal.toml"
    profile.write_text(
        f'[profile.default]\naddress = "h:7233"\n[profile.default.tls]\n'
        f'client_cert_path = "{cert}"\nclient_key_path = "{key}"\n'
    )
    environ = {"TEMPORAL_CONFIG_FILE": str(profile), "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(ca)}
    target = load_target(environ=environ)
    assert isinstance(target.tls, TLSConfig) and target.tls.client_cert == b"PEM"
    assert target.sources.server_ca == f"TEMPORAL_TLS_SERVER_CA_CERT_PATH={ca}"
    assert target.sources.client_cert == f"tls.client_cert_path = '{cert}' of profile 'default'"


def test_an_unreadable_tls_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "gone.pem"
    environ = NO_FILE | {"TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(missing)}
    with pytest.raises(TemporalConfigError) as failed:
        load_target(environ=environ)
    assert str(failed.value) == (
        f"cannot read TEMPORAL_TLS_SERVER_CA_CERT_PATH={missing}: No such file or directory"
    )


def test_a_missing_profile_is_a_config_error(tmp_path: Path) -> None:
    profile = tmp_path / "temporal.toml"
    profile.write_text('[profile.default]\naddress = "h:7233"\n')
    environ = {"TEMPORAL_CONFIG_FILE": str(profile), "TEMPORAL_PROFILE": "prod"}
    with pytest.raises(TemporalConfigError, match=r"Temporal client configuration: .*prod"):
        load_target(environ=environ)
