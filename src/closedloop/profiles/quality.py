"""Master data of a profile, derived from its traits, and the quality problems found.

Segment's reserved traits are understood (email, firstName, lastName, name, gender, phone,
address with street, postalCode, city, country, createdAt, birthday, company, and a given
salutation or title). `name` fills first and last name only when those are absent.
"""

from __future__ import annotations

from typing import Any

from closedloop.identity.normalise import Normalised, Problem, normalise_email, normalise_phone
from closedloop.profiles.masterdata import (
    normalise_country,
    normalise_date,
    normalise_gender,
    normalise_postal_code,
    salutation,
    salutation_problem,
)

__all__ = ["derive_masterdata"]


def _first(traits: dict[str, Any], *names: str) -> tuple[str, Any]:
    for name in names:
        value = traits.get(name)
        if value is not None and value != "":
            return name, value
    return names[0], None


def _text(value: Any, limit: int = 200) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()[:limit]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def derive_masterdata(
    traits: dict[str, Any], *, region: str
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(master data, problems) from trait values (flat names, `address.postalCode`)."""
    problems: list[Problem] = []

    def take(result: Normalised) -> str | None:
        if result.problem is not None:
            problems.append(result.problem)
        return result.value

    out: dict[str, Any] = {}
    name, value = _first(traits, "email")
    out["email"] = take(normalise_email(value, field=name))
    name, value = _first(traits, "phone", "mobile")
    out["phone"] = take(normalise_phone(value, region=region, field=name))

    first = _text(_first(traits, "firstName", "first_name")[1], 100)
    last = _text(_first(traits, "lastName", "last_name")[1], 100)
    full = _text(traits.get("name"), 200)
    if full and not first and not last:
        parts = full.split()
        first, last = (" ".join(parts[:-1]) or None, parts[-1]) if len(parts) > 1 else (None, full)
    out["first_name"], out["last_name"] = first, last

    name, value = _first(traits, "gender", "sex")
    gender = take(normalise_gender(value, field=name))
    out["gender"] = gender
    name, given = _first(traits, "salutation", "title")
    problem = salutation_problem(given, gender, field=name)
    if problem is not None:
        problems.append(problem)
    out["salutation_de"] = salutation(gender, first_name=first, last_name=last, language="de")
    out["salutation_en"] = salutation(gender, first_name=first, last_name=last, language="en")

    out["street"] = _text(_first(traits, "address.street", "street")[1])
    out["city"] = _text(_first(traits, "address.city", "city")[1], 100)
    name, value = _first(traits, "address.country", "country")
    country = take(normalise_country(value, field=name))
    out["country"] = country
    name, value = _first(
        traits, "address.postalCode", "address.postal_code", "postalCode", "zip", "address.zip"
    )
    out["postal_code"] = take(normalise_postal_code(value, country=country or region, field=name))
    name, value = _first(traits, "birthday")
    out["birthday"] = take(normalise_date(value, field=name))
    name, value = _first(traits, "createdAt", "created_at")
    out["created_at"] = take(normalise_date(value, field=name))
    company = traits.get("company.name", traits.get("company"))
    out["company"] = _text(company) if not isinstance(company, dict) else None
    return out, [{"field": p.field, "problem": p.problem, "value": p.value} for p in problems]
