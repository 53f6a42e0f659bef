"""The docs are part of the feature: every setting, route and command is documented, and the
examples in docs/ run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer.main
import yaml
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from closedloop import ingest
from closedloop.cli import app as cli_app
from closedloop.config import Settings
from closedloop.ingest.importer import CsvMapping, ImportReport, import_file
from closedloop.profiles import process_through
from closedloop.profiles.read import find_profile
from tests.conftest import make_settings
from tests.helpers import basic, stored

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _blocks(text: str, info: str) -> list[str]:
    return re.findall(rf"```{re.escape(info)}\n(.*?)```", text, flags=re.DOTALL)


def _setting_names(model: type[BaseModel], prefix: str) -> set[str]:
    names: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _setting_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def test_every_setting_is_documented_and_nothing_else() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    settings = _setting_names(Settings, "CLOSEDLOOP_")
    documented = set(re.findall(r"`(CLOSEDLOOP_[A-Z_]+)`", text)) - {"CLOSEDLOOP_TEST_POSTGRES_URL"}
    assert settings - documented == set(), "settings missing from docs/configuration.md"
    assert documented - settings == set(), "docs/configuration.md names unknown settings"


def test_every_route_is_documented(client: TestClient) -> None:
    text = (DOCS / "http-api.md").read_text(encoding="utf-8")
    spec = client.get("/openapi.json").json()
    missing = [
        f"{method.upper()} {path}"
        for path, operations in spec["paths"].items()
        for method in operations
        if f"`{method.upper()} {path}`" not in text
    ]
    assert missing == []


def _commands(group: Any, prefix: str) -> list[str]:
    """Leaf command names of a (Typer's own) click group."""
    found: list[str] = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found += _commands(command, f"{prefix}{name} ")
        else:
            found.append(f"{prefix}{name}")
    return found


def test_every_command_is_documented() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    root = typer.main.get_command(cli_app)
    commands = _commands(root, "closedloop ")
    assert len(commands) >= 12
    assert [c for c in commands if f"`{c}" not in text] == []


def test_readme_names_the_two_commands_first() -> None:
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    first_block = _blocks(readme, "sh")[0]
    assert "make run" in first_block and "make test" in first_block
    for link in re.findall(r"\]\((docs/[^)#]+)\)", readme):
        assert (DOCS.parent / link).exists(), link


def test_http_examples_in_the_docs_answer_as_documented(
    client: TestClient, source: ingest.NewSourceKey, admin_headers: dict[str, str]
) -> None:
    examples = [
        orjson.loads(block)
        for block in _blocks((DOCS / "http-api.md").read_text(), "json http-example")
    ]
    assert len(examples) >= 3
    for example in examples:
        headers = admin_headers if example.get("admin") else basic(source.write_key)
        response = client.post(example["route"], json=example["body"], headers=headers)
        assert response.status_code == example["status"], (example, response.text)


def _import_csv_example(
    engine: Engine, source: ingest.Source, text: str, mapping: int, head: str, tmp_path: Path
) -> ImportReport:
    """Import the docs' CSV block starting with `head` by their `mapping`-th YAML block."""
    csv_path = tmp_path / "example.csv"
    csv_path.write_text(next(b for b in _blocks(text, "text") if b.startswith(head)))
    return import_file(
        engine,
        csv_path,
        source=source,
        limits=Settings().ingest,
        fmt="csv",
        mapping=CsvMapping.model_validate(yaml.safe_load(_blocks(text, "yaml")[mapping])),
    )


def test_import_examples_in_the_docs_run(
    engine: Engine, settings: Settings, tmp_path: Path, source: ingest.NewSourceKey
) -> None:
    text = (DOCS / "import.md").read_text(encoding="utf-8")
    (jsonl,) = _blocks(text, "json")
    path = tmp_path / "mail-events.jsonl"
    path.write_text(jsonl, encoding="utf-8")
    report = import_file(engine, path, source=source.source, limits=Settings().ingest, fmt="jsonl")
    assert "# 2 accepted, 0 already stored, 0 rejected" in text
    assert (report.accepted, report.duplicates, report.rejected) == (2, 0, 0)

    report = _import_csv_example(engine, source.source, text, 0, "receipt;", tmp_path)
    assert (report.accepted, report.rejected) == (1, 1)
    (rejection,) = report.rejections
    assert f"#   line {rejection.line} `{rejection.field}`: {rejection.reason}" in text
    assert len(stored(engine)) == 3

    report = _import_csv_example(engine, source.source, text, 1, "call;", tmp_path)
    assert "# 1 accepted, 0 already stored, 0 rejected\nclosedloop profiles show" in text
    assert (report.accepted, report.rejected) == (1, 0)
    process_through(engine, settings)
    caller = find_profile(
        engine, "phone", "0351 1234567", region="DE", purposes=settings.profiles.consent_purposes
    )
    assert caller is not None
    assert caller.document["computed"]["events_by_type"] == {"track": 1}


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_docs_pages_link_to_existing_pages(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    for link in re.findall(r"\]\(([^)#:]+\.md)\)", text):
        assert (DOCS / link).exists(), f"{page} links to missing {link}"


def test_profile_example_in_the_docs_has_the_real_fields(
    engine: Engine, db_url: str, client: TestClient, admin_headers: dict[str, str]
) -> None:
    from tests.profiles.conftest import Log, identify

    (block,) = _blocks((DOCS / "http-api.md").read_text(), "json profile-example")
    example = orjson.loads(block)
    log = Log(engine, make_settings(db_url))
    log.send(identify("cust-00042", "anon-1", **example["traits"]))
    log.process()
    (real,) = client.get(
        "/v1/profiles", params={"user_id": "cust-00042"}, headers=admin_headers
    ).json()["items"]
    assert set(example) == set(real)
    assert set(example["masterdata"]) == set(real["masterdata"])
    assert set(example["computed"]) == set(real["computed"])
    assert real["masterdata"] == example["masterdata"]


def test_mood_rules_example_in_the_docs_is_valid() -> None:
    from closedloop import mood

    block, segment = _blocks((DOCS / "concepts.md").read_text(), "yaml")
    rules = mood.parse_rules(yaml.safe_load(block))
    from closedloop.segments import condition_tree

    assert condition_tree(yaml.safe_load(segment)["condition"])["did"]["at_least"] == 2
    assert [r.name for r in rules.rules] == ["nps", "returned_order", "vip"]


def test_feed_example_in_the_docs_is_valid() -> None:
    from closedloop import feeds

    (block,) = _blocks((DOCS / "concepts.md").read_text(), "yaml feed-example")
    definition = feeds.parse_feed(yaml.safe_load(block))
    assert definition.mode == "delta" and definition.destination.type == "sftp"
    assert [c.name for c in definition.columns][:3] == ["kundennummer", "anrede", "vorname"]
    for shipped in feeds.SHIPPED_FEEDS:
        assert f"`{shipped['name']}`" in (DOCS / "concepts.md").read_text()


def test_survey_example_in_the_docs_is_valid() -> None:
    from closedloop import surveys

    (block,) = _blocks((DOCS / "concepts.md").read_text(), "yaml survey-example")
    survey = surveys.parse_survey(yaml.safe_load(block))
    assert (survey.min_delay_days, survey.max_delay_days, survey.interval_weeks) == (3, 14, 26)
