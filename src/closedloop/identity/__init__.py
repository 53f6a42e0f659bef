"""Identity: normalised identifiers (e-mail, phone) and the keyed customer key.

The identity graph and merge rules build on these (see the open identity issue).
"""

from closedloop.identity.keys import customer_key, is_customer_key
from closedloop.identity.normalise import Normalised, Problem, normalise_email, normalise_phone

__all__ = [
    "Normalised",
    "Problem",
    "customer_key",
    "is_customer_key",
    "normalise_email",
    "normalise_phone",
]
