"""Profiles: master-data normalisation (traits, computed traits and the timeline follow with
the identity issue)."""

from closedloop.profiles.masterdata import (
    Gender,
    Language,
    normalise_country,
    normalise_date,
    normalise_gender,
    normalise_postal_code,
    salutation,
    salutation_problem,
)

__all__ = [
    "Gender",
    "Language",
    "normalise_country",
    "normalise_date",
    "normalise_gender",
    "normalise_postal_code",
    "salutation",
    "salutation_problem",
]
