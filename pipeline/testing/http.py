"""A small HTTP/1.1 server on 127.0.0.1 for fakes: keep-alive, chunked request bodies, and a
background thread with its own event loop, so a synchronous test or bench can hold it in a `with`.

It exists (rather than uvicorn) so a fake answers thousands of requests a second on one core and
never depends on the web stack under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Self

Response = tuple[int, dict[str, str], bytes]


def json_response(status: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
    return status, headers or {}, json.dumps(doc).encode()


def _reason(status: int) -> str:
    with contextlib.suppress(ValueError):
        return HTTPStatus(status).phrase
    return "Overloaded" if status == 529 else "Unknown"


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _read_request(
    reader: asyncio.StreamReader,
) -> tuple[str, str, str, dict[str, str], bytes]:
    """One request off the connection: method, target, HTTP version, headers, body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        length = int(headers.get("content-length") or 0)
        body = await reader.readexactly(length) if length else b""
    return method, target, version, headers, body


class FakeServer(ABC):
    """Serves `dispatch` over HTTP; subclasses answer the requests."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._conns: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @abstractmethod
    async def dispatch(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> Response:
        """The answer to one request."""

    def start(self) -> Self:
        """Start serving in a background thread; returns once the port is bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:  # handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop the server and drop its open connections."""
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def serve_forever(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve on the current event loop until cancelled; `on_ready()` once the port is bound."""
        await self._bind()
        assert self._server is not None
        if on_ready is not None:
            on_ready()
        try:
            await self._server.serve_forever()
        finally:
            await self._shutdown()

    async def _bind(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, "127.0.0.1", self.port, backlog=4096, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                method, target, version, headers, body = await _read_request(reader)
                try:
                    status, extra, payload = await self.dispatch(method, target, headers, body)
                except Exception as exc:  # a fake must answer, not hang
                    status, extra, payload = 500, {}, json.dumps({"error": repr(exc)}).encode()
                connection = headers.get("connection", "").lower()
                close = connection == "close" or (
                    version == "HTTP/1.0" and connection != "keep-alive"
                )
                out = [f"HTTP/1.1 {status} {_reason(status)}\r\ncontent-type: application/json\r\n"]
                out.append(f"content-length: {len(payload)}\r\n")
                out.extend(f"{k}: {v}\r\n" for k, v in extra.items())
                out.append("connection: close\r\n\r\n" if close else "\r\n")
                writer.write("".join(out).encode("latin-1") + payload)
                await writer.drain()
                if close:
                    break
        except (
            asyncio.CancelledError,  # stop(): asyncio would log a cancelled handler as an error
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ValueError,
        ):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
