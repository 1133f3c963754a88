"""Aqua stream options: validated at config time, one line naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from service.config import ConfigProblems, Settings
from service.connectors.aqua import AquaStream
from service.engine.runtime import check_streams
from service.errors import ConfigError


def settings(options: dict[str, Any]) -> Settings:
    return Settings(
        vendors={
            "aqua": {
                "base_url": "http://127.0.0.1:9/aqua",
                "auth": {"kind": "bearer", "token": "t"},
                "streams": {"Orders": {"options": options}},
            }
        }
    )


def test_defaults_and_spellings() -> None:
    opts = AquaStream.model_validate(
        {"source": "Orders", "view": "Open Orders", "format": "JSON", "scope": "public"}
    )
    assert (opts.format, opts.scope, opts.key, opts.wire) == ("json", "Public", (), "seed")
    assert AquaStream.model_validate({"source": "a", "view": "b", "key": "Order No"}).key == (
        "Order No",
    )
    assert AquaStream.model_validate({"source": "a", "view": "b"}).format == "csv"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"view": "Open Orders"}, "options.source"),
        ({"source": "Orders"}, "options.view"),
        ({"source": "Orders", "view": "v", "format": "xml"}, "options.format"),
        ({"source": "Orders", "view": "v", "scope": "Everyone"}, "options.scope"),
        ({"source": "Orders", "view": "v", "wire": "soap"}, "options.wire"),
        ({"source": "Orders", "view": "v", "key": [""]}, "options.key"),
        ({"source": "Orders", "view": "v", "poll_min_s": 0}, "options.poll_min_s"),
        ({"source": "Orders", "view": "v", "colour": 1}, "options.colour"),
    ],
)
def test_a_bad_option_is_one_line_naming_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_streams(settings(options))
    problems = info.value.problems if isinstance(info.value, ConfigProblems) else [info.value]
    assert len(problems) == 1
    text = str(problems[0])
    assert text.startswith(f"vendors.aqua.streams.Orders.{key}")
    assert "\n" not in text


def test_poll_min_above_max_is_refused() -> None:
    with pytest.raises(ConfigError, match="poll_min_s must not exceed poll_max_s"):
        check_streams(settings({"source": "a", "view": "b", "poll_min_s": 9, "poll_max_s": 2}))
