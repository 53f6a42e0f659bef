"""Master-data normalisation: postal codes, countries, gender, salutation, dates.

Each function takes a value as a source sent it and answers a `Normalised` value with the
problem it found (field, problem, value), so that a profile can list its quality problems
and a CRM feed gets clean data: Dresden's 01067 keeps its leading zero, and a woman is
addressed as "Frau". Nothing here raises on bad data.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, Literal

from closedloop.identity.normalise import Normalised, Problem

__all__ = [
    "Gender",
    "Language",
    "full_name",
    "normalise_country",
    "normalise_date",
    "normalise_gender",
    "normalise_postal_code",
    "salutation",
    "salutation_problem",
]

Gender = Literal["female", "male", "diverse", "unknown"]
Language = Literal["de", "en"]

_GENDERS: dict[str, Gender] = {
    # female
    "f": "female",
    "w": "female",
    "female": "female",
    "weiblich": "female",
    "frau": "female",
    "fr": "female",
    "mrs": "female",
    "ms": "female",
    "miss": "female",
    "woman": "female",
    # male
    "m": "male",
    "male": "male",
    "männlich": "male",
    "maennlich": "male",
    "mannlich": "male",
    "herr": "male",
    "hr": "male",
    "mr": "male",
    "man": "male",
    # diverse
    "d": "diverse",
    "divers": "diverse",
    "diverse": "diverse",
    "x": "diverse",
    "non-binary": "diverse",
    "nonbinary": "diverse",
    "nichtbinär": "diverse",
    # said to be unknown
    "u": "unknown",
    "unknown": "unknown",
    "unbekannt": "unknown",
    "keine angabe": "unknown",
    "k.a.": "unknown",
}

_COUNTRIES = {
    "de": "DE",
    "deu": "DE",
    "deutschland": "DE",
    "germany": "DE",
    "at": "AT",
    "aut": "AT",
    "österreich": "AT",
    "oesterreich": "AT",
    "austria": "AT",
    "ch": "CH",
    "che": "CH",
    "schweiz": "CH",
    "switzerland": "CH",
    "suisse": "CH",
    "svizzera": "CH",
}

_POSTAL_DIGITS = {"DE": 5, "AT": 4, "CH": 4}


def _show(value: object) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def normalise_country(value: object, *, field: str = "country") -> Normalised:
    """`Deutschland`, `germany`, `de`, `DEU` -> `DE`; other two-letter codes upper-cased."""
    if _blank(value):
        return Normalised(None)
    if not isinstance(value, str):
        return Normalised(None, Problem(field, "not a country", _show(value)))
    key = value.strip().lower()
    if key in _COUNTRIES:
        return Normalised(_COUNTRIES[key])
    if re.fullmatch(r"[a-z]{2}", key):
        return Normalised(key.upper())
    return Normalised(None, Problem(field, "unknown country", _show(value)))


def normalise_postal_code(
    value: object, *, country: str | None = "DE", field: str = "postalCode"
) -> Normalised:
    """A postal code as a string, with its leading zeros for DE (5 digits), AT and CH (4).

    `1067` (a number, or text that lost its zero in a spreadsheet) with country DE becomes
    `01067`. Codes of other countries are kept as sent, trimmed. A code that cannot be one of
    its country's is kept out (value None) and flagged.
    """
    if _blank(value):
        return Normalised(None)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return Normalised(None, Problem(field, "not a postal code", _show(value)))
    if isinstance(value, float):
        if not value.is_integer():
            return Normalised(None, Problem(field, "not a postal code", _show(value)))
        value = int(value)
    text = str(value).strip()
    code = (country or "").upper()
    digits = _POSTAL_DIGITS.get(code)
    if digits is None:
        if len(text) > 12:
            return Normalised(None, Problem(field, "too long for a postal code", _show(text)))
        return Normalised(text.upper())
    compact = text.removeprefix(f"{code}-").removeprefix(f"{code} ").strip()
    if not compact.isascii() or not compact.isdigit():
        return Normalised(
            None, Problem(field, f"not a {code} postal code ({digits} digits)", _show(text))
        )
    if len(compact) > digits:
        return Normalised(
            None, Problem(field, f"too many digits for a {code} postal code", _show(text))
        )
    padded = compact.zfill(digits)
    if code in ("AT", "CH") and padded.startswith("0"):
        return Normalised(
            None, Problem(field, f"{code} postal codes do not start with 0", _show(text))
        )
    if code == "DE" and padded.startswith("00"):
        return Normalised(None, Problem(field, "DE postal codes do not start with 00", _show(text)))
    return Normalised(padded)


def normalise_gender(value: object, *, field: str = "gender") -> Normalised:
    """Every common spelling in German and English -> female, male, diverse or unknown.

    An unrecognised value gives `unknown` and a problem; none given gives None.
    """
    if _blank(value):
        return Normalised(None)
    if not isinstance(value, str):
        return Normalised("unknown", Problem(field, "unrecognised gender", _show(value)))
    key = value.strip().lower().rstrip(".")
    key = key if key in _GENDERS else key.replace(".", "")
    found = _GENDERS.get(key)
    if found is None:
        return Normalised("unknown", Problem(field, "unrecognised gender", _show(value)))
    return Normalised(found)


def salutation(
    gender: str | None,
    *,
    first_name: str | None,
    last_name: str | None,
    language: Language = "de",
) -> str:
    """The letter salutation: "Sehr geehrte Frau Musterfrau", "Dear Mr Mustermann", or a
    neutral "Guten Tag Erika Musterfrau" / "Dear Erika Musterfrau" for diverse or unknown."""
    first = (first_name or "").strip()
    last = (last_name or "").strip()
    full = " ".join(p for p in (first, last) if p)
    if last and gender == "female":
        return f"Sehr geehrte Frau {last}" if language == "de" else f"Dear Ms {last}"
    if last and gender == "male":
        return f"Sehr geehrter Herr {last}" if language == "de" else f"Dear Mr {last}"
    if language == "de":
        return f"Guten Tag {full}" if full else "Guten Tag"
    return f"Dear {full}" if full else "Hello"


def salutation_problem(
    given: object, gender: str | None, *, field: str = "salutation"
) -> Problem | None:
    """A given salutation ("Herr", "Mrs", ...) that contradicts the gender, or None."""
    if _blank(given) or not isinstance(given, str) or gender not in ("female", "male"):
        return None
    implied = normalise_gender(given.split()[0]).value
    if implied in ("female", "male") and implied != gender:
        return Problem(field, f"salutation contradicts gender `{gender}`", _show(given))
    return None


_DATE_FORMATS = ("%d.%m.%Y", "%d.%m.%y", "%Y/%m/%d", "%Y%m%d")


def normalise_date(value: object, *, field: str = "birthday") -> Normalised:
    """An ISO date (`1985-03-07`) from ISO dates or date-times, `07.03.1985` (German) or
    `1985/03/07`. Ambiguous forms such as `03/07/1985` are flagged, not guessed."""
    if _blank(value):
        return Normalised(None)
    if not isinstance(value, str):
        return Normalised(None, Problem(field, "not a date", _show(value)))
    text = value.strip()
    try:
        return Normalised(date.fromisoformat(text).isoformat())
    except ValueError:
        pass
    try:
        return Normalised(datetime.fromisoformat(text).date().isoformat())
    except ValueError:
        pass
    for fmt in _DATE_FORMATS:
        try:
            return Normalised(datetime.strptime(text, fmt).date().isoformat())  # noqa: DTZ007
        except ValueError:
            continue
    return Normalised(
        None, Problem(field, "not a date: use ISO `YYYY-MM-DD` or `DD.MM.YYYY`", _show(text))
    )


def full_name(masterdata: dict[str, Any]) -> str | None:
    """First and last name from master data, as far as known; None when neither is."""
    parts = (masterdata.get("first_name"), masterdata.get("last_name"))
    return " ".join(p for p in parts if isinstance(p, str) and p) or None
