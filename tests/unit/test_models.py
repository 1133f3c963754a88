"""Plain data rules: which records the staging database can hold."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.models import _has_nul, _walk_has_nul, unstorable_reason

TEXT = st.text(alphabet=st.sampled_from(["a", "\x00", "\\", "u", "0", "é", "\n"]), max_size=8)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSONISH)
def test_the_fast_nul_check_agrees_with_the_walk(value: Any) -> None:
    assert _has_nul(value) == _walk_has_nul(value)


def test_nul_anywhere_is_found_and_look_alikes_are_not() -> None:
    assert _has_nul({"a": "x\x00"})
    assert _has_nul({"a\x00": 1})  # a key
    assert _has_nul({1: "\x00"})  # a non-string key
    assert _has_nul({"big": 2**70, "b": "\x00"})  # what orjson refuses: the walk decides
    assert not _has_nul({"a": "\\u0000"})  # a backslash, then u0000: six characters
    assert not _has_nul({"big": 2**70})
    deep: Any = "\x00"
    for _ in range(1000):  # deeper than orjson nests
        deep = [deep]
    assert _has_nul(deep)


def test_unstorable_reason_names_the_nul() -> None:
    assert unstorable_reason("k", None, {"a": 1}) is None
    assert "NUL" in (unstorable_reason("k\x00", None, {}) or "")
    assert "NUL" in (unstorable_reason("k", "2026\x00", {}) or "")
