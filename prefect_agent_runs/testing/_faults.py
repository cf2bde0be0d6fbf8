"""Faults on request, shared by every emulator: which requests fail, and how they answer."""

from __future__ import annotations

import fnmatch
import math
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from starlette.responses import Response

if TYPE_CHECKING:
    from prefect_agent_runs.testing.assistants import RecordedRequest

__all__ = ["HTML_FAULTS", "FaultInjection", "Faults"]

HTML_FAULTS = {502: "<html>502 Bad Gateway</html>", 504: "<html>504 Gateway Time-out</html>"}
"""Statuses answered with an HTML body, as a proxy in front of the platform answers them."""


@dataclass
class Faults:
    """What :meth:`FaultInjection.inject_faults` asked for."""

    rate: float
    statuses: tuple[int, ...]
    retry_after: float | None
    delay_seconds: float
    rng: random.Random
    paths: tuple[str, ...] | None
    methods: frozenset[str] | None
    after_commit: bool


class FaultInjection:
    """Mixin of the emulators: faults on request, and the choice of a fault per request.

    The emulator holds ``_lock`` (an ``RLock``) and ``_faults``, and says how a fault's JSON
    answer reads on its platform in :meth:`_fault_json`.
    """

    _lock: threading.RLock
    _faults: Faults | None
    _retry_after_ms: ClassVar[bool] = False
    """Also send ``retry-after-ms`` when ``retry_after`` is not a whole number."""

    def inject_faults(
        self,
        rate: float = 0.3,
        statuses: Iterable[int] = (429, 500, 502, 503),
        retry_after: float | None = 1,
        delay_seconds: float = 0.0,
        seed: int = 0,
        paths: Iterable[str] | None = None,
        *,
        methods: Iterable[str] | None = None,
        after_commit: bool = False,
    ) -> None:
        """Make a share of requests fail or answer slowly.

        A faulted request waits ``delay_seconds``, then answers a status drawn from
        ``statuses`` (an empty ``statuses`` gives slow but normal answers). 502 and 504
        answer an HTML body like a proxy; others the platform's error body.

        Args:
            rate: Probability (0..1) that a matching request is faulted.
            statuses: Statuses to choose from.
            retry_after: Seconds sent as ``Retry-After`` on 429 and 503 (rounded up; the
                Assistants emulator also sends ``retry-after-ms`` for a non-integer value);
                ``None`` omits it.
            delay_seconds: Seconds to wait before answering a faulted request.
            seed: Seed of the random choice, for reproducible tests.
            paths: ``fnmatch`` patterns of request paths (the Assistants emulator's without
                the ``/v1`` prefix, e.g. ``"/threads/*/runs"``); ``None`` matches every path.
            methods: HTTP methods to fault; ``None`` matches all.
            after_commit: Handle the request first (e.g. really create the run), then wait
                and answer the fault, like a server or proxy that fails after committing.
                With ``statuses=()`` and a ``delay_seconds`` above the client's read
                timeout, the client times out although the run exists.
        """
        with self._lock:
            self._faults = Faults(
                rate=rate,
                statuses=tuple(statuses),
                retry_after=retry_after,
                delay_seconds=delay_seconds,
                rng=random.Random(seed),
                paths=tuple(paths) if paths is not None else None,
                methods=frozenset(m.upper() for m in methods) if methods is not None else None,
                after_commit=after_commit,
            )

    def clear_faults(self) -> None:
        """Stop injecting faults."""
        with self._lock:
            self._faults = None

    def _pick_fault(self, method: str, path: str) -> Faults | None:
        with self._lock:
            faults = self._faults
            if faults is None:
                return None
            if faults.methods is not None and method not in faults.methods:
                return None
            if faults.paths is not None and not any(
                fnmatch.fnmatchcase(path, p) for p in faults.paths
            ):
                return None
            if faults.rng.random() >= faults.rate:
                return None
            return faults

    def _fault_response(self, faults: Faults, record: RecordedRequest) -> Response | None:
        if not faults.statuses:
            return None
        with self._lock:
            status = faults.rng.choice(faults.statuses)
        record.fault = status
        if status in HTML_FAULTS:
            record.response_json = None
            return Response(HTML_FAULTS[status], status_code=status, media_type="text/html")
        headers: dict[str, str] = {}
        if status in (429, 503) and faults.retry_after is not None:
            headers["retry-after"] = str(max(1, math.ceil(faults.retry_after)))
            if self._retry_after_ms and float(faults.retry_after) != int(faults.retry_after):
                headers["retry-after-ms"] = str(int(faults.retry_after * 1000))
        return self._fault_json(record, status, headers)

    def _fault_json(
        self, record: RecordedRequest, status: int, headers: dict[str, str]
    ) -> Response:
        """The platform's JSON answer to an injected fault with this status."""
        raise NotImplementedError
