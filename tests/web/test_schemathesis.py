"""schemathesis against the live server's `/openapi.json` (both backends): generated requests
to every operation, with the admin token (or a write key for tracking), never get a 5xx."""

from __future__ import annotations

from typing import Any

import hypothesis
import schemathesis
from hypothesis import HealthCheck

from closedloop import ingest
from tests.conftest import LiveServer
from tests.helpers import basic

_TRACKING = ("identify", "track", "page", "screen", "group", "alias", "batch", "import")


def test_generated_requests_get_no_server_error(
    live_server: LiveServer, source: ingest.NewSourceKey, admin_headers: dict[str, str]
) -> None:
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    failures: list[str] = []
    statuses: list[int] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        tracking = operation.path.split("/")[-1] in _TRACKING
        auth = basic(source.write_key) if tracking else admin_headers
        _check(operation, auth, live_server, failures, statuses)
    assert operations >= 40
    assert failures == []
    assert len(statuses) >= operations * 3  # it did send requests
    assert {200, 400, 404} <= set(statuses)


def _check(
    operation: Any,
    headers: dict[str, str],
    live_server: LiveServer,
    failures: list[str],
    statuses: list[int],
) -> None:
    @hypothesis.settings(
        max_examples=25,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = case.call(base_url=live_server.url, headers=headers, timeout=30)
        statuses.append(response.status_code)
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:200]}"
            )

    run()
