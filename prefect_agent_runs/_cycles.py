"""Reference cycles that httpx and tenacity make on every request, broken once spent.

A cycle is freed only by CPython's cyclic garbage collector, and whatever it holds lives
until then, moving up the collector's generations and making full collections come more
often. Two made one on every request (measured with ``gc.DEBUG_SAVEALL``, 1,000 items on
the Assistants emulator: 135 objects per item):

* an httpx response and its stream point at each other (``BoundAsyncStream``), and hold
  the request, its headers and URL, and httpcore's stream objects: 39 objects;
* a tenacity ``AsyncRetrying`` keeps its last iteration's actions (its own bound methods)
  in its ``iter_state``; driven with ``async for`` it also keeps a ``RetryCallState``
  that points back at it: 33 objects.

Once a response is closed and a retrying object has returned, neither is used again:
these functions break the cycles, and reference counting frees the rest at once.
"""

from __future__ import annotations

import httpx
from tenacity import AsyncRetrying

__all__ = ["release_response", "release_retrying"]

_SPENT = httpx.ByteStream(b"")
"""What a closed response's stream is replaced with (an empty body, no back-reference)."""


def release_response(response: httpx.Response) -> None:
    """Drop a closed response's stream, which points back at the response.

    Its ``content`` (read before it was closed), status and headers are kept.
    """
    response.stream = _SPENT


def release_retrying(retrying: AsyncRetrying) -> None:
    """Clear a finished ``AsyncRetrying``'s iteration state (its own bound methods).

    Only for one called as ``await retrying(fn)``: its call state is then a local.
    """
    retrying.iter_state.reset()
