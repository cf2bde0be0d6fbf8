"""Request checks of the Assistants emulator: what the real API refuses with a 400.

The shapes follow OpenAI's published OpenAPI document (``CreateThreadRequest``,
``ModifyThreadRequest``, ``CreateAssistantRequest``, ``CreateThreadAndRunRequest``
``tool_resources``; ``CreateMessageRequest`` ``attachments``). Before these checks the
emulator accepted any ``tool_resources`` or ``attachments`` and echoed them back, which
schemathesis found (issue 14).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "check_attachments",
    "check_metadata",
    "check_tool_resources",
    "error_body",
]

MAX_CODE_INTERPRETER_FILES = 20
MAX_VECTOR_STORES = 1
_ATTACHMENT_TOOLS = frozenset({"code_interpreter", "file_search"})


def error_body(
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error body.

    Args:
        message: What went wrong.
        type: The error type.
        param: The request parameter at fault.
        code: The error code.
    """
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class ApiError(Exception):
    """An error answer of the emulator (status and OpenAI's error body).

    Args:
        status: The HTTP status.
        message: What went wrong.
        type: The error type.
        param: The request parameter at fault.
        code: The error code.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, type, param, code)


def _invalid_type(param: str, expected: str, value: Any) -> ApiError:
    got = "null" if value is None else type(value).__name__
    return ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        param=param,
        code="invalid_type",
    )


def _string_list(value: Any, param: str, *, max_items: int | None = None) -> list[str]:
    if not isinstance(value, list):
        raise _invalid_type(param, "an array of strings", value)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _invalid_type(f"{param}[{i}]", "a string", item)
    if max_items is not None and len(value) > max_items:
        raise ApiError(
            400,
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{max_items}, but got an array with length {len(value)} instead.",
            param=param,
            code="array_above_max_length",
        )
    return list(value)


def check_metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    """Metadata as the API accepts it: at most 16 string values, short keys.

    Args:
        value: The request's metadata (None: empty).
        param: Its name in the request.

    Raises:
        ApiError: 400, naming the parameter.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, f"Invalid type for '{param}': expected an object.", param=param)
    if len(value) > 16:
        raise ApiError(400, f"Invalid '{param}': too many properties (max 16).", param=param)
    for key, val in value.items():
        if len(key) > 64:
            raise ApiError(400, f"Invalid '{param}': key longer than 64.", param=param)
        if not isinstance(val, str) or len(val) > 512:
            raise ApiError(
                400,
                f"Invalid '{param}.{key}': expected a string of at most 512 characters.",
                param=f"{param}.{key}",
            )
    return dict(value)


def _check_chunking(value: Any, param: str) -> None:
    if not isinstance(value, dict):
        raise _invalid_type(param, "an object", value)
    kind = value.get("type")
    if kind == "auto" and set(value) <= {"type"}:
        return
    if kind == "static" and set(value) <= {"type", "static"}:
        static = value.get("static")
        if not isinstance(static, dict):
            raise _invalid_type(f"{param}.static", "an object", static)
        size, overlap = static.get("max_chunk_size_tokens"), static.get("chunk_overlap_tokens")
        if (
            isinstance(size, int)
            and not isinstance(size, bool)
            and 100 <= size <= 4096
            and isinstance(overlap, int)
            and not isinstance(overlap, bool)
            and 0 <= overlap <= size // 2
            and set(static) <= {"max_chunk_size_tokens", "chunk_overlap_tokens"}
        ):
            return
    raise ApiError(400, f"Invalid '{param}': not a valid chunking strategy.", param=param)


def check_tool_resources(
    value: Any, param: str = "tool_resources", *, vector_store_helpers: bool = False
) -> dict[str, Any]:
    """``tool_resources`` as the API accepts them; refused with a 400 otherwise.

    ``code_interpreter.file_ids``: up to 20 file ids; ``file_search.vector_store_ids``: up
    to one vector store id, or (where ``vector_store_helpers``: creating a thread or an
    assistant) ``file_search.vector_stores``: up to one vector store to create, but not
    both.

    Args:
        value: The request's ``tool_resources`` (None: empty).
        param: Its name in the request.
        vector_store_helpers: Accept ``file_search.vector_stores``.

    Returns:
        The tool resources to store.

    Raises:
        ApiError: 400, naming the parameter at fault.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid_type(param, "an object", value)
    code = value.get("code_interpreter")
    if code is not None:
        if not isinstance(code, dict):
            raise _invalid_type(f"{param}.code_interpreter", "an object", code)
        if "file_ids" in code:
            _string_list(
                code["file_ids"],
                f"{param}.code_interpreter.file_ids",
                max_items=MAX_CODE_INTERPRETER_FILES,
            )
    search = value.get("file_search")
    if search is not None:
        where = f"{param}.file_search"
        if not isinstance(search, dict):
            raise _invalid_type(where, "an object", search)
        if "vector_store_ids" in search:
            _string_list(
                search["vector_store_ids"],
                f"{where}.vector_store_ids",
                max_items=MAX_VECTOR_STORES,
            )
        if "vector_stores" in search:
            if not vector_store_helpers:
                raise ApiError(
                    400,
                    f"Unknown parameter: '{where}.vector_stores'.",
                    param=f"{where}.vector_stores",
                    code="unknown_parameter",
                )
            _check_vector_stores(search["vector_stores"], f"{where}.vector_stores")
        if vector_store_helpers and ("vector_store_ids" in search) == ("vector_stores" in search):
            raise ApiError(
                400,
                f"Invalid '{where}': give exactly one of 'vector_store_ids' and 'vector_stores'.",
                param=where,
            )
    return dict(value)


def _check_vector_stores(value: Any, param: str) -> None:
    if not isinstance(value, list):
        raise _invalid_type(param, "an array", value)
    if len(value) > MAX_VECTOR_STORES:
        raise ApiError(
            400,
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{MAX_VECTOR_STORES}, but got an array with length {len(value)} instead.",
            param=param,
            code="array_above_max_length",
        )
    for i, store in enumerate(value):
        where = f"{param}[{i}]"
        if not isinstance(store, dict):
            raise _invalid_type(where, "an object", store)
        if "file_ids" in store:
            _string_list(store["file_ids"], f"{where}.file_ids")
        if "chunking_strategy" in store:
            _check_chunking(store["chunking_strategy"], f"{where}.chunking_strategy")
        if "metadata" in store:
            check_metadata(store["metadata"], f"{where}.metadata")


def check_attachments(value: Any, param: str = "attachments") -> list[dict[str, Any]]:
    """A message's ``attachments`` as the API accepts them; refused with a 400 otherwise.

    Each attachment has a string ``file_id`` and ``tools``, a list of
    ``{"type": "code_interpreter"}`` / ``{"type": "file_search"}``.

    Args:
        value: The message's attachments (None: none).
        param: Its name in the request.

    Returns:
        The attachments to store.

    Raises:
        ApiError: 400, naming the attachment at fault.
    """
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid_type(param, "an array", value)
    for i, attachment in enumerate(value):
        where = f"{param}[{i}]"
        if not isinstance(attachment, dict):
            raise _invalid_type(where, "an object", attachment)
        for name in ("file_id", "tools"):
            if name not in attachment:
                raise ApiError(
                    400,
                    f"Missing required parameter: '{where}.{name}'.",
                    param=f"{where}.{name}",
                    code="missing_required_parameter",
                )
        if not isinstance(attachment["file_id"], str):
            raise _invalid_type(f"{where}.file_id", "a string", attachment["file_id"])
        tools = attachment["tools"]
        if not isinstance(tools, list):
            raise _invalid_type(f"{where}.tools", "an array", tools)
        for j, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") not in _ATTACHMENT_TOOLS:
                raise ApiError(
                    400,
                    f"Invalid '{where}.tools[{j}]': expected {{'type': 'code_interpreter'}} or "
                    "{'type': 'file_search'}.",
                    param=f"{where}.tools[{j}]",
                    code="invalid_value",
                )
    return [dict(a) for a in value]
