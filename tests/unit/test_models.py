"""Plain data rules: which records the staging database can hold."""

from __future__ import annotations

import math
import random
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from service.models import CANONICAL, _has_nul, _walk_has_nul, canonical_json, unstorable_reason

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


ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**70)
    | st.floats()
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(ANY_JSON)
def test_canonical_text_never_changes_whichever_encoder_writes_it(value: Any) -> None:
    assert canonical_json(value) == CANONICAL.encode(value)


def test_the_fast_encoder_is_trusted_only_with_floats_it_spells_alike() -> None:
    """The bound of ``_orjson_agrees``: every finite float from 1e-4 up, and zero, checked
    over random bit patterns, decimals and integers-as-floats (below it they differ)."""
    rnd = random.Random(7)
    floats = [0.0, -0.0, 1e-4, 9.999999999999999e-05, 1e16, 1e22, 1.7976931348623157e308]
    for i in range(60_000):
        kind = i % 3
        if kind == 0:
            floats.append(struct.unpack("d", struct.pack("Q", rnd.getrandbits(64)))[0])
        elif kind == 1:
            floats.append(rnd.uniform(-1e6, 1e6) * 10 ** rnd.randint(-12, 25))
        else:
            floats.append(
                round(rnd.uniform(-1e3, 1e3), rnd.randint(0, 8)) / 10 ** rnd.randint(0, 8)
            )
    fast = [x for x in floats if math.isfinite(x)]
    assert sum(abs(x) < 1e-4 and x != 0 for x in fast) > 1000  # both sides of the bound seen
    for x in fast:
        payload = {"lat": x, "rows": [x, {"v": x}]}
        assert canonical_json(payload) == CANONICAL.encode(payload), x
    assert canonical_json({"a": 1e-5}) == '{"a":1e-05}'  # where orjson alone would differ
