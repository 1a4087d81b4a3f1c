"""Connecting to Temporal (worker, service, CLI, benchmarks); a failure to connect is told as
one line that says what to fix, instead of the transport's error chain."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.runtime import Runtime

from workers.payload_codec import EncryptionCodec, data_converter
from workers.temporal_config import TemporalConfigError, TemporalTarget

SET_CA = "set TEMPORAL_TLS_SERVER_CA_CERT_PATH to the CA that signed it"
SET_CERT = "set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH"


class TemporalConnectError(TemporalConfigError):
    """Temporal could not be reached with this configuration; the message says what to fix."""


async def connect_to(
    target: TemporalTarget, runtime: Runtime | None = None, codec: EncryptionCodec | None = None
) -> Client:
    """A client with the pydantic converter and the payload codec (`workers.payload_codec`;
    without one, payloads stay plain and an encrypted one is refused with what to set)."""
    try:
        return await Client.connect(
            target.address,
            namespace=target.namespace,
            data_converter=data_converter(codec or EncryptionCodec(None)),
            runtime=runtime,
            tls=target.tls,
            api_key=target.api_key,
            rpc_metadata=target.rpc_metadata,
        )
    except RuntimeError as err:
        raise TemporalConnectError(explain(str(err), target)) from None


def explain(error: str, target: TemporalTarget) -> str:
    """The transport's error (rustls, tonic, hyper) in words, with the setting to change."""
    handshake = f"TLS handshake with {target.address} failed"
    if "InvalidCertificate" in error:
        return f"{handshake}: {_bad_server_certificate(error, target)}"
    if "InvalidContentType" in error or "CorruptMessage" in error:
        return (
            f"{handshake}: the server does not speak TLS there "
            "(unset TEMPORAL_TLS_* and TEMPORAL_API_KEY, or use its TLS port)"
        )
    if "H2NotNegotiated" in error:
        return (
            f"{handshake}: the server does not offer HTTP/2 (ALPN h2), which gRPC needs: "
            "is this Temporal's frontend?"
        )
    if "tcp connect error" in error or "dns error" in error:
        return f"cannot reach Temporal at {target.address}: is it running? (set TEMPORAL_ADDRESS)"
    if "Unauthenticated" in error or "PermissionDenied" in error:
        return _refused_credentials(target)
    if "after connection" in error and (
        "closed" in error or "reset" in error.lower() or "BrokenPipe" in error
    ):
        return _closed_after_connect(target)
    return f"cannot connect to Temporal at {target.address}: {error.splitlines()[0]}"


def _bad_server_certificate(error: str, target: TemporalTarget) -> str:
    if "UnknownIssuer" in error:
        if target.sources.server_ca:
            return f"the server's certificate is not signed by the CA in {target.sources.server_ca}"
        return f"the server's certificate is not signed by a CA this machine trusts: {SET_CA}"
    if "NotValidForName" in error:
        host = target.address.rsplit(":", 1)[0]
        return (
            f"the server's certificate is not valid for {host}: set TEMPORAL_TLS_SERVER_NAME "
            "to the name it was issued for"
        )
    if "Expired" in error:
        return "the server's certificate has expired"
    return f"the server's certificate was refused ({error.rsplit('error: ', 1)[-1].rstrip(')}')})"


def _closed_after_connect(target: TemporalTarget) -> str:
    closed = f"{target.address} closed the connection"
    if not target.uses_tls:
        return f"{closed}: does it expect TLS? {SET_CA} (or TEMPORAL_TLS=true)"
    if target.sources.client_cert is None:
        return f"{closed} after the TLS handshake: it requires a client certificate: {SET_CERT}"
    return (
        f"{closed} after the TLS handshake: the server refused the client certificate in "
        f"{target.sources.client_cert}: is it signed by a CA the server trusts?"
    )


def _refused_credentials(target: TemporalTarget) -> str:
    what = "the API key (TEMPORAL_API_KEY)" if target.api_key else "the client's credentials"
    return (
        f"Temporal at {target.address} refused {what} for namespace {target.namespace!r}: "
        "check the key and the namespace (TEMPORAL_NAMESPACE)"
    )
