"""E-mail and phone normalisation, and the keyed customer key."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop.errors import InvalidInputError
from closedloop.identity import (
    customer_key,
    is_customer_key,
    normalise,
    normalise_email,
    normalise_phone,
)

SECRET = b"test-secret-for-customer-keys"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("anna@example.com", "anna@example.com"),
        ("  Anna.Muster@Example.COM \n", "anna.muster@example.com"),
        ("PETER+shop@Beispiel.de", "peter+shop@beispiel.de"),
    ],
)
def test_email_is_trimmed_and_lower_cased(raw: str, expected: str) -> None:
    result = normalise_email(raw)
    assert (result.value, result.problem) == (expected, None)


@pytest.mark.parametrize(
    "raw", ["anna", "anna@", "@example.com", "anna@@example.com", "a b@example.com", "x" * 400]
)
def test_invalid_email_is_no_identifier_and_a_problem(raw: str) -> None:
    result = normalise_email(raw)
    assert result.value is None
    assert result.problem is not None
    assert result.problem.field == "email"
    assert result.problem.value == (raw if len(raw) <= 80 else raw[:77] + "...")


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_missing_email_is_neither_value_nor_problem(raw: str | None) -> None:
    assert normalise_email(raw).value is None
    assert normalise_email(raw).problem is None


def test_non_string_email_is_a_problem() -> None:
    assert normalise_email(12345).problem is not None


@pytest.mark.parametrize(
    "raw",
    ["0351 1234567", "+49 351 1234567", "+49 (0)351 123-45-67", "0049 351 1234567", "03511234567"],
)
def test_phone_in_any_format_becomes_e164(raw: str) -> None:
    assert normalise_phone(raw).value == "+493511234567"


def test_phone_region_is_a_setting() -> None:
    assert normalise_phone("01 234 56 78", region="AT").value == "+4312345678"
    assert normalise_phone("044 668 18 00", region="CH").value == "+41446681800"


@pytest.mark.parametrize("raw", ["12", "abc", "+49 0", "0351", "+999 1234567", "1" * 60, True])
def test_invalid_phone_is_flagged(raw: object) -> None:
    result = normalise_phone(raw)
    assert result.value is None
    assert result.problem is not None
    assert result.problem.field == "phone"


@given(st.emails())
def test_email_normalisation_is_idempotent(email: str) -> None:
    first = normalise_email(email)
    if first.value is not None:
        assert normalise_email(first.value).value == first.value


def test_customer_key_is_keyed_hmac_of_the_normalised_email() -> None:
    key = customer_key("  Anna.Muster@Example.COM ", secret=SECRET)
    expected = hmac.new(SECRET, b"anna.muster@example.com", hashlib.sha256).hexdigest()
    assert key == f"v1.{expected}"
    assert key == customer_key("anna.muster@example.com", secret=SECRET)
    plain = hashlib.sha256(b"anna.muster@example.com").hexdigest()
    assert plain not in key  # not a plain hash, which a dictionary of addresses reverses
    assert customer_key("anna.muster@example.com", secret=b"another secret") != key
    assert customer_key("anna.muster@example.com", secret=SECRET, version=2).startswith("v2.")
    assert is_customer_key(key)
    assert not is_customer_key("anna@example.com")


def test_customer_key_refuses_bad_input() -> None:
    with pytest.raises(InvalidInputError) as no_secret:
        customer_key("anna@example.com", secret=b"")
    assert no_secret.value.field == "secret_key"
    with pytest.raises(InvalidInputError) as bad_email:
        customer_key("not-an-email", secret=SECRET)
    assert bad_email.value.field == "email"
    with pytest.raises(InvalidInputError):
        customer_key("anna@example.com", secret=SECRET, version=0)


_ATOM = st.text("aZ09_+-", min_size=1, max_size=70)
_LABEL = st.text("aZ09-", min_size=1, max_size=66)
_TLD = st.one_of(
    st.text("azAZ", min_size=1, max_size=64),
    st.sampled_from(["test", "local", "localhost", "invalid", "onion", "arpa", "de", "x1", "COM"]),
)
_SHAPED = st.builds(
    lambda local, labels, tld: ".".join(local) + "@" + ".".join([*labels, tld]),
    st.lists(st.one_of(_ATOM, st.just("")), min_size=1, max_size=5),
    st.lists(st.one_of(_LABEL, st.sampled_from(["xn--bcher-kva", "ab--cd", "a--b"])), max_size=5),
    _TLD,
)


def _validated(text: str) -> str | None:
    try:
        return validate_email(text, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_SHAPED, st.emails()))
def test_plain_addresses_are_answered_as_email_validator_answers_them(text: str) -> None:
    """The fast path (`_plain`) takes only addresses email-validator accepts unchanged but
    for their case; everything else goes to email-validator."""
    if normalise._plain(text):
        assert _validated(text) == text.lower()
    assert normalise_email(text).value == _validated(text.strip())


def test_the_common_addresses_take_the_fast_path() -> None:
    common = ["anna.muster@example.com", "Max_Mustermann+shop@mail.Web.de", "k-1@t-online.de"]
    assert all(normalise._plain(text) for text in common)
    unusual = ["a..b@x.de", "a@x.test", "a@xn--bcher-kva.de", "a@b.c", "a@b.d1", "Anna <a@b.de>"]
    assert not any(normalise._plain(text) for text in unusual)
    too_long = "a" * 60 + "@" + ("b" * 60 + ".") * 4 + "de"  # 307 characters, each part valid
    assert not normalise._plain(too_long)
    assert normalise_email(too_long).problem is not None
