"""A fault-injecting HTTP/1.1 proxy on loopback, for the reliability tests.

It sits between a client and a real server (the LangGraph Agent Server or an emulator)
and breaks a share of the requests in the ways networks and gateways do. Faults that
matter for duplicates are applied *after* the server handled the request (the run exists,
its answer is lost), not only before, so a client that blindly resends a create is caught.

Kinds (:class:`Fault`):

* ``html_502``: an HTML 502 page from "a gateway" (before or after forwarding).
* ``status_503``: a JSON-less 503 (before or after forwarding).
* ``rate_429``: a 429 with ``Retry-After: 1`` (before forwarding: a 429 means not processed).
* ``reset_before``: the connection is reset once the request was read, nothing forwarded.
* ``reset_after``: forwarded, the server answered, then the connection is reset.
* ``stall``: forwarded, then the answer is held ``stall_seconds`` (past the client's read
  timeout) and the connection closed.
* ``truncated``: a 200 whose body is cut short while ``Content-Length`` promises all of it.
* ``truncated_length``: a 200 whose body is cut short with a matching ``Content-Length``
  (the client sees a complete answer that is not valid JSON).
* ``late_create``: a create is held ``late_hold_seconds`` (the client times out), then
  delivered to the server anyway; its answer goes nowhere.

The proxy runs its own event loop in a daemon thread, so it serves sync and async callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from prefect_agent_runs._pool import ShardedTransport
from prefect_agent_runs.testing._ports import Startable

__all__ = ["ALL_KINDS", "Fault", "FaultProxy", "ProxyRecord"]


class Fault(str, enum.Enum):
    """The ways a request can be broken."""

    HTML_502 = "html_502"
    STATUS_503 = "status_503"
    RATE_429 = "rate_429"
    RESET_BEFORE = "reset_before"
    RESET_AFTER = "reset_after"
    STALL = "stall"
    TRUNCATED = "truncated"
    TRUNCATED_LENGTH = "truncated_length"
    LATE_CREATE = "late_create"


ALL_KINDS: tuple[Fault, ...] = (
    Fault.HTML_502,
    Fault.STATUS_503,
    Fault.RATE_429,
    Fault.RESET_BEFORE,
    Fault.RESET_AFTER,
    Fault.STALL,
    Fault.TRUNCATED,
    Fault.TRUNCATED_LENGTH,
)
"""The seven kinds of issue 13 (``truncated`` counts twice: with and without a matching
Content-Length); ``late_create`` is separate."""

_HOP_HEADERS = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "content-length",
        "transfer-encoding",
        "accept-encoding",
        "proxy-connection",
        "te",
        "upgrade",
    }
)
_HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"
_TEXT_503 = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 429: "Too Many Requests"}


@dataclass
class ProxyRecord:
    """One request that went through the proxy.

    Attributes:
        method: HTTP method.
        path: Path with query.
        fault: The fault applied, or None.
        forwarded: Whether the server received it.
        status: The status the server answered (None when not forwarded).
    """

    method: str
    path: str
    fault: Fault | None = None
    forwarded: bool = False
    status: int | None = None


@dataclass
class _Config:
    rate: float = 0.0
    kinds: tuple[Fault, ...] = ALL_KINDS
    late_rate: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    match: Callable[[str, str], bool] | None = None


def default_is_create(method: str, path: str) -> bool:
    """POSTs that start runs or threads on the supported APIs."""
    if method != "POST":
        return False
    route = path.split("?", 1)[0]
    return bool(
        re.search(r"/threads(/[^/]+/runs)?$", route)
        or re.search(r"/threads/runs$", route)
        or re.search(r"/api/v1/runs$", route)
    )


class FaultProxy(Startable):
    """Forward loopback HTTP to ``upstream`` and fault a share of the requests.

    Args:
        upstream: The server's root URL (``http://127.0.0.1:PORT``); the path prefix of the
            client's URL is kept as is.
        stall_seconds: How long a ``stall`` holds the answer before closing.
        late_hold_seconds: How long a ``late_create`` holds the request before delivering it.
        is_create: Which requests are creates (for ``late_create``).
        seed: Seed of the fault choice.
    """

    def __init__(
        self,
        upstream: str,
        *,
        stall_seconds: float = 3.0,
        late_hold_seconds: float = 20.0,
        is_create: Callable[[str, str], bool] = default_is_create,
        seed: int = 0,
    ) -> None:
        parsed = httpx.URL(upstream)
        self.upstream = f"{parsed.scheme}://{parsed.netloc.decode()}"  # paths pass through
        self.stall_seconds = stall_seconds
        self.late_hold_seconds = late_hold_seconds
        self.is_create = is_create
        self.records: list[ProxyRecord] = []
        self._config = _Config(rng=random.Random(seed))
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._client: httpx.AsyncClient | None = None
        self._ready = threading.Event()
        self._port = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._late_pending = 0

    # -- control -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the proxy."""
        return f"http://127.0.0.1:{self._port}"

    def url_for(self, server_url: str) -> str:
        """The proxy's URL for ``server_url`` (same path, e.g. an emulator's ``/v1``)."""
        parsed = httpx.URL(server_url)
        return self.url + parsed.raw_path.decode().rstrip("/")

    def set_faults(
        self,
        rate: float,
        kinds: tuple[Fault, ...] = ALL_KINDS,
        *,
        late_rate: float = 0.0,
        seed: int = 0,
        match: Callable[[str, str], bool] | None = None,
    ) -> None:
        """Fault ``rate`` of the requests (kinds drawn evenly), and ``late_rate`` of creates.

        Args:
            rate: Share (0..1) of the matching requests that get one of ``kinds``.
            kinds: The kinds to draw from.
            late_rate: Share of creates delivered late (``late_create``).
            seed: Seed of the draw.
            match: Only requests for which ``match(method, path)`` is true are faulted.
        """
        with self._lock:
            self._config = _Config(
                rate=rate, kinds=kinds, late_rate=late_rate, rng=random.Random(seed), match=match
            )

    def clear_faults(self) -> None:
        """Forward everything untouched."""
        self.set_faults(0.0)

    def counts(self) -> Counter[str]:
        """Faults applied, by kind (``"none"`` for clean requests)."""
        with self._lock:
            return Counter(r.fault.value if r.fault else "none" for r in self.records)

    def late_in_flight(self) -> int:
        """Late creates held and not delivered yet."""
        with self._lock:
            return self._late_pending

    def wait_late_delivered(self, timeout: float) -> bool:
        """Block until every held create was delivered (True), or ``timeout`` passed."""
        with self._idle:
            return self._idle.wait_for(lambda: self._late_pending == 0, timeout)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        future.result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._startup())
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _startup(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self.upstream,
            timeout=httpx.Timeout(None),
            transport=ShardedTransport(512),  # httpcore's one pool walks every connection
        )
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", 0, limit=2**24, backlog=4096
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    # -- serving -------------------------------------------------------------------------

    def _pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            config = self._config
            if config.match is not None and not config.match(method, path):
                return None
            late = config.late_rate and self.is_create(method, path)
            if late and config.rng.random() < config.late_rate:
                return Fault.LATE_CREATE
            if config.rate and config.rng.random() < config.rate:
                return config.rng.choice(config.kinds)
            return None

    def _coin(self) -> bool:
        with self._lock:
            return self._config.rng.random() < 0.5

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                keep_open = await self._serve_one(request, writer)
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return  # the proxy is shutting down
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.close()

    async def _serve_one(self, request: _Request, writer: asyncio.StreamWriter) -> bool:
        fault = self._pick(request.method, request.path)
        record = ProxyRecord(request.method, request.path, fault)
        with self._lock:
            self.records.append(record)
        if fault is Fault.RATE_429:
            await _write(
                writer,
                429,
                {"retry-after": "1", "content-type": "application/json"},
                b'{"error": {"message": "Rate limit reached (proxy)", "type": "requests", "code": "rate_limit_exceeded"}}',
            )
            return True
        if fault is Fault.RESET_BEFORE:
            _reset(writer)
            return False
        if fault in (Fault.HTML_502, Fault.STATUS_503) and self._coin():
            await self._write_gateway_error(writer, fault)  # before forwarding
            return True
        if fault is Fault.LATE_CREATE:
            with self._lock:
                self._late_pending += 1
            try:
                await asyncio.sleep(self.late_hold_seconds)
                await self._forward_buffered(request, record)
            finally:
                with self._lock:
                    self._late_pending -= 1
                    self._idle.notify_all()
            _reset(writer)  # the client gave up long ago
            return False
        assert self._client is not None
        upstream = self._client.build_request(
            request.method, request.path, headers=request.forward_headers(), content=request.body
        )
        try:
            response = await self._client.send(upstream, stream=True)
        except httpx.HTTPError:
            await self._write_gateway_error(writer, Fault.HTML_502)  # the server is down
            return True
        record.forwarded = True
        record.status = response.status_code
        try:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                return await self._relay_stream(response, writer, fault)
            body = await response.aread()
        finally:
            await response.aclose()
        if fault in (Fault.HTML_502, Fault.STATUS_503):
            await self._write_gateway_error(writer, fault)  # after the server handled it
            return True
        if fault is Fault.RESET_AFTER:
            _reset(writer)
            return False
        if fault is Fault.STALL:
            await asyncio.sleep(self.stall_seconds)
            _reset(writer)
            return False
        headers = _response_headers(response)
        if fault is Fault.TRUNCATED and len(body) > 1:
            headers["content-length"] = str(len(body))
            writer.write(_head(response.status_code, headers) + body[: len(body) // 2])
            await writer.drain()
            writer.close()
            return False
        if fault is Fault.TRUNCATED_LENGTH and len(body) > 1:
            await _write(writer, response.status_code, headers, body[: len(body) // 2])
            return True
        await _write(writer, response.status_code, headers, body)
        return True

    async def _forward_buffered(self, request: _Request, record: ProxyRecord) -> None:
        assert self._client is not None
        response = await self._client.request(
            request.method, request.path, headers=request.forward_headers(), content=request.body
        )
        record.forwarded = True
        record.status = response.status_code

    async def _write_gateway_error(self, writer: asyncio.StreamWriter, fault: Fault) -> None:
        if fault is Fault.HTML_502:
            await _write(
                writer, 502, {"content-type": "text/html"}, _HTML_502, reason="Bad Gateway"
            )
        else:
            await _write(
                writer, 503, {"content-type": "text/plain"}, _TEXT_503, reason="Service Unavailable"
            )

    async def _relay_stream(
        self, response: httpx.Response, writer: asyncio.StreamWriter, fault: Fault | None
    ) -> bool:
        headers = _response_headers(response)
        headers["transfer-encoding"] = "chunked"
        writer.write(_head(response.status_code, headers))
        sent = 0
        async for chunk in response.aiter_raw():
            if fault in (Fault.TRUNCATED, Fault.TRUNCATED_LENGTH, Fault.RESET_AFTER) and sent:
                _reset(writer)
                return False
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
            sent += 1
        if fault is Fault.STALL:
            await asyncio.sleep(self.stall_seconds)
            _reset(writer)
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


@dataclass
class _Request:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def forward_headers(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.headers if k.lower() not in _HOP_HEADERS]


async def _read_request(reader: asyncio.StreamReader) -> _Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers: list[tuple[str, str]] = []
    length = 0
    chunked = False
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        value = value.strip()
        headers.append((name, value))
        if name.lower() == "content-length":
            length = int(value)
        if name.lower() == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    else:
        body = await reader.readexactly(length) if length else b""
    return _Request(method, path, headers, body)


def _response_headers(response: httpx.Response) -> dict[str, str]:
    return {
        k.lower(): v
        for k, v in response.headers.items()
        if k.lower() not in _HOP_HEADERS and k.lower() != "content-encoding"
    }


def _head(status: int, headers: dict[str, str], reason: str | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason or _REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _write(
    writer: asyncio.StreamWriter,
    status: int,
    headers: dict[str, str],
    body: bytes,
    *,
    reason: str | None = None,
) -> None:
    headers = {**headers, "content-length": str(len(body))}
    writer.write(_head(status, headers, reason) + body)
    await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), like a crashed middlebox."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
