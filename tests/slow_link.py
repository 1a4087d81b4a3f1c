"""A slow network to a server, as a real TCP relay: what a client sends arrives at once, what
the server answers arrives `delay` seconds later, in order. A test sets the delay while it
runs, to hold the engine between what the server has done and the engine hearing of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from psycopg.conninfo import make_conninfo

Chunk = tuple[float, bytes] | None


class SlowLink:
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.delay = 0.0
        self.port = 0

    def dsn(self, dsn: str) -> str:
        """`dsn` with its host and port replaced by the relay's."""
        return make_conninfo(dsn, host="127.0.0.1", port=str(self.port))

    async def serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        server_in, server_out = await asyncio.open_connection(*self.upstream)
        try:
            with suppress(ConnectionError):
                await asyncio.gather(
                    self._forward(client_in, server_out),
                    self._replies(server_in, client_out),
                )
        finally:
            for writer in (server_out, client_out):
                writer.close()

    @staticmethod
    async def _forward(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
        sink.close()

    async def _replies(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[Chunk] = asyncio.Queue()

        async def deliver() -> None:
            loop = asyncio.get_running_loop()
            while (chunk := await queue.get()) is not None:
                due, data = chunk
                await asyncio.sleep(max(0.0, due - loop.time()))
                sink.write(data)
                await sink.drain()
            sink.close()

        delivering = asyncio.ensure_future(deliver())
        loop = asyncio.get_running_loop()
        with suppress(ConnectionError):
            while data := await source.read(65536):
                queue.put_nowait((loop.time() + self.delay, data))
        queue.put_nowait(None)
        with suppress(ConnectionError):
            await delivering


@asynccontextmanager
async def slow_link(host: str, port: int) -> AsyncIterator[SlowLink]:
    link = SlowLink(host, port)
    server = await asyncio.start_server(link.serve, "127.0.0.1", 0)
    link.port = server.sockets[0].getsockname()[1]
    try:
        yield link
    finally:
        server.close()
        with suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
