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
from closedloop.profiles.quality import derive_masterdata, groups_of


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


# Trait values as customers send them: clean, messy, wrong, missing.
_TRAIT_VALUES = {
    "email": st.sampled_from(["erika@example.de", " Erika@Example.DE ", "not-an-email", None]),
    "phone": st.sampled_from(["0351 1234567", "+49 351 1234567", "12", None]),
    "firstName": st.sampled_from(["Erika", "", None]),
    "lastName": st.sampled_from(["Musterfrau", None]),
    "name": st.sampled_from(["Erika Musterfrau", "Cher", None]),
    "gender": st.sampled_from(["w", "Herr", "divers", "??", None]),
    "salutation": st.sampled_from(["Frau", "Herr", None]),
    "address.street": st.sampled_from(["Hauptstr. 1", None]),
    "city": st.sampled_from(["Dresden", "Leipzig", 42, None]),
    "address.city": st.sampled_from(["Wien", None]),
    "country": st.sampled_from(["DE", "Österreich", "CH", "Atlantis", None]),
    "postalCode": st.sampled_from(["01067", 1067, "1010", "8001", "0123", "D-1", None]),
    "zip": st.sampled_from(["12345", None]),
    "birthday": st.sampled_from(["1980-02-29", "31.12.1999", "soon", None]),
    "createdAt": st.sampled_from(["2024-01-02T03:04:05Z", None]),
    "company": st.sampled_from(["ACME", None]),
    "plan": st.sampled_from(["gold", "basic"]),
}
_TRAITS = st.fixed_dictionaries({}, optional=_TRAIT_VALUES)


@given(before=_TRAITS, change=_TRAITS)
def test_deriving_the_changed_groups_again_equals_deriving_everything(
    before: dict[str, object], change: dict[str, object]
) -> None:
    """The processor derives again only the groups of the traits that changed (a new city
    does not check the e-mail address or the postal code again): the result must be the
    same as deriving all master data from the new traits."""
    after = {**before, **change}
    previous = derive_masterdata(before, region="DE")
    again = derive_masterdata(after, region="DE", groups=groups_of(change), previous=previous)
    assert again == derive_masterdata(after, region="DE")
