"""An SSE event's data is decoded like a JSON body: orjson where exact, else json, else text."""

from __future__ import annotations

import math

from prefect_agent_runs.backends.sse import decode_data


def test_event_data_decodes_exactly_and_never_raises() -> None:
    assert decode_data("") is None
    assert decode_data('{"id": "run_1", "status": "completed"}') == {
        "id": "run_1",
        "status": "completed",
    }
    big = 2**70 + 1  # orjson would read it as a float
    assert decode_data(f'{{"n": {big}}}') == {"n": big}
    assert math.isnan(decode_data('{"x": NaN}')["x"])  # json reads what orjson refuses
    assert decode_data("[DONE]") == "[DONE]"  # not JSON: the text itself


def test_repeated_keys_share_one_string_between_events() -> None:
    first = decode_data('{"created_at": 1, "thread_id": "t"}')
    second = decode_data('{"created_at": 2, "thread_id": "u"}')
    a = next(k for k in first if k == "created_at")
    b = next(k for k in second if k == "created_at")
    assert a is b
