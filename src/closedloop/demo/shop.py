"""A synthetic running-shoe shop: web and app visits, checkout, POS, e-mail, call center.

Deterministic for a seed: message ids derive from the seed, so sending the demo again stores
nothing twice. Timestamps are placed in the `days` before `now`.
"""

from __future__ import annotations

import gzip
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson

from closedloop import clock

__all__ = ["DemoReport", "generate_shop", "send_demo"]

_FEMALE = [
    "Anna",
    "Julia",
    "Katrin",
    "Sabine",
    "Lena",
    "Marie",
    "Petra",
    "Sophie",
    "Claudia",
    "Jana",
]
_MALE = [
    "Peter",
    "Thomas",
    "Jan",
    "Michael",
    "Lukas",
    "Stefan",
    "Felix",
    "Andreas",
    "Paul",
    "Jonas",
]
_DIVERSE = ["Alex", "Kim", "Robin", "Sascha"]
_LAST = [
    "Müller",
    "Schmidt",
    "Schneider",
    "Fischer",
    "Weber",
    "Meyer",
    "Wagner",
    "Becker",
    "Schulz",
    "Hoffmann",
    "Koch",
    "Richter",
    "Klein",
    "Wolf",
    "Schröder",
    "Neumann",
]
_GENDER_SPELLINGS = {
    "female": ["female", "female", "w", "weiblich", "Frau", "Mrs", "f"],
    "male": ["male", "male", "m", "männlich", "Herr", "Mr"],
    "diverse": ["diverse", "d", "divers", "x"],
}

_CITIES = [
    ("01067", "Dresden", "351"),
    ("01307", "Dresden", "351"),
    ("04109", "Leipzig", "341"),
    ("09111", "Chemnitz", "371"),
    ("06108", "Halle (Saale)", "345"),
    ("10115", "Berlin", "30"),
    ("20095", "Hamburg", "40"),
    ("80331", "München", "89"),
    ("50667", "Köln", "221"),
    ("60311", "Frankfurt am Main", "69"),
    ("70173", "Stuttgart", "711"),
    ("99084", "Erfurt", "361"),
]
_STREETS = [
    "Hauptstraße",
    "Bahnhofstraße",
    "Schillerstraße",
    "Goethestraße",
    "Lindenweg",
    "Gartenstraße",
    "Königsbrücker Straße",
    "Prager Straße",
]
_CATEGORIES = ["Laufschuhe", "Trailschuhe", "Bekleidung", "Zubehör"]
_ARTICLES = [
    "laufen-im-winter",
    "der-richtige-laufschuh",
    "marathon-training",
    "trailrunning-basics",
    "regeneration",
    "laufen-mit-pulsuhr",
]
_PAGES = [
    "/",
    "/laufschuhe",
    "/trailschuhe",
    "/bekleidung",
    "/filialen",
    "/newsletter",
    "/account",
    "/hilfe/versand",
]
_COMMENTS_GOOD = [
    "Super Beratung, schnelle Lieferung!",
    "Tolle Schuhe, passen perfekt.",
    "Immer wieder gern.",
    "Great service, fast delivery.",
]
_COMMENTS_MID = ["Lieferung hat etwas gedauert.", "Ganz ok.", "Preise könnten besser sein."]
_COMMENTS_BAD = [
    "Retoure war kompliziert.",
    "Schuh nach zwei Wochen kaputt.",
    "Niemand am Telefon erreichbar.",
    "Kündigung war viel zu umständlich.",
]


@dataclass(frozen=True)
class DemoReport:
    customers: int
    events: int
    accepted_requests: int
    failed_events: int


def _phone(rng: random.Random, area: str) -> str:
    number = f"{rng.randint(1000000, 9999999)}"
    style = rng.random()
    if style < 0.4:
        return f"0{area} {number}"
    if style < 0.7:
        return f"+49 {area} {number}"
    if style < 0.85:
        return f"0{area}/{number}"
    return f"+49 1{rng.choice(['51', '60', '71', '76'])} {rng.randint(10000000, 99999999)}"


def _customer(
    rng: random.Random,
    i: int,
    *,
    seed: int,
    days: int,
    start: datetime,
    now: datetime,
    messages: list[dict[str, Any]],
) -> None:
    """Append one customer's messages."""
    counter = 0

    def msg(kind: str, at: datetime, channel: str, **fields: Any) -> None:
        nonlocal counter
        counter += 1
        message: dict[str, Any] = {
            "type": kind,
            "messageId": f"demo-{seed}-{i}-{counter}",
            "timestamp": at.isoformat(),
            "context": {"channel": channel, "library": {"name": "closedloop-demo"}},
            **fields,
        }
        messages.append(message)

    anonymous_id = f"anon-{seed}-{i:05d}-{rng.randrange(16**8):08x}"
    user_id = f"cust-{i + 1:05d}"
    channel = "app" if rng.random() < 0.3 else "web"
    first_seen = start + timedelta(seconds=rng.uniform(0, days * 86400 * 0.9))

    def at_random(after: datetime = first_seen) -> datetime:
        remaining = max(60.0, (now - after).total_seconds() - 60)
        return after + timedelta(seconds=rng.uniform(0, remaining))

    ids = {"anonymousId": anonymous_id}
    for _ in range(rng.randint(3, 20)):
        path = rng.choice(_PAGES)
        kind = "screen" if channel == "app" else "page"
        msg(
            kind,
            at_random(),
            channel,
            name=path.strip("/") or "Home",
            properties={"path": path, "title": path},
            **ids,
        )
    interest = rng.choice(_CATEGORIES)
    for _ in range(rng.randint(0, 6)):
        category = interest if rng.random() < 0.7 else rng.choice(_CATEGORIES)
        msg(
            "track",
            at_random(),
            channel,
            event="Product Viewed",
            properties={
                "product_id": f"P{rng.randint(100, 999)}",
                "category": category,
                "price": round(rng.uniform(19, 189), 2),
                "currency": "EUR",
            },
            **ids,
        )
    if rng.random() < 0.25:
        article = rng.choice(_ARTICLES)
        msg(
            "page",
            at_random(),
            channel,
            name="Magazin",
            properties={"path": f"/magazin/{article}"},
            **ids,
        )
        msg(
            "track",
            at_random(),
            channel,
            event="Article Rated",
            properties={
                "article_id": article,
                "rating": rng.choices([1, 2, 3, 4, 5], [1, 1, 2, 4, 4])[0],
            },
            **ids,
        )
        if rng.random() < 0.4:
            msg(
                "track",
                at_random(),
                channel,
                event="Article Shared",
                properties={
                    "article_id": article,
                    "network": rng.choice(["whatsapp", "facebook", "email"]),
                },
                **ids,
            )
    subscribed_at = None
    if rng.random() < 0.3:
        subscribed_at = at_random()
        msg(
            "track",
            subscribed_at,
            channel,
            event="Newsletter Subscribed",
            properties={"list": "running-news"},
            **ids,
        )
    known = rng.random() < 0.6
    if not known:
        return
    checkout = at_random()
    gender = rng.choices(["female", "male", "diverse"], [48, 48, 4])[0]
    first = rng.choice({"female": _FEMALE, "male": _MALE, "diverse": _DIVERSE}[gender])
    last = rng.choice(_LAST)
    postal, city, area = rng.choice(_CITIES)
    email = f"{first}.{last}{i}@example.com".lower().replace("ü", "ue").replace("ö", "oe")
    phone = _phone(rng, area)
    traits: dict[str, Any] = {
        "email": email if rng.random() < 0.9 else email.upper(),
        "firstName": first,
        "lastName": last,
        # Shop systems spell gender in many ways; the profile's master data cleans it.
        "gender": rng.choice(_GENDER_SPELLINGS[gender]),
        "phone": phone,
        "street": f"{rng.choice(_STREETS)} {rng.randint(1, 120)}",
        # A spreadsheet export lost the leading zero now and then: 1067 for 01067.
        "postalCode": int(postal) if postal.startswith("0") and rng.random() < 0.3 else postal,
        "city": city,
        "createdAt": checkout.isoformat(),
        "consent": {"surveys": rng.random() < 0.7, "crm_sync": rng.random() < 0.8},
    }
    if rng.random() < 0.03:
        traits["salutation"] = "Herr" if gender == "female" else "Frau"  # a contradiction
    msg("identify", checkout, channel, userId=user_id, traits=traits, **ids)
    if rng.random() < 0.2:
        # A second device: browsed anonymously, then logged in there too (profiles merge).
        second = f"anon-{seed}-{i:05d}-dev2"
        second_channel = "web" if channel == "app" else "app"
        for _ in range(rng.randint(1, 4)):
            msg(
                "page" if second_channel == "web" else "screen",
                at_random(checkout),
                second_channel,
                name="Laufschuhe",
                properties={"path": "/laufschuhe"},
                anonymousId=second,
            )
        login = at_random(checkout)
        msg("identify", login, second_channel, userId=user_id, anonymousId=second, traits={})
    if i % 97 == 1:
        # A family tablet: this customer logs in on the previous customer's device. Two user
        # ids never merge; the conflict is recorded on both profiles.
        shared = f"anon-{seed}-{i - 1:05d}-family-tablet"
        msg("identify", at_random(checkout), "web", userId=f"cust-{i:05d}", anonymousId=shared)
        msg("identify", at_random(checkout), "web", userId=user_id, anonymousId=shared)
    msg(
        "track",
        checkout + timedelta(seconds=30),
        channel,
        event="Order Completed",
        userId=user_id,
        anonymousId=anonymous_id,
        properties={
            "order_id": f"W{seed}{i:05d}",
            "revenue": round(rng.uniform(30, 260), 2),
            "currency": "EUR",
            "category": interest,
        },
    )
    uid = {"userId": user_id}
    if rng.random() < 0.15:
        msg(
            "track",
            at_random(checkout),
            "pos",
            event="Order Completed",
            properties={
                "order_id": f"POS{seed}{i:05d}",
                "store": city,
                "revenue": round(rng.uniform(20, 200), 2),
                "currency": "EUR",
            },
            **uid,
        )
    if subscribed_at is not None:
        for _ in range(rng.randint(0, 4)):
            msg(
                "track",
                at_random(max(subscribed_at, checkout)),
                "email",
                event=rng.choice(["Email Opened", "Email Clicked"]),
                properties={"campaign": rng.choice(["fruehling", "marathon", "sale"])},
                **uid,
            )
        if rng.random() < 0.2:
            msg(
                "track",
                at_random(max(subscribed_at, checkout)),
                channel,
                event="Newsletter Unsubscribed",
                properties={"list": "running-news"},
                **uid,
            )
    if rng.random() < 0.08:
        msg(
            "page",
            at_random(checkout),
            channel,
            name="Vertrag",
            properties={"path": "/account/vertrag"},
            **uid,
        )
    if rng.random() < 0.04:
        msg(
            "page",
            at_random(checkout),
            channel,
            name="Kündigung",
            properties={"path": "/account/kuendigung"},
            **uid,
        )
    if rng.random() < 0.35:
        score = rng.choices(range(11), [2, 1, 1, 2, 2, 3, 4, 8, 10, 14, 12])[0]
        comments = _COMMENTS_GOOD if score >= 9 else _COMMENTS_MID if score >= 7 else _COMMENTS_BAD
        msg(
            "track",
            at_random(checkout),
            "email",
            event="NPS Answered",
            properties={"score": score, "comment": rng.choice(comments), "survey": "nps-demo"},
            **uid,
        )
    if rng.random() < 0.08:
        reason = rng.choice(["complaint", "question", "cancellation"])
        called = at_random(checkout)
        # The call center knows the caller by phone number only, written its own way.
        caller = {"anonymousId": f"call-{seed}-{i:05d}"}
        spoken = phone.replace(" ", "").replace("/", "")
        msg("identify", called, "callcenter", traits={"phone": spoken}, **caller)
        msg(
            "track",
            called + timedelta(seconds=5),
            "callcenter",
            event="Call Logged",
            properties={
                "reason": reason,
                "duration_s": rng.randint(60, 900),
                "sentiment": "negative" if reason != "question" else "neutral",
            },
            **caller,
        )


def generate_shop(
    *, customers: int = 2000, days: int = 90, seed: int = 7, now: datetime
) -> Iterator[dict[str, Any]]:
    """Yield the shop's messages (Segment format), ordered by time."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    messages: list[dict[str, Any]] = []
    start = now - timedelta(days=days)
    for i in range(customers):
        _customer(rng, i, seed=seed, days=days, start=start, now=now, messages=messages)
    messages.sort(key=lambda m: m["timestamp"])
    yield from messages


def send_demo(
    url: str,
    write_key: str,
    *,
    customers: int = 2000,
    days: int = 90,
    seed: int = 7,
    now: datetime,
    batch_size: int = 500,
    timeout: float = 30.0,
) -> DemoReport:
    """Send the demo shop to a running hub through `POST /v1/batch` (gzip, Basic auth)."""
    events = 0
    requests = 0
    failed = 0
    batch: list[dict[str, Any]] = []
    auth = httpx.BasicAuth(write_key, "")
    with httpx.Client(base_url=url.rstrip("/"), auth=auth, timeout=timeout) as client:

        def post(items: list[dict[str, Any]]) -> None:
            nonlocal requests, failed
            body = gzip.compress(orjson.dumps({"batch": items, "sentAt": clock.now().isoformat()}))
            for _attempt in range(20):
                response = client.post(
                    "/v1/batch",
                    content=body,
                    headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
                )
                if response.status_code in (429, 503):
                    time.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                response.raise_for_status()
                failed += len(response.json().get("failed", []))
                requests += 1
                return
            raise RuntimeError("the hub kept answering 503: is it overloaded?")

        for message in generate_shop(customers=customers, days=days, seed=seed, now=now):
            batch.append(message)
            events += 1
            if len(batch) >= batch_size:
                post(batch)
                batch = []
        if batch:
            post(batch)
    return DemoReport(
        customers=customers, events=events, accepted_requests=requests, failed_events=failed
    )
