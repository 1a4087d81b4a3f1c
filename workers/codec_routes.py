"""The codec server: POST /codec/decode and /codec/encode, Temporal's remote codec protocol,
so an authorized person reads decoded payloads in the Temporal UI (its codec endpoint:
`http://<service>/codec`) or the CLI (`temporal workflow show --codec-endpoint ...
--codec-auth "Bearer <token>"`).

Both take and answer `{"payloads": [{"metadata": {k: base64}, "data": base64}]}` (the
Payloads protobuf as JSON), through the same codec and keys as the workers
(`workers.payload_codec`). The caller is a configured identity in one of
`[codec_server] decode_groups`, by bearer token or browser session cookie
(`workers.browser_sessions`); never anonymous. Browsers may call from the configured UI
origins only (CORS with credentials, for the session cookie).
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf import json_format
from pydantic import BaseModel, Field, ValidationError
from temporalio.api.common.v1 import Payload, Payloads

from activities.config import load_config
from workers.error_handlers import validation_message
from workers.http_common import caller_or_session, read_body, refuse, temporal_client
from workers.payload_codec import EncryptionCodec, PayloadDecryptionError

router = APIRouter()
logger = logging.getLogger(__name__)

SOURCE = "codec"
Action = Literal["encode", "decode"]
# What the UI sends: its JSON, the namespace, and (with "pass access token") a bearer token.
ALLOWED_HEADERS = ("content-type", "x-namespace", "authorization")


def cors_headers(request: Request) -> dict[str, str]:
    """Headers that let a configured UI origin read the answer, cookie included; none for
    any other origin (the browser then withholds the answer from its page)."""
    origin = request.headers.get("origin")
    if origin is None or origin not in load_config().codec_server.ui_origins:
        return {"Vary": "Origin"}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


@router.options("/codec/{action}")
async def preflight(request: Request, action: Action) -> Response:
    """The browser's CORS preflight before a POST with JSON and X-Namespace."""
    headers = cors_headers(request)
    if "Access-Control-Allow-Origin" not in headers:
        raise refuse(
            SOURCE,
            "origin",
            403,
            f"origin {request.headers.get('origin')!r} may not call the codec endpoint: add "
            "it to [codec_server] ui_origins",
        )
    headers |= {
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
        "Access-Control-Max-Age": "600",
    }
    return Response(status_code=204, headers=headers)


@router.post("/codec/{action}")
async def transcode(
    request: Request,
    action: Action,
    authorization: Annotated[str, Header()] = "",
    x_namespace: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Decode (or encode) the payloads with the engine's codec, for a permitted identity."""
    cors = cors_headers(request)
    try:
        who = _permitted_caller(request, authorization)
        codec = _codec(request, x_namespace)
        payloads = _parse(await read_body(request, SOURCE))
        transform = codec.open if action == "decode" else codec.seal
        try:
            answer = Payloads(payloads=[transform(p) for p in payloads])
        except PayloadDecryptionError as err:
            raise HTTPException(422, str(err)) from None
    except HTTPException as err:
        headers = {**(err.headers or {}), **cors}
        raise HTTPException(err.status_code, err.detail, headers=headers) from None
    logger.info("codec %s: %d payloads for %s", action, len(answer.payloads), who)
    return JSONResponse(json_format.MessageToDict(answer), headers=cors)


def _permitted_caller(request: Request, authorization: str) -> str:
    who, groups = caller_or_session(request, authorization)
    allowed = load_config().codec_server.decode_groups
    if not set(groups) & set(allowed):
        raise refuse(
            SOURCE,
            "forbidden",
            403,
            f"{who} may not read decoded payloads: only members of "
            f"{', '.join(allowed) or 'a group in [codec_server] decode_groups'} may",
        )
    return who


def _codec(request: Request, namespace: str | None) -> EncryptionCodec:
    client = temporal_client(request)
    codec = client.data_converter.payload_codec
    if not isinstance(codec, EncryptionCodec) or not codec.encrypts:
        raise HTTPException(
            404,
            "this service has no codec keys: set REMEDIATE_CODEC_KEYS and "
            "REMEDIATE_CODEC_ENCRYPT_WITH as the workers have them",
        )
    if namespace is not None and namespace != client.namespace:
        raise HTTPException(
            400, f"this codec serves namespace {client.namespace!r}, not {namespace!r}"
        )
    return codec


class WirePayload(BaseModel):
    metadata: dict[str, str] = Field(default_factory=dict)
    data: str = ""


class WirePayloads(BaseModel):
    """The Payloads protobuf as JSON, read strictly: protobuf's own JSON parser skips what is
    not base64 and would decode garbage."""

    payloads: list[WirePayload]


def _parse(body: bytes) -> list[Payload]:
    try:
        wire = WirePayloads.model_validate_json(body)
        return [
            Payload(
                metadata={
                    k: _base64(v, f"payloads[{i}].metadata.{k}") for k, v in p.metadata.items()
                },
                data=_base64(p.data, f"payloads[{i}].data"),
            )
            for i, p in enumerate(wire.payloads)
        ]
    except (ValidationError, ValueError) as err:
        problem = validation_message(err.errors()) if isinstance(err, ValidationError) else err
        raise HTTPException(
            400,
            f"the body is not Temporal's Payloads as JSON ({problem}): send "
            '{"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}',
        ) from None


def _base64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(f"{where} is not base64") from None
