"""Privacy: erasure that reaches every table and sticks (suppression), subject export,
retention, customer-key rotation and the audit log; consent is enforced where data is used
(feeds, surveys, segments) with the per-purpose modes in `ProfileSettings.consent_modes`.

`registry.REGISTRY` classifies every table of the store; see ADR 0006.
"""

from closedloop.privacy.audit import AuditEntry, list_audit
from closedloop.privacy.erasure import (
    KINDS,
    Erasure,
    get_erasure,
    list_erasures,
    request_erasure,
    resume_erasures,
)
from closedloop.privacy.export import export_subject
from closedloop.privacy.job import PrivacyRunner, run_privacy_once
from closedloop.privacy.keys import rotate_customer_keys, stale_keys
from closedloop.privacy.registry import REGISTRY
from closedloop.privacy.retention import apply_retention

__all__ = [
    "KINDS",
    "REGISTRY",
    "AuditEntry",
    "Erasure",
    "PrivacyRunner",
    "apply_retention",
    "export_subject",
    "get_erasure",
    "list_audit",
    "list_erasures",
    "request_erasure",
    "resume_erasures",
    "rotate_customer_keys",
    "run_privacy_once",
    "stale_keys",
]
