"""Profiles: the processor that derives identities and profiles from the event log, traits
(last write wins by event time), computed traits, consent, master data and its quality, and
the read side (look-up, timeline)."""

from closedloop.profiles.masterdata import (
    Gender,
    Language,
    full_name,
    normalise_country,
    normalise_date,
    normalise_gender,
    normalise_postal_code,
    salutation,
    salutation_problem,
)
from closedloop.profiles.processor import (
    BatchReport,
    Lag,
    ProcessorRunner,
    hold_derived_state,
    lag,
    process_available,
    process_batch,
    process_through,
    rebuild,
)

__all__ = [
    "BatchReport",
    "Gender",
    "Lag",
    "Language",
    "ProcessorRunner",
    "full_name",
    "hold_derived_state",
    "lag",
    "normalise_country",
    "normalise_date",
    "normalise_gender",
    "normalise_postal_code",
    "process_available",
    "process_batch",
    "process_through",
    "rebuild",
    "salutation",
    "salutation_problem",
]
