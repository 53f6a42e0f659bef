"""Master data of a profile, derived from its traits, and the quality problems found.

Segment's reserved traits are understood (email, firstName, lastName, name, gender, phone,
address with street, postalCode, city, country, createdAt, birthday, company, and a given
salutation or title). `name` fills first and last name only when those are absent.

The fields come in groups, each from its own traits, so that a change of the city checks
neither the e-mail address nor the postal code again (`groups_of` and the `groups`
argument); the postal code is checked with the country, in one group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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

__all__ = ["FIELDS", "GROUP_INPUTS", "derive_masterdata", "groups_of"]

GROUP_INPUTS: dict[str, tuple[str, ...]] = {
    "email": ("email",),
    "phone": ("phone", "mobile"),
    "person": (
        "firstName",
        "first_name",
        "lastName",
        "last_name",
        "name",
        "gender",
        "sex",
        "salutation",
        "title",
    ),
    # (the address in three: the postal code depends on the country, the rest on nothing)
    "street": ("address.street", "street"),
    "city": ("address.city", "city"),
    "postal": (
        "address.country",
        "country",
        "address.postalCode",
        "address.postal_code",
        "postalCode",
        "zip",
        "address.zip",
    ),
    "dates": ("birthday", "createdAt", "created_at"),
    "company": ("company.name", "company"),
}
_GROUP_OF = {name: group for group, names in GROUP_INPUTS.items() for name in names}
# Problems are listed in the order of their traits here (a trait name outside: last).
_ORDER = {name: index for index, name in enumerate(_GROUP_OF)}


def groups_of(trait_names: Iterable[str]) -> set[str]:
    """The master-data groups that depend on any of these traits."""
    return {_GROUP_OF[name] for name in trait_names if name in _GROUP_OF}


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


Take = Callable[[Normalised], "str | None"]


def _email(
    t: dict[str, Any], out: dict[str, Any], take: Take, problems: list[Problem], region: str
) -> None:
    name, value = _first(t, "email")
    out["email"] = take(normalise_email(value, field=name))


def _phone(
    t: dict[str, Any], out: dict[str, Any], take: Take, problems: list[Problem], region: str
) -> None:
    name, value = _first(t, "phone", "mobile")
    out["phone"] = take(normalise_phone(value, region=region, field=name))


def _person(
    t: dict[str, Any], out: dict[str, Any], take: Take, problems: list[Problem], region: str
) -> None:
    first = _text(_first(t, "firstName", "first_name")[1], 100)
    last = _text(_first(t, "lastName", "last_name")[1], 100)
    full = _text(t.get("name"), 200)
    if full and not first and not last:
        parts = full.split()
        first, last = (" ".join(parts[:-1]) or None, parts[-1]) if len(parts) > 1 else (None, full)
    out["first_name"], out["last_name"] = first, last
    name, value = _first(t, "gender", "sex")
    gender = take(normalise_gender(value, field=name))
    out["gender"] = gender
    name, given = _first(t, "salutation", "title")
    problem = salutation_problem(given, gender, field=name)
    if problem is not None:
        problems.append(problem)
    out["salutation_de"] = salutation(gender, first_name=first, last_name=last, language="de")
    out["salutation_en"] = salutation(gender, first_name=first, last_name=last, language="en")


def _street(
    t: dict[str, Any], out: dict[str, Any], take: Take, problems: list[Problem], region: str
) -> None:
    out["street"] = _text(_first(t, "address.street", "street")[1])


def _city(
    t: dict[str, Any], out: dict[str, Any], take: Take, problems: list[Problem], region: str
) -> None:
    out["city"] = _text(_first(t, "address.city", "city")[1], 100)


def _postal(
    t: dict[str, Any], out: dict[str, Any], take: Take, problems: list[Problem], region: str
) -> None:
    name, value = _first(t, "address.country", "country")
    country = take(normalise_country(value, field=name))
    out["country"] = country
    name, value = _first(
        t, "address.postalCode", "address.postal_code", "postalCode", "zip", "address.zip"
    )
    out["postal_code"] = take(normalise_postal_code(value, country=country or region, field=name))


def _dates(
    t: dict[str, Any], out: dict[str, Any], take: Take, problems: list[Problem], region: str
) -> None:
    name, value = _first(t, "birthday")
    out["birthday"] = take(normalise_date(value, field=name))
    name, value = _first(t, "createdAt", "created_at")
    out["created_at"] = take(normalise_date(value, field=name))


def _company(
    t: dict[str, Any], out: dict[str, Any], take: Take, problems: list[Problem], region: str
) -> None:
    company = t.get("company.name", t.get("company"))
    out["company"] = _text(company) if not isinstance(company, dict) else None


_GROUPS = {
    "email": _email,
    "phone": _phone,
    "person": _person,
    "street": _street,
    "city": _city,
    "postal": _postal,
    "dates": _dates,
    "company": _company,
}
FIELDS = (  # the master-data fields, in the order a profile shows them
    "email",
    "phone",
    "first_name",
    "last_name",
    "gender",
    "salutation_de",
    "salutation_en",
    "street",
    "city",
    "country",
    "postal_code",
    "birthday",
    "created_at",
    "company",
)


def derive_masterdata(
    traits: dict[str, Any],
    *,
    region: str,
    groups: set[str] | None = None,
    previous: tuple[dict[str, Any], list[dict[str, str]]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(master data, problems) from trait values (flat names, `address.postalCode`).

    With `groups` and the `previous` result, only those groups are derived again; the rest
    (fields and their problems) is kept.
    """
    problems: list[Problem] = []

    def take(result: Normalised) -> str | None:
        if result.problem is not None:
            problems.append(result.problem)
        return result.value

    if groups is None or previous is None:
        todo = set(_GROUPS)
        kept_fields: dict[str, Any] = {}
        kept_quality: list[dict[str, str]] = []
    else:
        todo = groups
        kept_fields = previous[0]
        kept_quality = [q for q in previous[1] if _GROUP_OF.get(q["field"]) not in todo]
    found: dict[str, Any] = {}
    for group in _GROUPS:  # in a fixed order, so the problems list is too
        if group in todo:
            _GROUPS[group](traits, found, take, problems, region)
    out = {name: found[name] if name in found else kept_fields.get(name) for name in FIELDS}
    fresh = [{"field": p.field, "problem": p.problem, "value": p.value} for p in problems]
    quality = kept_quality + fresh
    if len(quality) > 1:
        quality.sort(key=lambda q: _ORDER.get(q["field"], len(_ORDER)))
    return out, quality
