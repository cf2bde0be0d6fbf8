"""Check an emulator's recorded traffic against its platform's published schema.

One function per emulator. Each walks the emulator's ``requests`` and checks both ways:
what the client sent (path, method, query parameters, JSON body where the document models
one) and what the emulator answered (every JSON body against the response schema of its
status; SSE events against the event shape). Usable in users' tests after exercising their
own code against an emulator:

Example:
    ```python
    from prefect_agent_runs.testing import WorkflowRunsEmulator
    from prefect_agent_runs.testing.contracts import check_workflow_runs_traffic

    with WorkflowRunsEmulator() as emu:
        ...  # run the code under test against emu.base_url
    check_workflow_runs_traffic(emu)
    ```
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from prefect_agent_runs.testing.openapi_contract import ContractViolation, OpenApiContract
from prefect_agent_runs.testing.schemas import LINKAGE_OPENAPI, PROJECT_THREADS_SWAGGER

if TYPE_CHECKING:
    from prefect_agent_runs.testing.project_threads import ProjectThreadsEmulator
    from prefect_agent_runs.testing.workflow_runs import WorkflowRunsEmulator

__all__ = [
    "LINKAGE_QUERY_EXTENSIONS",
    "check_project_threads_traffic",
    "check_workflow_runs_traffic",
    "linkage_contract",
    "project_threads_contract",
]

LINKAGE_QUERY_EXTENSIONS = {("GET", "/api/v1/runs"): frozenset({"cursor"})}
"""Query parameters beyond the Linkage document: the list's paging cursor ("optional
pagination" in the operation's description, not modelled as a parameter)."""

_EVENT_KEYS = frozenset({"id", "type", "runId", "workflowId", "data", "createdAt"})


@functools.lru_cache(maxsize=1)
def linkage_contract() -> OpenApiContract:
    """The Linkage document as an :class:`OpenApiContract` (cached)."""
    return OpenApiContract(LINKAGE_OPENAPI)


@functools.lru_cache(maxsize=1)
def project_threads_contract() -> OpenApiContract:
    """The project thread-runs swagger as an :class:`OpenApiContract` (cached)."""
    return OpenApiContract(
        PROJECT_THREADS_SWAGGER, error_schema="Microsoft.AspNetCore.Mvc.ProblemDetails"
    )


def _declared_query(contract: OpenApiContract, method: str, template: str) -> set[str]:
    op = contract.document["paths"][template][method.lower()]
    return {p["name"] for p in op.get("parameters", []) if p.get("in") == "query"}


def _linkage_error(body: Any, what: str) -> None:
    error = body.get("error") if isinstance(body, dict) else None
    if not (isinstance(error, dict) and isinstance(error.get("message"), str)):
        raise ContractViolation(f"{what}: not Linkage's {{error: {{message, details}}}}: {body!r}")


def check_workflow_runs_traffic(emulator: WorkflowRunsEmulator) -> int:
    """Check every exchange an emulator recorded against the Linkage document.

    Requests: the path and method are in the document and every query parameter is one it
    declares (plus :data:`LINKAGE_QUERY_EXTENSIONS`); the document models no request bodies.
    Answers: JSON bodies match the schema of their status where the document has one, and
    otherwise are Linkage's ``{"error": {"message", "details"}}``; SSE events carry an event.

    Args:
        emulator: The emulator whose ``requests`` to check.

    Returns:
        How many checks were made.

    Raises:
        ContractViolation: On the first mismatch.
    """
    contract = linkage_contract()
    checked = 0
    for rec in list(emulator.requests):
        template = contract.match_path(rec.path, prefixes=())
        what = f"{rec.method} {rec.path}"
        if template is None or rec.method.lower() not in contract.document["paths"][template]:
            if rec.status != 404:
                raise ContractViolation(f"{what} is not in the document but answered {rec.status}")
            _linkage_error(rec.response_json, what)
            checked += 1
            continue
        allowed = _declared_query(contract, rec.method, template)
        allowed |= LINKAGE_QUERY_EXTENSIONS.get((rec.method, template), frozenset())
        extra = set(rec.query) - allowed
        if extra:
            raise ContractViolation(f"{what}: query parameters {sorted(extra)} are not declared")
        checked += 1
        if rec.response_json is not None:
            assert rec.status is not None
            responses = contract.document["paths"][template][rec.method.lower()]["responses"]
            if str(rec.status) in responses:
                contract.validate_response(rec.method, template, rec.status, rec.response_json)
            else:  # a status the document does not list: Linkage's generic error body
                _linkage_error(rec.response_json, what)
            checked += 1
        for name, data in rec.stream_events:
            if not (isinstance(data, dict) and set(data) >= _EVENT_KEYS and data["type"] == name):
                raise ContractViolation(f"{what}: SSE event {name!r} is not a run event: {data!r}")
            checked += 1
    return checked


def _team_form(path: str) -> str:
    """Map the documentation's ``/api/projects/{p}/...`` to the swagger's team form."""
    if path.startswith("/api/projects/"):
        return "/api/teams/_/projects/" + path[len("/api/projects/") :]
    return path


def check_project_threads_traffic(emulator: ProjectThreadsEmulator) -> int:
    """Check every exchange an emulator recorded against the project thread-runs swagger.

    Requests: path, method and query parameters are declared; accepted JSON bodies match
    ``RunRequest`` / ``ChatRequest``. Answers: every JSON body matches the schema of its status.
    The short ``/api/projects/{projectId}/...`` form is checked as the swagger's team form.

    Args:
        emulator: The emulator whose ``requests`` to check.

    Returns:
        How many checks were made.

    Raises:
        ContractViolation: On the first mismatch.
    """
    contract = project_threads_contract()
    checked = 0
    for rec in list(emulator.requests):
        template = contract.match_path(_team_form(rec.path), prefixes=())
        what = f"{rec.method} {rec.path}"
        if template is None or rec.method.lower() not in contract.document["paths"][template]:
            if rec.status != 404:
                raise ContractViolation(f"{what} is not in the document but answered {rec.status}")
            contract.validate_component(
                "Microsoft.AspNetCore.Mvc.ProblemDetails", rec.response_json
            )
            checked += 1
            continue
        extra = set(rec.query) - _declared_query(contract, rec.method, template)
        if extra:
            raise ContractViolation(f"{what}: query parameters {sorted(extra)} are not declared")
        accepted = rec.status is not None and (rec.status < 400 or rec.fault is not None)
        if rec.method == "POST" and rec.json is not None and accepted:
            contract.validate_request(rec.method, template, rec.json)
            checked += 1
        if rec.response_json is not None:
            assert rec.status is not None
            contract.validate_response(rec.method, template, rec.status, rec.response_json)
            checked += 1
    return checked
