"""`closedloop mood`: the mood rules in force."""

from __future__ import annotations

import typer
import yaml

from closedloop import mood
from closedloop.cli._app import app, console, handle_errors, open_store, settings

mood_app = typer.Typer(
    help="Mood rules.\n\nExample: `closedloop mood rules > mood-rules.yaml`",
    no_args_is_help=True,
)
app.add_typer(mood_app, name="mood")


@mood_app.command("rules")
def rules() -> None:
    """Print the mood rules in force as YAML (ready for `closedloop apply`).

    Example: `closedloop mood rules > mood-rules.yaml`
    """
    config = settings()
    with handle_errors():
        found = mood.current_rules(open_store(config))
    console.print(
        f"# mood rules, version {found.version}"
        + (" (the shipped defaults)" if found.version == 0 else ""),
    )
    console.print(
        yaml.safe_dump(
            found.rules.model_dump(mode="json", exclude_none=True, exclude_defaults=False),
            sort_keys=False,
            allow_unicode=True,
        ),
    )
