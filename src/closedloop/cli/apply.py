"""`closedloop apply FILE.yaml`: configuration as data (mood rules; segments, feeds and
surveys as they arrive)."""

from __future__ import annotations

from pathlib import Path

import typer
import yaml

from closedloop import feeds, mood, segments, surveys
from closedloop.cli._app import (
    app,
    console,
    fail,
    handle_errors,
    open_store,
    settings,
    upgrade_store,
)
from closedloop.config import Settings

_KINDS = ("mood_rules", "segment", "feed", "survey")
_MAX_BYTES = 1024 * 1024


@app.command("apply")
def apply(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the file, store nothing."),
) -> None:
    """Apply a YAML (or JSON) document with a `kind`: `mood_rules` stores a new version of
    the mood rules (events processed from then on use it; `closedloop rebuild` applies it to
    the whole history); `segment` creates or changes a segment (`name`, `condition`);
    `feed` creates or changes a feed (see docs/concepts.md, Feeds); `survey` creates or
    changes an NPS survey.

    Example: `closedloop apply mood-rules.yaml`
    """
    config = settings()
    if file.stat().st_size > _MAX_BYTES:
        raise fail(f"`{file}` is larger than 1 MB")
    try:
        document = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise fail(f"`{file}` is not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or document.get("kind") not in _KINDS:
        raise fail(f"`{file}`: expected `kind: {' | '.join(_KINDS)}` at the top")
    if document["kind"] == "segment":
        _apply_segment(config, document, dry_run=dry_run)
        return
    if document["kind"] == "feed":
        _apply_feed(config, document, dry_run=dry_run)
        return
    if document["kind"] == "survey":
        with handle_errors():
            definition = surveys.parse_survey(document)
            if dry_run:
                console.print(f"survey `{definition.name}`: valid (not stored)")
                return
            engine = open_store(config)
            upgrade_store(engine)
            surveys.save_survey(engine, document, create=None)
        console.print(f"survey `{definition.name}` saved")
        return
    with handle_errors():
        rules = mood.parse_rules(document)
        if dry_run:
            console.print(f"mood rules: {len(rules.rules)} rules, valid (not stored)")
            return
        engine = open_store(config)
        upgrade_store(engine)
        stored = mood.store_rules(engine, rules)
    console.print(
        f"mood rules: version {stored.version}, {len(rules.rules)} rules stored; "
        "run `closedloop rebuild` to apply them to past events",
    )


def _apply_segment(config: Settings, document: dict[str, object], *, dry_run: bool) -> None:
    extra = set(document) - {"kind", "name", "condition"}
    if extra:
        raise fail(f"unknown keys for a segment: {', '.join(sorted(extra))}")
    name = document.get("name")
    with handle_errors():
        tree = segments.condition_tree(document.get("condition"))
        if not isinstance(name, str):
            raise fail("a segment needs `name`")
        if dry_run:
            console.print(f"segment `{name}`: valid (not stored)")
            return
        engine = open_store(config)
        upgrade_store(engine)
        exists = any(s.name == name for s in segments.list_segments(engine))
        saved = segments.save_segment(engine, config, name, tree, create=not exists)
    console.print(
        f"segment `{saved.name}` {'changed' if exists else 'created'}: {saved.size} members",
    )


def _apply_feed(config: Settings, document: dict[str, object], *, dry_run: bool) -> None:
    with handle_errors():
        definition = feeds.parse_feed(document)
        if dry_run:
            console.print(f"feed `{definition.name}`: valid (not stored)")
            return
        engine = open_store(config)
        upgrade_store(engine)
        exists = any(f.name == definition.name for f in feeds.list_feeds(engine))
        saved = feeds.save_feed(engine, document, create=None)
    schedule = saved.definition.schedule
    when = (
        f"next run {saved.next_run_at or 'at the next scheduler pass'}" if schedule else "by hand"
    )
    console.print(f"feed `{saved.name}` {'changed' if exists else 'created'} ({when})")
