"""The identity graph's rules: which profile an event belongs to, and which profiles it joins.

Identifiers are keyed `<kind>:<value>`: `u:` user id, `a:` anonymous id, `e:` e-mail
(normalised), `p:` phone (E.164). Each identifier belongs to one profile. The rules:

- an event's user id decides its profile; without one, its e-mail, phone, then anonymous id;
- identify (or any call) with an anonymous id and a user id joins them; `alias` joins
  `previousId` (a user id or an anonymous id) into `userId`, even across two user ids,
  because it is an explicit statement;
- the same e-mail (or phone) on two profiles joins them, unless a setting turns it off;
- two profiles with different user ids are never joined automatically: the refusal is
  recorded as a conflict (shared devices, family accounts);
- a profile holds at most `max_anonymous_ids` anonymous ids: a shared kiosk cannot join half
  the customers; the refusal is recorded as a conflict.

`resolve` applies these rules to one event against a `WorkingSet`, which the processor backs
with the store (and tests with memory). The outcome depends only on the order of events, so
replaying the log gives the same graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "ConflictReason",
    "EventIds",
    "Node",
    "Via",
    "WorkingSet",
    "identity_key",
    "resolve",
    "split_key",
]

Via = Literal["user_id", "anonymous_id", "email", "phone", "alias"]
ConflictReason = Literal["different_user_ids", "anonymous_id_limit"]

_PREFIX = {"user_id": "u:", "anonymous_id": "a:", "email": "e:", "phone": "p:"}
_KIND = {v: k for k, v in _PREFIX.items()}


def identity_key(kind: str, value: str) -> str:
    """The key of an identifier: `identity_key("email", "anna@example.com")` -> `e:anna@...`."""
    return _PREFIX[kind] + value


def split_key(key: str) -> tuple[str, str]:
    """`u:42` -> (`user_id`, `42`)."""
    return _KIND[key[:2]], key[2:]


@dataclass(frozen=True, slots=True)
class EventIds:
    """The identifiers one event carries, already normalised."""

    user_id: str | None = None
    anonymous_id: str | None = None
    email: str | None = None
    phone: str | None = None
    previous_id: str | None = None  # alias only


class Node(Protocol):
    """What the rules need to know of a profile."""

    @property
    def id(self) -> str: ...
    @property
    def user_ids(self) -> list[str]: ...
    @property
    def anonymous_ids(self) -> int: ...


class WorkingSet(Protocol):
    """The part of the graph an event touches; `resolve` reads and changes it through this."""

    def owner(self, key: str) -> str | None:
        """The (surviving) profile `key` belongs to, or None for a new identifier."""

    def node(self, profile_id: str) -> Node: ...

    def new_profile(self) -> str:
        """Create a profile for the current event and answer its id."""

    def attach(self, key: str, profile_id: str) -> None:
        """Give the new identifier `key` to the profile (user ids and anonymous-id count too)."""

    def merge(self, survivor_id: str, merged_id: str, *, via: Via) -> None:
        """Join `merged_id` into `survivor_id`: identifiers, traits, history."""

    def conflict(
        self, profile_id: str, other_id: str, key: str, *, reason: ConflictReason
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Rules:
    merge_on_email: bool = True
    merge_on_phone: bool = True
    max_anonymous_ids: int = 100


def resolve(ws: WorkingSet, ids: EventIds, rules: Rules) -> str:
    """Apply the rules for one event; answer the id of the profile the event belongs to."""
    user_key = identity_key("user_id", ids.user_id) if ids.user_id else None
    primary = ws.owner(user_key) if user_key else None

    # The identifiers that may join profiles, strongest first, and those only attached.
    joining: list[tuple[Via, str]] = []
    attach_only: list[str] = []
    if ids.previous_id is not None:
        previous_user = identity_key("user_id", ids.previous_id)
        previous_key = (
            previous_user
            if ws.owner(previous_user) is not None
            else identity_key("anonymous_id", ids.previous_id)
        )
        previous_owner = ws.owner(previous_key)
        if previous_owner is not None:
            if primary is None:
                primary = previous_owner
            elif previous_owner != primary:
                ws.merge(primary, previous_owner, via="alias")
        else:
            joining.append(("anonymous_id", previous_key))
    for kind, value, allowed in (
        ("email", ids.email, rules.merge_on_email),
        ("phone", ids.phone, rules.merge_on_phone),
    ):
        if value is not None:
            key = identity_key(kind, value)
            if allowed:
                joining.append((kind, key))  # type: ignore[arg-type]
            else:
                attach_only.append(key)
    if ids.anonymous_id is not None:
        joining.append(("anonymous_id", identity_key("anonymous_id", ids.anonymous_id)))

    if primary is None:
        for _via, key in joining:
            owner = ws.owner(key)
            # A profile with another user id never takes this event's user id.
            if owner is not None and not (user_key and ws.node(owner).user_ids):
                primary = owner
                break
    if primary is None:
        primary = ws.new_profile()
    if user_key is not None and ws.owner(user_key) is None:
        ws.attach(user_key, primary)

    for via, key in joining:
        owner = ws.owner(key)
        if owner is None:
            if via == "anonymous_id" and ws.node(primary).anonymous_ids >= rules.max_anonymous_ids:
                ws.conflict(primary, "", key, reason="anonymous_id_limit")
            else:
                ws.attach(key, primary)
            continue
        if owner == primary:
            continue
        ours, theirs = ws.node(primary), ws.node(owner)
        if ours.user_ids and theirs.user_ids:
            ws.conflict(primary, owner, key, reason="different_user_ids")
        elif ours.anonymous_ids + theirs.anonymous_ids > rules.max_anonymous_ids:
            ws.conflict(primary, owner, key, reason="anonymous_id_limit")
        else:
            ws.merge(primary, owner, via=via)
    for key in attach_only:
        if ws.owner(key) is None:
            ws.attach(key, primary)
    return primary
