"""Streams from config: validated by the connector's model, one line naming the key."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, Field

from service.config import Settings
from service.connectors import REGISTRY, Connector, StreamSpec
from service.connectors.base import field_value
from service.engine.runtime import check_streams
from service.errors import ConfigError


class QueryOptions(BaseModel):
    model_config = {"extra": "forbid"}
    query: str = Field(min_length=1)
    key: str = "Id"
    limit: int = Field(default=100, ge=1, le=500)


class QueryConnector(Connector):
    vendor = "imis"
    stream_specs = (StreamSpec("Party", "PartyId", "UpdatedOn"),)
    stream_options = QueryOptions

    @classmethod
    def configured_spec(cls, stream: str, options: BaseModel) -> StreamSpec:
        assert isinstance(options, QueryOptions)
        return StreamSpec(stream, options.key)


@pytest.fixture
def connector(monkeypatch: pytest.MonkeyPatch) -> type[QueryConnector]:
    monkeypatch.setitem(REGISTRY, "imis", QueryConnector)
    return QueryConnector


def settings(streams: dict[str, Any]) -> Settings:
    return Settings(
        vendors={"imis": {"base_url": "http://127.0.0.1:9", "streams": streams}},
    )


def test_configured_streams_are_validated_by_the_connector_model(
    connector: type[QueryConnector],
) -> None:
    check_streams(settings({"Party": {}, "Members": {"options": {"query": "$/Members"}}}))
    with pytest.raises(ConfigError) as info:
        check_streams(settings({"Members": {"options": {"query": ""}}}))
    assert str(info.value).startswith("vendors.imis.streams.Members.options.query: ")
    with pytest.raises(ConfigError) as info:
        check_streams(settings({"Members": {"options": {"query": "q", "limit": 9999}}}))
    assert "vendors.imis.streams.Members.options.limit" in str(info.value)
    with pytest.raises(ConfigError, match=r"options.colour: Extra inputs"):
        check_streams(settings({"Members": {"options": {"query": "q", "colour": "red"}}}))


def test_a_connector_without_a_model_serves_only_its_declared_streams() -> None:
    with pytest.raises(ConfigError, match="aimsio has no stream 'Nope'"):
        check_streams(
            Settings(
                vendors={
                    "aimsio": {
                        "base_url": "http://127.0.0.1:9",
                        "auth": {"kind": "basic", "username": "u", "password": "p"},
                        "streams": {"Nope": {}},
                    }
                }
            )
        )


def test_spec_fields_read_payloads() -> None:
    spec = StreamSpec("User", "guid|id", "meta.updatedAt")
    assert spec.key_of({"guid": "g-1", "id": 5}) == "g-1"
    assert spec.key_of({"id": 5}) == "5"
    assert spec.key_of({"name": "x"}) is None
    assert spec.cursor_of({"meta": {"updatedAt": 17}}) == "17"
    assert spec.cursor_of({"meta": None}) is None
    assert field_value({"a": {"b": {"c": 0}}}, "a.b.c") == 0


def test_every_stream_problem_is_reported(connector: type[QueryConnector]) -> None:
    from service.config import ConfigProblems

    with pytest.raises(ConfigProblems) as info:
        check_streams(settings({"A": {"options": {}}, "B": {"options": {"query": "q", "x": 1}}}))
    keys = [p.key for p in info.value.problems]
    assert keys == ["vendors.imis.streams.A.options.query", "vendors.imis.streams.B.options.x"]
