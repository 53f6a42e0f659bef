"""Ingest: sources and write keys, Segment message validation, the event log, group commit,
file imports."""

from closedloop.ingest import log
from closedloop.ingest.committer import AppendResult
from closedloop.ingest.log import EventQuery, FailedEvent, StoredEvent, count_events, list_events
from closedloop.ingest.messages import CALL_TYPES, EventRow, normalise_message
from closedloop.ingest.sources import (
    SOURCE_KINDS,
    NewSourceKey,
    Source,
    SourceId,
    WriteKeyResolver,
    add_source,
    ensure_source,
    get_source,
    list_sources,
    rotate_write_key,
    set_source_enabled,
)
from closedloop.ingest.tracking import Prepared, Rejection, prepare, write_key_from_body
from closedloop.ingest.writer import GroupCommitWriter

__all__ = [
    "CALL_TYPES",
    "SOURCE_KINDS",
    "AppendResult",
    "EventQuery",
    "EventRow",
    "FailedEvent",
    "GroupCommitWriter",
    "NewSourceKey",
    "Prepared",
    "Rejection",
    "Source",
    "SourceId",
    "StoredEvent",
    "WriteKeyResolver",
    "add_source",
    "count_events",
    "ensure_source",
    "get_source",
    "list_events",
    "list_sources",
    "log",
    "normalise_message",
    "prepare",
    "rotate_write_key",
    "set_source_enabled",
    "write_key_from_body",
]
