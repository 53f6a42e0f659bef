"""Identifiers as the identity graph keys them: e-mail (trimmed, lower-cased, valid syntax)
and phone (E.164). Both answer a `Normalised` value with the problem found, never raise on
bad data: a bad identifier is not an identifier, and the profile lists the problem."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import email_validator
import phonenumbers
from email_validator import EmailNotValidError, validate_email

__all__ = ["Normalised", "Problem", "forget_seen", "normalise_email", "normalise_phone"]

_MAX_INPUT = 320  # the longest e-mail address RFC 5321 allows; longer input is not one

# The common shape of an address: ASCII letters, digits and `_+-` in dot-separated atoms
# before the @, a host name of letters, digits and inner hyphens after it, ending in a TLD
# of letters. For these email-validator finds nothing wrong and changes nothing but the case
# (`_plain`); tests hold the two to the same answers.
_PLAIN = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
)
_MAX_ADDRESS = 254  # RFC 5321's limit, as email-validator checks it (its domain's is shorter)


@dataclass(frozen=True)
class Problem:
    """A data-quality finding: which field, what is wrong, the value as it came."""

    field: str
    problem: str
    value: str


@dataclass(frozen=True)
class Normalised:
    """A normalised value (None when there is none to use) and the problem found, if any."""

    value: str | None
    problem: Problem | None = None


def _show(value: object) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def normalise_email(value: object, *, field: str = "email") -> Normalised:
    """`  Anna.Muster@Example.COM ` -> `anna.muster@example.com`; no DNS look-up."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return Normalised(None)
    if not isinstance(value, str):
        return Normalised(None, Problem(field, "not a string", _show(value)))
    return _email_text(value, field)


@functools.lru_cache(maxsize=65536)
def _email_text(value: str, field: str) -> Normalised:
    # The same addresses recur (every identify of a customer): validate each once.
    text = value.strip()
    if len(text) > _MAX_INPUT:
        return Normalised(None, Problem(field, "too long for an e-mail address", _show(text)))
    if _plain(text):
        return Normalised(text.lower())
    try:
        checked = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        return Normalised(None, Problem(field, f"invalid e-mail address: {exc}", _show(text)))
    return Normalised(checked.normalized.lower())


def _plain(text: str) -> bool:
    """Whether `text` is an address of the common shape (`_PLAIN`) that email-validator
    would answer lower-cased (about 40 µs each, the first time an address is seen):
    within the length, no `--` (Punycode and reserved labels), no special-use domain."""
    found = _PLAIN.fullmatch(text)
    if found is None or len(text) > _MAX_ADDRESS:
        return False
    domain = found[1].lower()
    if "--" in domain:
        return False
    return not any(
        domain == name or domain.endswith("." + name)
        for name in email_validator.SPECIAL_USE_DOMAIN_NAMES  # a list users may change
    )


def normalise_phone(value: object, *, region: str = "DE", field: str = "phone") -> Normalised:
    """`0351 1234567` or `+49 (351) 123-4567` -> `+493511234567` (E.164).

    A number without a country code is read in `region` (a setting, DE by default).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return Normalised(None)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return Normalised(None, Problem(field, "not a phone number", _show(value)))
    return _phone_text(str(value), region.upper(), field)


@functools.lru_cache(maxsize=65536)
def _phone_text(value: str, region: str, field: str) -> Normalised:
    text = value.strip()
    if len(text) > 40:
        return Normalised(None, Problem(field, "too long for a phone number", _show(text)))
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        return Normalised(None, Problem(field, f"not a phone number: {exc}", _show(text)))
    if not phonenumbers.is_valid_number(parsed):
        return Normalised(None, Problem(field, "not a valid phone number", _show(text)))
    return Normalised(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def forget_seen() -> None:
    """Forget the memoised identifiers, as a new process would (benchmarks measuring the
    first sighting of each address)."""
    _email_text.cache_clear()
    _phone_text.cache_clear()
