"""What a batch keeps of each item, with the parts that repeat from item to item kept once.

A batch holds every item's outcome until it returns (``BatchResult.outcomes``), so an
outcome's size is the batch's memory per item. Measured on the Assistants emulator, one
outcome (a :class:`~prefect_agent_runs.models.RunOutcome`, its ``Run`` and its
``ThreadResult``) was 8.0 KB, and much of it was the same from item to item:

* **pydantic's set of the fields set** (``model_fields_set``), one per model instance: 728
  bytes once it holds five names, three per outcome (2.2 KB). A batch's outcomes have a
  handful of distinct ones. :meth:`Compactor.outcome` swaps each for a shared
  :class:`SharedNames`; a model that changes later takes a set of its own first
  (:func:`own_fields_set`, called by the models that can change).
* **The scalars of the server's JSON.** Decoding makes a new object for every string and
  int (and the models a datetime for each timestamp): each item has its own
  ``"completed"``, ``"thread.run"``, assistant id, model name and timestamps.
  :meth:`Compactor.outcome` replaces each short one by an equal object seen before, in place, in ``Run.raw``, ``Run.metadata``,
  ``ThreadResult.messages`` and ``ThreadResult.values``, and in the models' own fields. Equal
  values of one type only (``1`` never stands in for ``True``, nor a time in one zone for
  the same time in another); floats are left alone (``0.0 == -0.0``), and containers are
  never shared, as a caller may change them.

Nothing here changes a value; only which object holds it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from prefect_agent_runs.models import RunOutcome

__all__ = ["Compactor", "SharedNames", "own_fields_set"]

MAX_LENGTH = 64
"""Longer strings are rarely repeated (ids, texts): they are kept as they are."""

MAX_POOLED = 4096
"""Distinct values remembered per type; the memory starts again when it is full."""


def _same(value: Any) -> Any:
    return value


def _same_time(value: datetime) -> Any:
    return (value, value.tzinfo, value.fold)


_KEYS = {str: _same, int: _same, datetime: _same_time}
"""The types whose values are shared, and what makes two of them the same."""


class SharedNames(frozenset[str]):
    """The names of the fields set, shared by model instances; a copy is a set of its own."""

    __slots__ = ()

    def __copy__(self) -> set[str]:  # type: ignore[override]
        return set(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> set[str]:
        return set(self)


def own_fields_set(model: BaseModel) -> None:
    """Give ``model`` a set of field names of its own, before it changes (copy on write)."""
    names = model.__pydantic_fields_set__
    if isinstance(names, SharedNames):
        object.__setattr__(model, "__pydantic_fields_set__", set(names))


class Compactor:
    """Makes a batch's outcomes share what repeats between them (see the module's text).

    One per batch: what it remembers is dropped with it; the outcomes keep their values.
    """

    def __init__(self) -> None:
        self._names: dict[frozenset[str], SharedNames] = {}
        self._pools: dict[type, dict[Any, Any]] = {t: {} for t in _KEYS}

    def outcome(self, outcome: RunOutcome) -> None:
        """Compact one finished outcome, in place."""
        run, result = outcome.run, outcome.result
        self._model(outcome)
        if run is not None:
            self._model(run)
            self._tree(run.raw)
            self._tree(run.metadata)
        if result is not None:
            self._model(result)
            self._tree(result.messages)
            self._tree(result.values)

    def _model(self, model: BaseModel) -> None:
        names = frozenset(model.__pydantic_fields_set__)
        shared = self._names.get(names)
        if shared is None:
            shared = self._names[names] = SharedNames(names)
        object.__setattr__(model, "__pydantic_fields_set__", shared)
        fields = model.__dict__
        for name, value in fields.items():
            fields[name] = self._scalar(value)

    def _scalar(self, value: Any) -> Any:
        kind = type(value)
        pool = self._pools.get(kind)
        if pool is None or (kind is str and len(value) > MAX_LENGTH):
            return value
        key = _KEYS[kind](value)
        kept = pool.get(key)
        if kept is not None:
            return kept
        if len(pool) >= MAX_POOLED:
            pool.clear()
        pool[key] = value
        return value

    def _tree(self, tree: Any) -> None:
        """Share the scalars of a decoded JSON document (dicts and lists), in place."""
        stack = [tree]
        while stack:
            node = stack.pop()
            if type(node) is dict:
                for key, value in node.items():
                    if type(value) in (dict, list):
                        stack.append(value)
                    else:
                        node[key] = self._scalar(value)
            elif type(node) is list:
                for i, value in enumerate(node):
                    if type(value) in (dict, list):
                        stack.append(value)
                    else:
                        node[i] = self._scalar(value)
