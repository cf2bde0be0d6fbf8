"""Pages of a list, and one pager per wire format of paging (offset, cursor).

Every ``list_*`` of every backend answers a :class:`PageRequest`: ``await`` it for the
first :class:`Page`, or iterate it over every item of every page (the seeds'
``PagePromise``). A backend writes no paging loop: it gives a pager one ``fetch`` of one
page and the pager follows the pages.

* :class:`OffsetPager`: ``limit`` + ``offset`` (LangGraph's lists and thread search);
  a page shorter than ``limit`` is the last.
* :class:`CursorPager`: an opaque cursor per page (the Assistants API's ``after`` /
  ``before`` ids, Linkage's ``nextCursor``); the fetch says where the next page starts.
  A server whose cursor does not advance (a page of ids already seen) stops the paging
  with a warning instead of looping.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar

__all__ = ["Chunk", "CursorPager", "OffsetPager", "Page", "PageRequest", "paged"]

logger = logging.getLogger("prefect_agent_runs.backends.paging")

T = TypeVar("T")
P = ParamSpec("P")


class Page(Generic[T]):
    """One page of a list; async-iterable over every item of every following page.

    Args:
        items: The items of this page.
        fetch_next: Fetches the next page, or None when this is the last one.
    """

    def __init__(
        self,
        items: Sequence[T],
        fetch_next: Callable[[], Awaitable[Page[T]]] | None,
    ) -> None:
        self.items: list[T] = list(items)
        self._fetch_next = fetch_next

    def __repr__(self) -> str:
        return f"Page(items={len(self.items)}, has_next_page={self.has_next_page()})"

    def has_next_page(self) -> bool:
        """True when another page may follow."""
        return self._fetch_next is not None

    async def next_page(self) -> Page[T]:
        """Fetch the next page (the seed's ``next()``).

        Raises:
            StopAsyncIteration: There is no next page.
        """
        if self._fetch_next is None:
            raise StopAsyncIteration("no next page")
        return await self._fetch_next()

    async def iter_pages(self) -> AsyncIterator[Page[T]]:
        """This page, then each following page."""
        page: Page[T] = self
        while True:
            yield page
            if not page.has_next_page():
                return
            page = await page.next_page()

    async def __aiter__(self) -> AsyncIterator[T]:
        async for page in self.iter_pages():
            for item in page.items:
                yield item

    async def get_all(self, *, max_items: int | None = None) -> list[T]:
        """Every item from this page on (the seed's ``getAll()``).

        Args:
            max_items: Stop after this many items.
        """
        out: list[T] = []
        async for item in self:
            out.append(item)
            if max_items is not None and len(out) >= max_items:
                break
        return out


class PageRequest(Generic[T]):
    """A list call not yet sent: ``await`` it for the first :class:`Page`, or iterate it.

    Like the seeds' ``PagePromise``: ``async for run in client.list_runs(...)`` walks every
    page, ``await client.list_runs(...)`` gives the first page, and
    ``await client.list_runs(...).get_all()`` reads them all.
    """

    def __init__(self, fetch_first: Callable[[], Awaitable[Page[T]]]) -> None:
        self._fetch_first = fetch_first

    def __await__(self) -> Generator[Any, None, Page[T]]:
        return self._fetch_first().__await__()

    async def __aiter__(self) -> AsyncIterator[T]:
        page = await self._fetch_first()
        async for item in page:
            yield item

    async def get_all(self, *, max_items: int | None = None) -> list[T]:
        """Every item of every page (see :meth:`Page.get_all`)."""
        page = await self._fetch_first()
        return await page.get_all(max_items=max_items)


def paged(fn: Callable[P, Awaitable[Page[T]]]) -> Callable[P, PageRequest[T]]:
    """Turn ``async def list_x(...) -> Page`` into ``def list_x(...) -> PageRequest``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> PageRequest[T]:
        return PageRequest(lambda: fn(*args, **kwargs))

    return wrapper


class OffsetPager(Generic[T]):
    """Pages of a ``limit`` / ``offset`` list.

    Args:
        fetch: Reads one page: called with (offset, limit), returns its items.
        limit: Items per page; a page with fewer is the last.
        offset: Where the first page starts.

    Examples:
        ```python
        async def fetch(offset: int, limit: int) -> list[Run]:
            body = await transport.request_json("GET", "/runs", params={...})
            return [to_run(x) for x in body]

        page = await OffsetPager(fetch, limit=50).first()
        ```
    """

    def __init__(
        self,
        fetch: Callable[[int, int], Awaitable[Sequence[T]]],
        *,
        limit: int,
        offset: int = 0,
    ) -> None:
        self.fetch = fetch
        self.limit = limit
        self.offset = offset

    async def first(self) -> Page[T]:
        """The first page (following pages come through :meth:`Page.next_page`)."""
        return await self._page(self.offset)

    async def _page(self, at: int) -> Page[T]:
        items = list(await self.fetch(at, self.limit))
        more = len(items) >= self.limit > 0

        async def next_page() -> Page[T]:
            return await self._page(at + len(items))

        return Page(items, next_page if more else None)


@dataclass(frozen=True)
class Chunk(Generic[T]):
    """What one fetch of a cursor-paged list answered.

    Attributes:
        items: The page's items.
        next_cursor: Where the next page starts; None on the last page.
    """

    items: Sequence[T]
    next_cursor: str | None


class CursorPager(Generic[T]):
    """Pages of a list paged by an opaque cursor.

    Args:
        fetch: Reads one page: called with the cursor (None for the start given by the
            caller's own parameters), returns its :class:`Chunk`.
        item_id: The id of an item, used to drop items a repeated cursor sends again.
        cursor: The first page's cursor.
        description: What is listed, for the warning when the cursor does not advance.
    """

    def __init__(
        self,
        fetch: Callable[[str | None], Awaitable[Chunk[T]]],
        *,
        item_id: Callable[[T], Hashable],
        cursor: str | None = None,
        description: str = "list",
    ) -> None:
        self.fetch = fetch
        self.item_id = item_id
        self.cursor = cursor
        self.description = description

    async def first(self) -> Page[T]:
        """The first page (following pages come through :meth:`Page.next_page`)."""
        return await self._page(self.cursor, frozenset())

    async def _page(self, cursor: str | None, seen: frozenset[Hashable]) -> Page[T]:
        chunk = await self.fetch(cursor)
        items = list(chunk.items)
        fresh = [x for x in items if self.item_id(x) not in seen]
        if items and not fresh:
            logger.warning(
                "%s: the server sent a page of %d ids already seen; stopping (its cursors do "
                "not advance)",
                self.description,
                len(items),
            )
            return Page([], None)
        seen = seen | {self.item_id(x) for x in fresh}
        following = chunk.next_cursor if items else None

        async def next_page() -> Page[T]:
            return await self._page(following, seen)

        return Page(fresh, next_page if following else None)
