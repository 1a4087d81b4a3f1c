"""A lean HTTP/1.1 keep-alive client for load generation: one request at a time per
connection, Content-Length bodies only (what uvicorn answers). httpx costs more CPU per
request than the service under test, and on a 2-core machine the load generator shares the
cores with it, so the storm's figures would measure the client."""

from __future__ import annotations

import asyncio


class HTTPConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """(status, body); a broken connection raises OSError or IncompleteReadError and is
        reopened by the next call."""
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(body)}\r\n"
        try:
            writer.write((head + lines + "\r\n").encode() + body)
            raw = await reader.readuntil(b"\r\n\r\n")
            status, length, closing = _parse_head(raw)
            answer = await reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if closing:
            self.close()
        return status, answer

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def _parse_head(raw: bytes) -> tuple[int, int, bool]:
    status_line, *header_lines = raw.decode("latin-1").split("\r\n")
    length, closing = 0, False
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "connection" and value.strip().lower() == "close":
            closing = True
    return int(status_line.split(" ", 2)[1]), length, closing
