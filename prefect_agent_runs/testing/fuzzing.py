"""Fuzz an emulator's ASGI app with schemathesis from its schema, and count what it finds.

Needs the ``test`` extra (schemathesis). Used by this project's CI for the three emulators;
usable on any ASGI app and OpenAPI document.

For each operation of the document, hypothesis generates ``examples`` cases that fit the
schema and ``examples`` that do not (schemathesis's positive and negative modes); every other case has its path parameters swapped for ids that exist in the
emulator (otherwise nearly every answer would be a 404 and the success paths would go
untested). Each answer is checked with schemathesis's ``not_a_server_error`` and
``response_schema_conformance``. Failures are collected, not raised, so the figures cover the
whole run: the test asserts on them afterwards.

Example:
    ```python
    from prefect_agent_runs.testing import WorkflowRunsEmulator
    from prefect_agent_runs.testing.fuzzing import fuzz
    from prefect_agent_runs.testing.openapi_contract import load_openapi
    from prefect_agent_runs.testing.schemas import LINKAGE_OPENAPI

    report = fuzz("workflow_runs", load_openapi(LINKAGE_OPENAPI), WorkflowRunsEmulator().app)
    assert report.failures == [], report.summary()
    ```
"""

from __future__ import annotations

import collections
import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

__all__ = ["CHECKS", "FuzzReport", "GenerationMode", "fuzz"]

CHECKS = [not_a_server_error, response_schema_conformance]
"""The schemathesis checks applied to every answer."""


@dataclass
class FuzzReport:
    """What one fuzzing run found.

    Attributes:
        emulator: The name given to :func:`fuzz`.
        operations: Operations fuzzed.
        cases: Requests sent.
        statuses: Answers by (operation label, status).
        modes: Requests by generation mode (``positive``, ``negative``).
        unsatisfiable: ``"<mode> <operation>"`` for which no case can be generated (e.g. no
            negative case for an operation without parameters or body).
        failures: ``(operation label, failure type, message)`` per failed check.
    """

    emulator: str
    operations: int = 0
    cases: int = 0
    statuses: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    modes: collections.Counter[str] = field(default_factory=collections.Counter)
    unsatisfiable: list[str] = field(default_factory=list)
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    def failures_by_operation(self) -> collections.Counter[str]:
        """Failed cases per operation label."""
        return collections.Counter(label for label, _, _ in self.failures)

    def summary(self) -> str:
        """One line per figure, for the test log and the docs."""
        ok = sum(n for (_, status), n in self.statuses.items() if status < 400)
        lines = [
            f"{self.emulator}: {self.operations} operations, {self.cases} cases "
            f"({self.modes['positive']} positive, {self.modes['negative']} negative), "
            f"{ok} answered 2xx, {len(self.failures)} check failures"
        ]
        if self.unsatisfiable:
            lines.append(f"  no cases possible: {', '.join(self.unsatisfiable)}")
        for label, kind, message in self.failures[:20]:
            lines.append(f"  FAIL {label}: {kind}: {message[:200]}")
        return "\n".join(lines)


def fuzz(
    name: str,
    document: Mapping[str, Any],
    app: Any,
    *,
    examples: int = 40,
    real_ids: Callable[[], Mapping[str, Sequence[str]]] | None = None,
    headers: Mapping[str, str] | None = None,
    keep: Callable[[str, str], bool] | None = None,
    modes: Sequence[GenerationMode] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
) -> FuzzReport:
    """Fuzz ``app`` from ``document``.

    Args:
        name: The emulator's name (for the report).
        document: The OpenAPI document (copied).
        app: The emulator's ASGI app.
        examples: Cases generated per operation.
        real_ids: Path parameter name -> ids that exist (called before each swapped case).
        headers: Headers sent with every case (e.g. authorization).
        keep: ``(method, path)`` -> whether to fuzz that operation.
        modes: schemathesis generation modes (negative cases are slow to generate on large
            documents such as OpenAI's).

    Returns:
        The report.
    """
    schema = schemathesis.openapi.from_dict(copy.deepcopy(dict(document)))
    report = FuzzReport(name)
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # the document itself is broken here: say where
            raise ValueError(f"{name}: schemathesis cannot read an operation: {result.err()}")
        operations.append(result.ok())
    # deletes last: they would remove the real ids the other operations are given
    operations.sort(key=lambda op: op.method.upper() == "DELETE")
    for operation in operations:
        if keep is not None and not keep(operation.method.upper(), operation.path):
            continue
        report.operations += 1
        for mode in modes:
            _fuzz_operation(operation, mode, app, report, examples, real_ids, headers)
    return report


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    app: Any,
    report: FuzzReport,
    examples: int,
    real_ids: Callable[[], Mapping[str, Sequence[str]]] | None,
    headers: Mapping[str, str] | None,
) -> None:
    counter = [0]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        counter[0] += 1
        if real_ids is not None and counter[0] % 2 == 0 and case.path_parameters:
            ids = real_ids()
            for key in list(case.path_parameters):
                values = ids.get(key)
                if values:
                    case.path_parameters[key] = values[counter[0] // 2 % len(values)]
        response = case.call(app=app, headers=dict(headers or {}))
        report.cases += 1
        report.statuses[(operation.label, response.status_code)] += 1
        report.modes[mode.value] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:  # several checks failed
            for exc in group.exceptions:
                report.failures.append((operation.label, type(exc).__name__, str(exc)))
        except AssertionError as exc:  # one check failed (schemathesis's Failure)
            report.failures.append((operation.label, type(exc).__name__, str(exc)))

    try:
        run()
    except Unsatisfiable:  # nothing in the operation can be made invalid (no parameters)
        report.unsatisfiable.append(f"{mode.value} {operation.label}")
