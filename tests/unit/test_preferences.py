"""The `Prefer` header (RFC 7240) as `POST /generate` reads it."""

from __future__ import annotations

import pytest

from service.preferences import preferences, wait_preference


def test_preferences_of_several_headers_and_elements() -> None:
    found = preferences(['respond-async, Wait = 10; lang="a,b"', 'wait=3, return="min\\"imal", , =x, bad token'])
    # Names are case-insensitive, the first of a repeated one counts, parameters and quoted commas are no elements.
    assert found == {"respond-async": None, "wait": "10", "return": 'min"imal'}


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        (["wait"], 60),
        (["wait="], 60),
        (["wait=5"], 5),
        (['wait="7"'], 7),
        (["wait=3600"], 60),
        (["respond-async, wait=2"], 2),
        (["wait=0"], None),
        (["wait=1.5"], None),
        (["wait=soon"], None),
        (["wait=-1"], None),
        (["wait=٣"], None),  # a digit, but not an ASCII one
        (["respond-async"], None),
        ([], None),
    ],
)
def test_wait_preference(headers: list[str], seconds: int | None) -> None:
    assert wait_preference(headers, 60) == seconds


def test_waits_switched_off() -> None:
    assert wait_preference(["wait=5"], 0) is None
    assert wait_preference(["wait"], 0) is None
