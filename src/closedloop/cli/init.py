"""`closedloop init`: secrets in a local file, the store, and the demo source."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import typer

from closedloop import ingest, store
from closedloop.access import users as accounts
from closedloop.cli._app import app, console, handle_errors, open_store, upgrade_store
from closedloop.config import load_settings
from closedloop.errors import ConflictError, NotFoundError, PermissionDeniedError

DEMO_SOURCE = "demo"
DEMO_USER = "demo"


def _read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


def _write_env(path: Path, values: dict[str, str]) -> None:
    text = "# closedloop local settings, made by `closedloop init`. Keep this file secret.\n"
    text += "".join(f"{k}={v}\n" for k, v in values.items())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


@app.command("init")
def init(
    env_file: Path = typer.Option(Path(".env"), help="Where the local secrets are kept."),
    demo_source: bool = typer.Option(True, help="Create the `demo` source for `closedloop demo`."),
) -> None:
    """Prepare a local hub: secrets, store, demo source. Safe to run again.

    Writes `CLOSEDLOOP_SECRET_KEY`, `CLOSEDLOOP_ADMIN_TOKEN`, the customer-key secret
    (`CLOSEDLOOP_IDENTITY__CUSTOMER_KEY_SECRET`), the demo write key and the password of
    the dashboard's `demo` user (an admin) to `.env` (mode 600) when they are missing,
    upgrades the store, and prints the credentials.

    Example: `closedloop init && closedloop serve`
    """
    values = _read_env(env_file)
    changed = False
    for name in (
        "CLOSEDLOOP_SECRET_KEY",
        "CLOSEDLOOP_ADMIN_TOKEN",
        "CLOSEDLOOP_IDENTITY__CUSTOMER_KEY_SECRET",
    ):
        if not values.get(name):
            values[name] = secrets.token_urlsafe(32)
            changed = True
    if changed:
        _write_env(env_file, values)
    with handle_errors():
        config = load_settings(_env_file=str(env_file))
        engine = open_store(config)
        upgrade_store(engine)
        if demo_source:
            key = values.get("CLOSEDLOOP_DEMO_WRITE_KEY") or None
            resolver = ingest.WriteKeyResolver(engine, cache_seconds=0)
            valid = False
            if key:
                try:
                    valid = resolver.resolve(key).name == DEMO_SOURCE
                except PermissionDeniedError:
                    valid = False
            if not valid:
                try:
                    ingest.get_source(engine, DEMO_SOURCE)
                    made = ingest.rotate_write_key(engine, DEMO_SOURCE)
                    ingest.set_source_enabled(engine, DEMO_SOURCE, enabled=True)
                except NotFoundError:
                    made = ingest.add_source(engine, DEMO_SOURCE, kind="web", write_key=key)
                values["CLOSEDLOOP_DEMO_WRITE_KEY"] = made.write_key
                _write_env(env_file, values)
            if not values.get("CLOSEDLOOP_DEMO_PASSWORD"):
                values["CLOSEDLOOP_DEMO_PASSWORD"] = secrets.token_urlsafe(12)
                _write_env(env_file, values)
            password = values["CLOSEDLOOP_DEMO_PASSWORD"]
            try:
                accounts.add_user(engine, DEMO_USER, role="admin", password=password)
            except ConflictError:
                accounts.set_password(engine, DEMO_USER, password)
        revision = store.current_revision(engine)
    console.print(
        f"store:       {config.database_url} (revision {revision})",
    )
    console.print(f"admin token: {values['CLOSEDLOOP_ADMIN_TOKEN']}")
    if demo_source:
        console.print(
            f"demo source: `{DEMO_SOURCE}`, write key {values['CLOSEDLOOP_DEMO_WRITE_KEY']}",
        )
        console.print(
            f"dashboard:   http://{config.host}:{config.port}/  user `{DEMO_USER}`, "
            f"password {values['CLOSEDLOOP_DEMO_PASSWORD']}",
        )
    console.print(f"secrets kept in {env_file} (mode 600)")
