"""Pure parsing and policy of the AIMMS PRO connector, on recorded shapes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.connectors.aimms import (
    AimmsConnector,
    changed_tasks,
    keyed,
    parse_listing,
)
from service.connectors.aimms_tasks import (
    BodyFrom,
    ExchangeOptions,
    csv_rows,
    licence_blocked,
    line_complete,
    parse_created,
    parse_task,
    response_rows,
    staged_body,
    task_status,
)
from service.errors import FatalError, ParseError

TASK = {
    "id": "39cef818-ad0c-4016-89b5-44411ea33b83",
    "appName": "SupplyPlanner",
    "appVersion": "1.1",
    "serviceName": "solve",
    "state": "failed",
    "createdAt": "2026-01-01T00:00:00Z",
    "queueTime": 0.1,
    "runTime": 2.0,
    "returnCode": -1,
    "errorMessage": "Model error",
    "scheduleFor": None,
    "scheduleInterval": None,
    "groupIndex": None,
}


def test_task_states_map_to_job_status() -> None:
    failed = task_status(parse_task(TASK))
    assert failed.failed
    assert failed.error == "Model error"
    done = task_status(parse_task({**TASK, "state": "completed", "errorMessage": None}))
    assert done.done
    assert not done.failed
    for state in ("queued", "assigned", "running", "solving"):
        status = task_status(parse_task({**TASK, "state": state}))
        assert not status.done
        assert not status.failed


@pytest.mark.parametrize(
    "body", [None, [], {"id": "x"}, {"state": "queued"}, {"id": "", "state": "q"}]
)
def test_a_task_object_we_do_not_understand_is_a_parse_error(body: object) -> None:
    with pytest.raises(ParseError):
        parse_task(body)


def test_create_answer() -> None:
    assert parse_created({"id": TASK["id"]}) == TASK["id"]
    with pytest.raises(ParseError):
        parse_created({"taskId": "x"})


def test_licence_is_blocked_only_when_nothing_else_runs() -> None:
    assert licence_blocked("queued", 120, 120, 0)
    assert not licence_blocked("queued", 120, 120, 1)  # waiting behind another task
    assert not licence_blocked("queued", 119, 120, 0)
    assert not licence_blocked("running", 500, 120, 0)


def test_response_rows() -> None:
    assert response_rows([{"id": 1}], None) == [{"id": 1}]
    assert response_rows({"result": {"rows": [{"id": 2}]}}, "result.rows") == [{"id": 2}]
    assert response_rows({"status": "optimal"}, None) == [{"status": "optimal"}]
    with pytest.raises(ParseError, match="at 'rows'"):
        response_rows({"rows": "nope"}, "rows")
    with pytest.raises(ParseError):
        response_rows([1, 2], None)


def test_csv_rows_keep_the_header_across_chunks_and_quoted_newlines() -> None:
    header, first = csv_rows(None, ["a,b\n", "1,x\n"])
    assert header == ["a", "b"]
    assert first == [{"a": "1", "b": "x"}]
    _, second = csv_rows(header, ['2,"y\nz"\n', "\n"])
    assert second == [{"a": "2", "b": "y\nz"}]
    assert not line_complete('3,"open\n')
    assert line_complete('3,"open\nclosed"\n')


def test_listings_and_keys() -> None:
    versions = parse_listing("aimms_versions", {"versions": [{"id": "4.96"}]})
    assert [r.key for r in keyed("aimms_versions", versions)] == ["4.96"]
    apps = [{"projectName": "A", "projectVersion": "1.0", "isLatest": True}]
    assert [r.key for r in keyed("applications", apps)] == ["A/1.0"]
    runs = [{**TASK, "groupIndex": 3, "state": "queued"}, {**TASK, "id": "b"}]
    recs = keyed("tasks", runs)
    assert [(r.key, r.cursor) for r in recs] == [(f"{TASK['id']}#3", "queued"), ("b", "failed")]
    with pytest.raises(ParseError, match="no key"):
        keyed("users", [{"name": "no id"}])
    with pytest.raises(ParseError):
        parse_listing("users", {"message": "oops"})


def test_task_history_stages_new_ids_and_state_changes() -> None:
    recs = keyed(
        "tasks",
        [
            {**TASK, "id": i, "state": s}
            for i, s in (("a", "queued"), ("b", "completed"), ("c", "running"))
        ],
    )
    staged = {"a": "queued", "b": "running"}
    assert [r.key for r in changed_tasks(recs, staged)] == ["b", "c"]


def test_exchange_options_are_validated_at_config_time() -> None:
    good = {"app": "SupplyPlanner", "service": "export_users", "key": "id"}
    opts = AimmsConnector.check_stream("export", good)
    assert isinstance(opts, ExchangeOptions)
    assert opts.create_path() == "/pro-api/v2/tasks/SupplyPlanner/export_users"
    pinned = ExchangeOptions.model_validate({**good, "version": "1.0"})
    assert pinned.create_path() == "/pro-api/v2/tasks/SupplyPlanner/1.0/export_users"
    with pytest.raises(ValidationError, match="key"):
        AimmsConnector.check_stream("export", {"app": "A", "service": "s"})
    with pytest.raises(ValidationError):
        AimmsConnector.check_stream("export", {**good, "format": "xml"})
    with pytest.raises(ValidationError):
        AimmsConnector.check_stream("export", {**good, "poll_min_s": 9, "poll_max_s": 1})


def test_staged_body_projects_wraps_and_bounds() -> None:
    rows = {"2": {"id": 2, "name": "b", "x": 1}, "1": {"id": 1, "name": "a", "x": 0}}
    spec = BodyFrom(stream="users", fields=["id", "name"])
    assert staged_body(rows, spec) == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    wrapped = staged_body(rows, BodyFrom(stream="users", wrap="users"))
    assert wrapped == {"users": [rows["1"], rows["2"]]}
    with pytest.raises(FatalError, match="max_rows"):
        staged_body(rows, BodyFrom(stream="users", max_rows=1))
    with pytest.raises(ValidationError, match="either body or body_from"):
        ExchangeOptions.model_validate(
            {"app": "A", "service": "s", "key": "id", "body": [], "body_from": {"stream": "u"}}
        )
