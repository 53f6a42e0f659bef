"""Master-data normalisation, case by case, in German and English."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from closedloop.profiles import (
    normalise_country,
    normalise_date,
    normalise_gender,
    normalise_postal_code,
    salutation,
    salutation_problem,
)


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("01067", "DE", "01067"),
        ("1067", "DE", "01067"),  # a spreadsheet ate the zero
        (1067, "DE", "01067"),
        (1067.0, "DE", "01067"),
        (" 10115 ", "DE", "10115"),
        ("D-01067", "DE", None),
        ("DE-01067", "DE", "01067"),
        ("1010", "AT", "1010"),
        ("8001", "CH", "8001"),
        ("SW1A 1AA", "GB", "SW1A 1AA"),
        ("75001", "FR", "75001"),
        ("01067", None, "01067"),
    ],
)
def test_postal_code_keeps_its_leading_zero(
    raw: object, country: str | None, expected: str | None
) -> None:
    assert normalise_postal_code(raw, country=country).value == expected


@pytest.mark.parametrize(
    ("raw", "country"),
    [
        ("123456", "DE"),
        ("0067", "AT"),
        ("ABCDE", "DE"),
        ("00123", "DE"),
        (1067.5, "DE"),
        ("12345", "CH"),
    ],
)
def test_invalid_postal_code_is_flagged(raw: object, country: str) -> None:
    result = normalise_postal_code(raw, country=country)
    assert result.value is None
    assert result.problem is not None
    assert result.problem.field == "postalCode"


@given(st.integers(min_value=1000, max_value=99999))
def test_de_postal_code_is_always_five_digits_and_stable(number: int) -> None:
    first = normalise_postal_code(number, country="DE").value
    assert first is not None and len(first) == 5 and int(first) == number
    assert normalise_postal_code(first, country="DE").value == first


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("f", "female"),
        ("W", "female"),
        ("weiblich", "female"),
        ("Frau", "female"),
        ("Mrs", "female"),
        ("Ms.", "female"),
        ("female", "female"),
        ("m", "male"),
        ("männlich", "male"),
        ("Herr", "male"),
        ("Mr.", "male"),
        ("MALE", "male"),
        ("d", "diverse"),
        ("divers", "diverse"),
        ("diverse", "diverse"),
        ("x", "diverse"),
        ("unbekannt", "unknown"),
    ],
)
def test_gender_from_every_common_spelling(raw: str, expected: str) -> None:
    result = normalise_gender(raw)
    assert (result.value, result.problem) == (expected, None)


def test_unrecognised_gender_is_unknown_and_flagged() -> None:
    result = normalise_gender("Hubschrauber")
    assert result.value == "unknown"
    assert result.problem is not None and result.problem.field == "gender"
    assert normalise_gender(None).value is None


@pytest.mark.parametrize(
    ("gender", "language", "expected"),
    [
        ("female", "de", "Sehr geehrte Frau Musterfrau"),
        ("male", "de", "Sehr geehrter Herr Musterfrau"),
        ("diverse", "de", "Guten Tag Erika Musterfrau"),
        ("unknown", "de", "Guten Tag Erika Musterfrau"),
        (None, "de", "Guten Tag Erika Musterfrau"),
        ("female", "en", "Dear Ms Musterfrau"),
        ("male", "en", "Dear Mr Musterfrau"),
        ("diverse", "en", "Dear Erika Musterfrau"),
    ],
)
def test_salutation_matches_the_gender(gender: str | None, language: str, expected: str) -> None:
    text = salutation(gender, first_name="Erika", last_name="Musterfrau", language=language)  # type: ignore[arg-type]
    assert text == expected


def test_salutation_without_names_is_neutral() -> None:
    assert salutation("female", first_name=None, last_name=None) == "Guten Tag"
    assert salutation("male", first_name="Jan", last_name=None, language="en") == "Dear Jan"


def test_salutation_that_contradicts_gender_is_flagged() -> None:
    problem = salutation_problem("Herr", "female")
    assert problem is not None and problem.field == "salutation" and problem.value == "Herr"
    assert salutation_problem("Mrs", "male") is not None
    assert salutation_problem("Frau Dr.", "female") is None
    assert salutation_problem("Herr", "diverse") is None
    assert salutation_problem(None, "female") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1985-03-07", "1985-03-07"),
        ("1985-03-07T10:00:00Z", "1985-03-07"),
        ("07.03.1985", "1985-03-07"),
        ("1985/03/07", "1985-03-07"),
        ("19850307", "1985-03-07"),
    ],
)
def test_dates_become_iso_dates(raw: str, expected: str) -> None:
    assert normalise_date(raw).value == expected


@pytest.mark.parametrize("raw", ["03/07/1985", "31.02.1985", "gestern", 19850307])
def test_ambiguous_or_invalid_dates_are_flagged(raw: object) -> None:
    result = normalise_date(raw)
    assert result.value is None
    assert result.problem is not None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Deutschland", "DE"),
        ("germany", "DE"),
        ("de", "DE"),
        ("Österreich", "AT"),
        ("CH", "CH"),
        ("fr", "FR"),
    ],
)
def test_country_names_become_codes(raw: str, expected: str) -> None:
    assert normalise_country(raw).value == expected


def test_unknown_country_is_flagged() -> None:
    assert normalise_country("Atlantis").problem is not None
