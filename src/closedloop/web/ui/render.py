"""Rendering the dashboard: one autoescaping Jinja2 environment per language, with Babel's
translations (from `locale/de.po`, read at start, no build step) and locale-aware filters
for numbers and dates (Europe/Berlin)."""

from __future__ import annotations

import functools
import io
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent
from babel.support import NullTranslations, Translations
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse

__all__ = ["CSP", "page", "translations"]

_HERE = Path(__file__).parent
_NONE = "\u2013"  # an en dash for "no value"
_MINUS = "\u2212"  # a real minus sign
_ZONE = ZoneInfo("Europe/Berlin")
_BABEL_LOCALE = {"de": "de_DE", "en": "en_GB"}
# No inline script or style anywhere: htmx and our CSS come from /static.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@functools.cache
def translations(locale: str) -> NullTranslations:
    if locale != "de":
        return NullTranslations()
    with (_HERE / "locale" / "de.po").open("rb") as handle:
        catalog = read_po(handle, locale="de")
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


def _filters(locale: str) -> dict[str, Any]:
    babel_locale = _BABEL_LOCALE.get(locale, "de_DE")

    def number(value: Any, digits: int = 0) -> str:
        if value is None:
            return _NONE
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return str(format_decimal(value, format=pattern, locale=babel_locale))

    def signed(value: Any) -> str:
        if value is None:
            return _NONE
        text = number(abs(value))
        return ("+" if value > 0 else _MINUS if value < 0 else "±") + text

    def percent(value: Any) -> str:
        if value is None:
            return _NONE
        return str(format_percent(value, format="#,##0 %", locale=babel_locale))

    def when(value: Any) -> str:
        if value is None:
            return _NONE
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return str(format_datetime(value.astimezone(_ZONE), format="short", locale=babel_locale))

    def day(value: Any) -> str:
        if value is None:
            return _NONE
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime):
            value = value.astimezone(_ZONE).date()
        return str(format_date(value, format="full", locale=babel_locale))

    def show(value: Any) -> Any:
        return _NONE if value is None or value == "" else value

    return {
        "number": number,
        "signed": signed,
        "percent": percent,
        "when": when,
        "day": day,
        "show": show,
    }


@functools.cache
def _environment(locale: str) -> Environment:
    env = Environment(
        loader=PackageLoader("closedloop.web.ui", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html", "svg"), default=True),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.filters.update(_filters(locale))
    return env


def page(template: str, context: dict[str, Any], *, locale: str, status: int = 200) -> HTMLResponse:
    """Render a template in the user's language, with the dashboard's security headers."""
    html = _environment(locale).get_template(template).render(locale=locale, **context)
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            "Content-Security-Policy": CSP,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )
