"""NPS surveys: identifies are checked against each survey's timing rules, due invitations
are mailed, and answers flow back into the event log, the profile and its mood."""

from closedloop.surveys.definition import SurveyDefinition, parse_survey
from closedloop.surveys.eligibility import Decision, Facts, decide, in_sample
from closedloop.surveys.engine import (
    SURVEY_SOURCE,
    Answer,
    SurveyRunner,
    evaluate,
    invitation_of,
    read_token,
    record_answer,
    send_due,
    token_for,
    why,
)
from closedloop.surveys.store import (
    delete_survey,
    eligibility,
    get_survey,
    list_surveys,
    save_survey,
    stats,
)

__all__ = [
    "SURVEY_SOURCE",
    "Answer",
    "Decision",
    "Facts",
    "SurveyDefinition",
    "SurveyRunner",
    "decide",
    "delete_survey",
    "eligibility",
    "evaluate",
    "get_survey",
    "in_sample",
    "invitation_of",
    "list_surveys",
    "parse_survey",
    "read_token",
    "record_answer",
    "save_survey",
    "send_due",
    "stats",
    "token_for",
    "why",
]
