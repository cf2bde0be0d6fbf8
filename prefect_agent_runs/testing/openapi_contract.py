"""Check request and response bodies against a published OpenAPI document.

Used by the emulator tests (and reusable by backend tests) to keep the emulators honest:
every body they answer must match the platform's own schema.

Example:
    ```python
    contract = OpenApiContract("openai-openapi.yaml")
    contract.validate_response("GET", "/threads/{thread_id}/runs/{run_id}", 200, run_json)
    contract.validate_request("POST", "/threads/{thread_id}/runs", {"assistant_id": "asst_1"})
    ```

Notes:
    OpenAPI 3.0's ``nullable: true`` (which the OpenAI document still uses inside a 3.1
    document) is rewritten to JSON Schema ``anyOf [..., null]`` before validation.
    Operations that list no schema for an error status (the OpenAI document lists only 200
    and 429) are checked against ``error_schema`` for every status >= 400.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped,unused-ignore]
import referencing
import referencing.jsonschema
import yaml  # type: ignore[import-untyped,unused-ignore]

__all__ = [
    "OPENAI_LIVE_API_PATCHES",
    "ContractViolation",
    "OpenApiContract",
    "load_openapi",
    "openai_nullable_list_ids",
]

_BASE_URI = "urn:openapi-contract:document"
_METHODS = ("get", "post", "put", "patch", "delete")

Patch = Callable[[dict[str, Any]], None]


class ContractViolation(AssertionError):
    """A body does not match the OpenAPI schema (an ``AssertionError`` for pytest)."""


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime: float) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as fh:
        if path.endswith(".json"):
            doc: dict[str, Any] = json.load(fh)
        else:
            doc = yaml.load(fh, Loader=loader)
    return _fix_nullable(doc)  # type: ignore[no-any-return]


def load_openapi(path: str | Path) -> dict[str, Any]:
    """Load an OpenAPI document (YAML or JSON), cached per path and mtime.

    ``nullable: true`` is rewritten to JSON Schema. The returned object is shared:
    do not mutate it (``OpenApiContract`` copies it before applying patches).

    Args:
        path: The document's file path.

    Returns:
        The parsed document.

    Raises:
        FileNotFoundError: If the file does not exist.
    """
    p = Path(path).resolve()
    if not p.is_file():
        raise FileNotFoundError(f"OpenAPI document not found: {p}")
    return _load_cached(str(p), p.stat().st_mtime)


def _fix_nullable(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 ``nullable`` into JSON Schema 2020-12, recursively."""
    if isinstance(node, list):
        return [_fix_nullable(x) for x in node]
    if not isinstance(node, dict):
        return node
    all_of = node.get("allOf")
    if isinstance(all_of, list) and {"nullable": True} in all_of:
        # OpenAI writes "nullable $ref" as allOf: [{$ref}, {nullable: true}]
        rest = [x for x in all_of if x != {"nullable": True}]
        node = {k: v for k, v in node.items() if k != "allOf"}
        nullable_all = {"anyOf": [{"allOf": rest}, {"type": "null"}]}
        node = {**node, "allOf": [nullable_all]} if "anyOf" in node else {**node, **nullable_all}
    out = {k: _fix_nullable(v) for k, v in node.items()}
    if isinstance(out.get("nullable"), bool):
        nullable = out.pop("nullable")
        if nullable:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class OpenApiContract:
    """Validate bodies against the request and response schemas of an OpenAPI document.

    Args:
        path: The OpenAPI document (YAML or JSON).
        error_schema: Component schema used for error statuses the operation does not list.
        patches: Callables applied to a private copy of the document before use, to record
            known, deliberate deviations between the document and the live API.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        error_schema: str = "ErrorResponse",
        patches: Iterable[Patch] = (),
    ) -> None:
        doc = load_openapi(path)
        patches = list(patches)
        if patches:
            doc = copy.deepcopy(doc)
            for patch in patches:
                patch(doc)
        self.document: dict[str, Any] = doc
        self.error_schema = error_schema
        resource = referencing.Resource.from_contents(
            doc, default_specification=referencing.jsonschema.DRAFT202012
        )
        self._registry: referencing.Registry[Any] = referencing.Registry().with_resource(
            _BASE_URI, resource
        )
        self._validators: dict[str, jsonschema.Draft202012Validator] = {}
        self._templates = sorted(doc.get("paths", {}), key=lambda t: (t.count("{"), -len(t)))
        self._template_res = [
            (t, re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(t)) + "$"))
            for t in self._templates
        ]

    # -- lookups -----------------------------------------------------------------------

    def match_path(self, path: str, prefixes: Iterable[str] = ("/v1", "/openai")) -> str | None:
        """Map a concrete request path to the document's path template.

        Args:
            path: e.g. ``/v1/threads/thread_abc/runs``.
            prefixes: Leading segments to strip first (the server's base path).

        Returns:
            The template (e.g. ``/threads/{thread_id}/runs``) or ``None``.
        """
        for prefix in prefixes:
            if prefix and path.startswith(prefix + "/"):
                path = path[len(prefix) :]
                break
        for template, regex in self._template_res:
            if regex.match(path):
                return str(template)
        return None

    def _operation(self, method: str, path_template: str) -> dict[str, Any]:
        paths = self.document.get("paths", {})
        if path_template not in paths:
            raise KeyError(f"path {path_template!r} is not in the OpenAPI document")
        op = paths[path_template].get(method.lower())
        if op is None:
            raise KeyError(f"{method.upper()} {path_template} is not in the OpenAPI document")
        return op  # type: ignore[no-any-return]

    def _deref(self, obj: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        ref = obj.get("$ref")
        if not isinstance(ref, str):
            return obj, None
        target: Any = self.document
        for part in ref.lstrip("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return target, ref.lstrip("#")

    def _validator(self, pointer: str) -> jsonschema.Draft202012Validator:
        validator = self._validators.get(pointer)
        if validator is None:
            validator = jsonschema.Draft202012Validator(
                {"$ref": f"{_BASE_URI}#{pointer}"}, registry=self._registry
            )
            self._validators[pointer] = validator
        return validator

    def response_schema_pointer(self, method: str, path_template: str, status: int) -> str:
        """The JSON pointer of the response schema for one operation and status.

        Args:
            method: HTTP method.
            path_template: Path template as in the document.
            status: HTTP status code.

        Returns:
            A JSON pointer into the document.

        Raises:
            KeyError: If the document has no JSON schema for that status (and it is not an error).
        """
        op = self._operation(method, path_template)
        responses = op.get("responses", {})
        key = str(status)
        if key not in responses and f"{key[0]}XX" in responses:
            key = f"{key[0]}XX"
        if key in responses:
            resp, ref = self._deref(responses[key])
            base = ref or "/" + _pointer("paths", path_template, method.lower(), "responses", key)
            if "application/json" in resp.get("content", {}):
                return f"{base}/{_pointer('content', 'application/json', 'schema')}"
        if status >= 400:
            return "/" + _pointer("components", "schemas", self.error_schema)
        raise KeyError(f"no JSON response schema for {method.upper()} {path_template} {status}")

    def component_pointer(self, name: str) -> str:
        """The JSON pointer of ``components/schemas/<name>``.

        Args:
            name: Component schema name.

        Returns:
            A JSON pointer into the document.
        """
        if name not in self.document.get("components", {}).get("schemas", {}):
            raise KeyError(f"schema {name!r} is not in the OpenAPI document")
        return "/" + _pointer("components", "schemas", name)

    # -- validation --------------------------------------------------------------------

    def _check(self, pointer: str, body: Any, what: str) -> None:
        errors = sorted(self._validator(pointer).iter_errors(body), key=lambda e: list(e.path))
        if errors:
            lines = [
                f"  at {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
                for e in errors[:10]
            ]
            raise ContractViolation(
                f"{what} does not match {pointer}:\n"
                + "\n".join(lines)
                + f"\nbody: {json.dumps(body)[:1500]}"
            )

    def validate_response(self, method: str, path_template: str, status: int, body: Any) -> None:
        """Validate a JSON response body.

        Args:
            method: HTTP method.
            path_template: Path template as in the document (see :meth:`match_path`).
            status: HTTP status of the response.
            body: The decoded JSON body.

        Raises:
            ContractViolation: If the body does not match.
        """
        pointer = self.response_schema_pointer(method, path_template, status)
        self._check(pointer, body, f"response to {method.upper()} {path_template} ({status})")

    def validate_request(self, method: str, path_template: str, body: Any) -> None:
        """Validate a JSON request body.

        Args:
            method: HTTP method.
            path_template: Path template as in the document.
            body: The JSON body sent.

        Raises:
            ContractViolation: If the body does not match.
            KeyError: If the operation takes no JSON body.
        """
        op = self._operation(method, path_template)
        request_body, ref = self._deref(op.get("requestBody", {}))
        if "application/json" not in request_body.get("content", {}):
            raise KeyError(f"{method.upper()} {path_template} takes no JSON request body")
        base = ref or "/" + _pointer("paths", path_template, method.lower(), "requestBody")
        pointer = f"{base}/{_pointer('content', 'application/json', 'schema')}"
        self._check(pointer, body, f"request {method.upper()} {path_template}")

    def validate_component(self, name: str, body: Any) -> None:
        """Validate a body against ``components/schemas/<name>``.

        Args:
            name: Component schema name, e.g. ``RunObject``.
            body: The JSON value.

        Raises:
            ContractViolation: If the body does not match.
        """
        self._check(self.component_pointer(name), body, name)


def openai_nullable_list_ids(document: dict[str, Any]) -> None:
    """Patch: allow ``first_id`` / ``last_id`` to be ``null`` in OpenAI list responses.

    The document types them as required strings, but the live API (and its SDKs) answer
    ``null`` for both on an empty page, which has no first or last item.

    Args:
        document: The OpenAPI document to patch in place.
    """
    schemas = document.get("components", {}).get("schemas", {})
    for name, schema in schemas.items():
        if not (name.startswith("List") and name.endswith("Response")):
            continue
        props = schema.get("properties", {})
        for key in ("first_id", "last_id"):
            if key in props:
                props[key] = {"anyOf": [props[key], {"type": "null"}]}


OPENAI_LIVE_API_PATCHES: tuple[Patch, ...] = (openai_nullable_list_ids,)
"""Known, deliberate differences between the OpenAI document and the live API."""
