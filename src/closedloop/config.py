"""Settings: one frozen object, loaded once at start and passed down.

Every field reads from the environment with the prefix `CLOSEDLOOP_` (nested with `__`, e.g.
`CLOSEDLOOP_INGEST__MAX_EVENT_BYTES`) and from a `.env` file in the working directory, which
`closedloop init` writes. Nothing else in closedloop reads `os.environ`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "FeedSettings",
    "ForwardTarget",
    "IdentitySettings",
    "IngestSettings",
    "MoodSettings",
    "ProcessorSettings",
    "ProfileSettings",
    "SegmentSettings",
    "Settings",
    "SurveySettings",
    "load_settings",
]


class IngestSettings(BaseModel):
    """Limits and tuning of the tracking API and file imports."""

    model_config = ConfigDict(frozen=True)

    max_event_bytes: int = Field(
        32 * 1024, ge=256, description="Largest single event, as JSON, in bytes (Segment: 32 KB)."
    )
    max_request_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="Largest request body as sent (compressed or not)."
    )
    max_decompressed_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest body after gzip decompression; a bomb is refused unread.",
    )
    max_batch_events: int = Field(2500, ge=1, description="Most events in one `/v1/batch` call.")
    max_id_length: int = Field(
        255, ge=1, description="Longest `userId`, `anonymousId`, `groupId`, `previousId`."
    )
    max_message_id_length: int = Field(100, ge=1, description="Longest `messageId` (Segment: 100).")
    max_json_depth: int = Field(
        32, ge=2, description="Deepest nesting of objects and arrays inside one event."
    )
    queue_max_events: int = Field(
        50_000,
        ge=100,
        description="Events waiting for the writer before new requests get 503 + Retry-After.",
    )
    group_max_events: int = Field(
        10_000, ge=1, description="Most events the writer commits in one transaction."
    )
    retry_after_seconds: int = Field(
        2, ge=1, description="`Retry-After` sent with 503 when overloaded or the store is down."
    )
    rate_limit_events_per_second: float = Field(
        0,
        ge=0,
        description="Events per second one source may send, per server process; more gets 429 "
        "with `Retry-After` (SDKs retry it). 0: no limit.",
    )
    rate_limit_burst: int = Field(
        0,
        ge=0,
        description="Events a source may send at once above its rate (0: ten seconds' worth).",
    )
    write_key_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long a write-key lookup is cached; a disabled key stops within it.",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="SQLite `synchronous` pragma: FULL survives power loss, NORMAL only crashes.",
    )


class IdentitySettings(BaseModel):
    """How identifiers join into one customer, and the customer key shared with other systems."""

    model_config = ConfigDict(frozen=True)

    default_region: str = Field(
        "DE",
        min_length=2,
        max_length=2,
        description="Country a phone number without `+` code is read in (ISO 3166 alpha-2).",
    )
    merge_on_email: bool = Field(
        True, description="The same e-mail address on two profiles joins them."
    )
    merge_on_phone: bool = Field(
        True, description="The same phone number on two profiles joins them."
    )
    max_anonymous_ids: int = Field(
        100,
        ge=1,
        description="Most anonymous ids one profile may hold; more (a shared kiosk) is refused "
        "and recorded as a conflict.",
    )
    customer_key_secret: SecretStr | None = Field(
        None,
        description="Secret of the customer key (HMAC-SHA256 of the e-mail); "
        "`closedloop init` makes one. Without it `CLOSEDLOOP_SECRET_KEY` is used.",
    )
    customer_key_version: int = Field(
        1, ge=1, le=9999, description="Version written into every customer key (`v1.`...)."
    )


ConsentMode = Literal["opt_in", "opt_out"]


class ProfileSettings(BaseModel):
    """Traits and consent on the profile."""

    model_config = ConfigDict(frozen=True)

    consent_purposes: tuple[str, ...] = Field(
        ("analytics", "surveys", "crm_sync", "marketing"),
        min_length=1,
        description="Purposes a customer can consent to (JSON list in the environment).",
    )
    max_traits: int = Field(
        500, ge=10, description="Most traits one profile keeps; further new names are ignored."
    )
    consent_modes: dict[str, ConsentMode] = Field(
        default_factory=lambda: {  # type: ignore[arg-type] # mypy widens the literals
            "analytics": "opt_out",
            "surveys": "opt_in",
            "crm_sync": "opt_in",
            "marketing": "opt_in",
        },
        description="Per purpose: `opt_in` (nothing without a statement granting it) or "
        "`opt_out` (granted until withdrawn). A purpose not listed is `opt_in`. JSON in the "
        'environment: `CLOSEDLOOP_PROFILES__CONSENT_MODES=\'{"analytics": "opt_out"}\'`.',
    )

    def opt_out(self, purpose: str) -> bool:
        """Whether `purpose` counts as granted while the customer has said nothing."""
        return self.consent_modes.get(purpose) == "opt_out"

    def opt_out_purposes(self) -> frozenset[str]:
        return frozenset(p for p, mode in self.consent_modes.items() if mode == "opt_out")

    def granted(self, consent: dict[str, Any], purpose: str) -> bool:
        """Whether a profile's consent document grants `purpose` (its latest statement,
        else the purpose's mode)."""
        statement = consent.get(purpose)
        if isinstance(statement, list) and statement and isinstance(statement[0], bool):
            return statement[0]
        return self.opt_out(purpose)


class MoodSettings(BaseModel):
    """How signals add up to a customer's mood."""

    model_config = ConfigDict(frozen=True)

    half_life_days: float = Field(
        90, gt=0, le=3650, description="A signal counts half after this many days."
    )
    positive_threshold: float = Field(
        0.2, gt=0, le=1, description="Score from which the mood is positive."
    )
    negative_threshold: float = Field(
        -0.2, ge=-1, lt=0, description="Score up to which the mood is negative."
    )
    churn_risk_days: int = Field(
        60, ge=1, le=3650, description="A churn-risk signal (cancellation page) counts this long."
    )
    max_signals: int = Field(
        50, ge=5, le=1000, description="Most signals kept per profile (the newest)."
    )
    reasons: int = Field(3, ge=1, le=20, description="Strongest signals shown as reasons.")


class SegmentSettings(BaseModel):
    """When segment membership is refreshed."""

    model_config = ConfigDict(frozen=True)

    refresh_seconds: float = Field(
        900, ge=10, description="Every segment is evaluated at least this often (windows pass)."
    )
    refresh_after_events_seconds: float = Field(
        2,
        ge=0.1,
        description="After the processor applied new events, segments are refreshed this soon.",
    )
    indexed_traits: tuple[
        Annotated[
            str,
            StringConstraints(
                pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63})?$"
            ),
        ],
        ...,
    ] = Field(
        ("address.city", "address.postalCode", "address.country", "city", "gender"),
        max_length=20,
        description="SQLite: traits with an index for conditions comparing them with text "
        '(`trait city = "Dresden"`, `in [...]`), so a count does not read every profile. '
        "The server creates and drops the indexes to match at its next full refresh.",
    )
    count_parts: int = Field(
        default_factory=lambda: min(8, os.cpu_count() or 1),
        ge=1,
        le=32,
        description="SQLite: a live count that meets the event tallies with other conditions "
        "(the segment editor, `POST /v1/segments/preview`) runs in this many parts at once, "
        "each a range of profile ids on its own connection; the number of CPU cores (at most "
        "8) by default, 1 to count in one query.",
    )


class ProcessorSettings(BaseModel):
    """The processor that derives identities and profiles from the event log."""

    model_config = ConfigDict(frozen=True)

    embedded: bool = Field(
        True,
        description="Run the processor, segment refreshes, the feed scheduler and the survey "
        "runner inside `closedloop serve` (off when `closedloop worker` processes do it).",
    )
    batch_events: int = Field(
        5000, ge=1, le=100_000, description="Most events processed in one transaction."
    )
    poll_seconds: float = Field(
        0.1, gt=0, le=60, description="Pause of an idle processor before it looks again."
    )
    pipeline: bool = Field(
        True,
        description="Write a batch in a thread of its own while the next one is read and "
        "applied (ADR 0017; PostgreSQL: ADR 0018). Off: one batch after the other.",
    )


class FeedSettings(BaseModel):
    """CRM feeds: where files go, credentials, outbound safety, retries and scheduling."""

    model_config = ConfigDict(frozen=True)

    local_dir: Path = Field(
        Path("exports"),
        description="Root of `local` destinations: a feed's `path` is a folder inside it.",
    )
    staging_dir: Path = Field(
        Path("var/feeds"),
        description="Where a run writes its file before it uploads it to a remote destination.",
    )
    secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Credentials by name, referenced by destinations as `password_secret`, "
        '`key_secret` or `signing_secret`: `CLOSEDLOOP_FEEDS__SECRETS=\'{"crm-ftps": "..."}\'`.',
    )
    secrets_file: Path | None = Field(
        None,
        description="A YAML or JSON file of `name: value` credentials (read at each run; "
        "values there win over `secrets`). Keep it readable by the hub's user only.",
    )
    allowed_hosts: tuple[str, ...] = Field(
        (),
        description="Host names, addresses or networks (`10.0.0.0/8`) the hub may connect to "
        "although they are loopback, private or link-local (refused otherwise): feed "
        "destinations, forwarding and the SMTP server.",
    )
    allow_plain_http: bool = Field(
        False, description="Allow `http://` webhooks (only for tests and closed networks)."
    )
    timeout_seconds: float = Field(
        30, gt=0, le=600, description="Connect and read timeout of one destination operation."
    )
    retries: int = Field(
        4, ge=0, le=20, description="Retries of a transient delivery error within a run."
    )
    backoff_seconds: float = Field(
        1.0, ge=0, le=300, description="First retry delay; it doubles with each retry."
    )
    lease_seconds: float = Field(
        300,
        ge=5,
        description="A running feed's lease: a run whose worker died is taken over after it.",
    )
    poll_seconds: float = Field(
        30, gt=0, le=3600, description="How often the scheduler looks for due feeds."
    )
    batch_rows: int = Field(
        500, ge=1, le=100_000, description="Rows per webhook request (JSON batch)."
    )
    processes: int = Field(
        0,
        ge=0,
        le=64,
        description="Processes that write a full feed's file together: `0` one per CPU core "
        "(at most 4), `1` the run's own process alone. The customers are cut into ranges of "
        "`range_rows` profile ids, each written by the next free process; the file is the "
        "same, byte for byte.",
    )
    range_rows: int = Field(
        25_000,
        ge=1,
        le=10_000_000,
        description="Profiles per range of a feed written by several processes; a feed with "
        "fewer customers is written by the run's own process alone. A worker takes ranges "
        "once it has started (about 1 s), so a feed the run's process finishes first does "
        "not wait for it.",
    )

    def process_count(self) -> int:
        """How many processes write a full feed (`processes`, 0 resolved)."""
        if self.processes:
            return self.processes
        return max(1, min(os.cpu_count() or 1, 4))


class ForwardTarget(BaseModel):
    """A Segment-compatible endpoint (`/v1/identify`) and the name of its write key."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(description="The endpoint, e.g. `https://api.segment.io/v1/identify`.")
    write_key_secret: str = Field(description="The name of the secret holding the write key.")
    purpose: str = Field(
        "surveys",
        description="The consent purpose a customer must grant for her answer to go there.",
    )


class SurveySettings(BaseModel):
    """NPS surveys: how invitations are mailed and answered."""

    model_config = ConfigDict(frozen=True)

    base_url: str = Field(
        "http://127.0.0.1:8000",
        description="The hub's public address, for the rating links in the mails.",
    )
    outbox_dir: Path = Field(
        Path("outbox"),
        description="Without `SMTP_HOST`, mails are written here as `.eml` files.",
    )
    smtp_host: str | None = Field(None, description="The SMTP server; none: the outbox.")
    smtp_port: int = Field(587, ge=1, le=65535, description="The SMTP server's port.")
    smtp_security: Literal["starttls", "tls"] = Field(
        "starttls", description="STARTTLS on a plain connection, or TLS from the start (465)."
    )
    smtp_user: str | None = Field(None, description="SMTP login name, if the server wants one.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    smtp_ca_file: Path | None = Field(
        None, description="CA file to verify the SMTP server with (the system's CAs if none)."
    )
    token_days: int = Field(
        30, ge=1, le=365, description="How long a rating link can be used (and the answer changed)."
    )
    retries: int = Field(5, ge=0, le=20, description="Retries of a mail on a transient error.")
    backoff_seconds: float = Field(
        60, ge=0, le=86_400, description="First retry delay of a mail; it doubles each time."
    )
    templates_dir: Path | None = Field(
        None,
        description="A folder with your own `mail.txt`, `mail.html` or `page.html` (Jinja2, "
        "autoescaped); the shipped ones are used for files it does not have.",
    )
    trait_prefix: str = Field(
        "nps",
        pattern=r"^[a-z][a-z0-9_]{0,30}$",
        description="Traits set from an answer: `<prefix>_rating`, `_comment`, `_date`.",
    )
    poll_seconds: float = Field(
        60, gt=0, le=3600, description="How often the worker evaluates identifies and sends."
    )
    forward: tuple[ForwardTarget, ...] = Field(
        (),
        description="Segment-compatible endpoints that get the answer's identify at once: "
        '`[{"url": "https://api.segment.io/v1/identify", "write_key_secret": "segment"}]`; '
        "the write key is a secret in `FEEDS__SECRETS` or the secrets file.",
    )


class PrivacySettings(BaseModel):
    """Erasure, retention and the privacy job."""

    model_config = ConfigDict(frozen=True)

    events_days: int = Field(
        730,
        ge=0,
        description="Raw events older than this (by arrival) are deleted; 0 keeps them. "
        "Profiles keep what was derived; a rebuild then starts from the events kept.",
    )
    failed_events_days: int = Field(
        30, ge=0, description="Failed events (kept for inspection) older than this are deleted."
    )
    invitations_days: int = Field(
        365,
        ge=0,
        description="Survey invitations and eligibility decisions older than this are deleted "
        "(the answers stay: see `answers_days`).",
    )
    answers_days: int = Field(
        730, ge=0, description="Survey answers (score and comment) older than this are deleted."
    )
    history_days: int = Field(
        730, ge=0, description="Segment entry and exit history older than this is deleted."
    )
    feed_files_days: int = Field(
        90,
        ge=0,
        description="Feed files in `FEEDS__LOCAL_DIR` and `FEEDS__STAGING_DIR` older than this "
        "are deleted.",
    )
    audit_days: int = Field(
        1095, ge=0, description="Privacy audit entries older than this are deleted."
    )
    lease_seconds: int = Field(
        300,
        ge=10,
        description="An erasure whose worker stopped is taken up again after this long.",
    )
    poll_seconds: float = Field(
        60,
        gt=0,
        description="How often the privacy job looks for erasures to resume and for the "
        "daily retention run.",
    )


class Settings(BaseSettings):
    """All of closedloop's settings."""

    model_config = SettingsConfigDict(
        env_prefix="CLOSEDLOOP_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    database_url: str = Field(
        "sqlite:///closedloop.db",
        description="SQLAlchemy URL: `sqlite:///FILE` or `postgresql+psycopg://USER@HOST/DB`.",
    )
    secret_key: SecretStr | None = Field(
        None, description="Secret for keyed hashes and signed tokens; `closedloop init` makes one."
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bootstrap admin token, sent as `Authorization: Bearer ...` to admin routes.",
    )
    host: str = Field("127.0.0.1", description="Address `closedloop serve` listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port `closedloop serve` listens on.")
    demo_write_key: SecretStr | None = Field(
        None, description="Write key of the `demo` source; `closedloop init` stores it for `demo`."
    )
    demo_password: SecretStr | None = Field(
        None,
        description="Password of the dashboard's `demo` user; `closedloop init` makes one.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level of the server."
    )
    ingest: IngestSettings = Field(
        default_factory=IngestSettings, description="Tracking API limits and writer tuning."
    )
    identity: IdentitySettings = Field(
        default_factory=IdentitySettings, description="Identity resolution and customer key."
    )
    profiles: ProfileSettings = Field(
        default_factory=ProfileSettings, description="Traits and consent."
    )
    mood: MoodSettings = Field(default_factory=MoodSettings, description="Mood scoring.")
    segments: SegmentSettings = Field(
        default_factory=SegmentSettings, description="Segment refresh."
    )
    processor: ProcessorSettings = Field(
        default_factory=ProcessorSettings, description="The event-log processor."
    )
    feeds: FeedSettings = Field(default_factory=FeedSettings, description="CRM feeds.")
    surveys: SurveySettings = Field(default_factory=SurveySettings, description="NPS surveys.")
    privacy: PrivacySettings = Field(
        default_factory=PrivacySettings, description="Erasure and retention."
    )


def load_settings(**overrides: object) -> Settings:
    """Load settings from the environment and `.env`, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
