"""A feed's definition: which customers, which columns, which format, where to, when.

Definitions are data (`closedloop apply`, `/v1/feeds`), validated here with errors that name
the field (`columns[2].transforms[0]`). Nothing in a definition is executed: column sources
and transforms are names from fixed lists, the file name template knows four placeholders,
and date formats are limited to strftime codes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from closedloop.errors import InvalidInputError, parse_definition
from closedloop.profiles.quality import FIELDS

__all__ = [
    "Column",
    "CsvFormat",
    "Delta",
    "Destination",
    "FeedDefinition",
    "FtpsDestination",
    "JsonlFormat",
    "LocalDestination",
    "Schedule",
    "SftpDestination",
    "Source",
    "WebhookDestination",
    "check_name",
    "parse_feed",
    "render_file_name",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")
_HOST = re.compile(r"^[A-Za-z0-9.\-:\[\]]{1,253}$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,200}$")
_FOLDER = re.compile(r"^(?:[A-Za-z0-9_.\-]+/)*[A-Za-z0-9_.\-]*$")
_REMOTE_DIR = re.compile(r"^/?(?:[A-Za-z0-9_.\-]+/?)*$")
# strftime codes a date format may use: no locale-dependent or platform-specific codes.
_DATE_FORMAT = re.compile(r"^(?:%[dmYyHMSjbBaAzZf%]|[ \-./:T,_A-Za-z0-9])*$")
_PLACEHOLDER = re.compile(r"\{(feed|run|date|time)(?::([^{}]*))?\}")
_SHA256_HEX = re.compile(r"^(?:[0-9A-Fa-f]{2}:?){31}[0-9A-Fa-f]{2}$")
_SSH_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}=?$")

# Column sources: exact names, and prefixes followed by a name.
MASTERDATA_FIELDS = FIELDS
COMPUTED_FIELDS = ("events", "orders", "revenue", "first_seen", "last_seen", "channels")
EXACT_SOURCES = (
    "customer_key",
    "previous_customer_key",
    "profile_id",
    "created_at",
    "updated_at",
    "segments",
    "segment.entered_at",
    "mood.label",
    "mood.score",
    "mood.churn_risk",
    "nps.score",
    "nps.date",
)
_TRAIT = re.compile(r"^trait\.[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")
_CONSENT = re.compile(r"^consent\.[a-z0-9_]{1,64}$")
TRANSFORMS = (
    "postal_code",
    "salutation",
    "e164",
    "date",
    "upper",
    "lower",
    "trim",
    "default",
    "max_length",
)
_NO_ARGUMENT = ("e164", "upper", "lower", "trim")


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(
            f"invalid feed name `{str(name)[:64]}`: lower-case letters, digits, `-` and `_`, "
            "at most 64",
            field="name",
        )
    return name


def _check_source(source: str) -> str:
    if source in EXACT_SOURCES or _TRAIT.fullmatch(source) or _CONSENT.fullmatch(source):
        return source
    head, _, tail = source.partition(".")
    if head == "masterdata" and tail in MASTERDATA_FIELDS:
        return source
    if head == "computed" and tail in COMPUTED_FIELDS:
        return source
    raise ValueError(
        f"unknown source `{source[:100]}`: use one of {', '.join(EXACT_SOURCES)}, "
        f"masterdata.<{'|'.join(MASTERDATA_FIELDS)}>, computed.<{'|'.join(COMPUTED_FIELDS)}>, "
        "trait.<name> or consent.<purpose>"
    )


def _check_transform(item: Any) -> dict[str, Any]:
    """`upper` or `{date: "%d.%m.%Y"}` -> `{"date": "%d.%m.%Y"}` (one key)."""
    if isinstance(item, str):
        name, argument = item, None
    elif isinstance(item, dict) and len(item) == 1:
        name, argument = next(iter(item.items()))
    else:
        raise ValueError("a transform is a name (`upper`) or one `name: argument` pair")
    if name not in TRANSFORMS:
        raise ValueError(
            f"unknown transform `{str(name)[:40]}`: use one of {', '.join(TRANSFORMS)}"
        )
    if name in _NO_ARGUMENT:
        if argument is not None:
            raise ValueError(f"`{name}` takes no argument")
    elif name == "date":
        if not isinstance(argument, str) or not 0 < len(argument) <= 40:
            raise ValueError('`date` needs a format such as `"%d.%m.%Y"`')
        if not _DATE_FORMAT.fullmatch(argument):
            raise ValueError(
                f"date format `{argument}`: only %d %m %Y %y %H %M %S %j %b %B %a %A %z %Z %f, "
                "letters, digits and ` -./:T,_`"
            )
    elif name == "max_length":
        if (
            isinstance(argument, bool)
            or not isinstance(argument, int)
            or not 1 <= argument <= 10_000
        ):
            raise ValueError("`max_length` needs a whole number from 1 to 10000")
    elif name == "default":
        if not isinstance(argument, str | int | float) or isinstance(argument, bool):
            raise ValueError("`default` needs a text or a number")
        if len(str(argument)) > 1000:
            raise ValueError("`default` is longer than 1000 characters")
    elif name == "salutation":
        argument = argument or "de"
        if argument not in ("de", "en"):
            raise ValueError("`salutation` takes the language `de` (Frau/Herr) or `en` (Ms/Mr)")
    elif name == "postal_code":
        if argument is not None and (not isinstance(argument, str) or len(argument) != 2):
            raise ValueError("`postal_code` takes a two-letter country (`DE`) or nothing")
        argument = argument.upper() if isinstance(argument, str) else None
    return {name: argument}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(_Model):
    name: str = Field(min_length=1, max_length=100, description="The column's header.")
    source: str | None = Field(None, description="Where the value comes from.")
    value: str | None = Field(None, max_length=1000, description="A constant instead.")
    transforms: tuple[dict[str, Any], ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if any(ord(ch) < 32 for ch in value):
            raise ValueError("a column name has no control characters")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        return None if value is None else _check_source(value)

    @field_validator("transforms", mode="before")
    @classmethod
    def _transforms(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise ValueError("a list of transforms")
        if len(value) > 20:
            raise ValueError("at most 20 transforms")
        return tuple(_check_transform(item) for item in value)

    @model_validator(mode="after")
    def _one_of(self) -> Column:
        if (self.source is None) == (self.value is None):
            raise ValueError("a column has either `source` or `value`")
        return self


class Source(_Model):
    segments: tuple[str, ...] = Field(
        (), max_length=50, description="Members of any of these segments."
    )
    condition: Any = Field(None, description="A condition (text or tree) they must meet too.")

    @field_validator("segments")
    @classmethod
    def _segments(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _NAME.fullmatch(name):
                raise ValueError(f"invalid segment name `{name[:64]}`")
        if len(set(value)) != len(value):
            raise ValueError("a segment is listed twice")
        return value


class CsvFormat(_Model):
    type: Literal["csv"] = "csv"
    delimiter: str = Field(",", min_length=1, max_length=1)
    quoting: Literal["minimal", "all"] = "minimal"
    header: bool = True
    line_ending: Literal["crlf", "lf"] = "crlf"
    encoding: Literal["utf-8", "utf-8-sig", "cp1252"] = "utf-8"

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        if value in ('"', "\r", "\n") or value.isalnum():
            raise ValueError("the delimiter is a punctuation character or tab, not a quote")
        return value


class JsonlFormat(_Model):
    type: Literal["jsonl"] = "jsonl"


class Delta(_Model):
    action_column: str = Field("action", min_length=1, max_length=100)
    upsert: str = Field("upsert", min_length=1, max_length=40)
    delete: str = Field("delete", min_length=1, max_length=40)


class Schedule(_Model):
    cron: str = Field("0 2 * * *", max_length=100, description="Five-field cron expression.")
    timezone: str = Field("Europe/Berlin", max_length=64)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(f"`{value}` is not a five-field cron expression such as `0 2 * * *`")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone `{value}`: e.g. `Europe/Berlin`") from exc
        return value

    def next_after(self, moment: datetime) -> datetime:
        local = moment.astimezone(ZoneInfo(self.timezone))
        found: datetime = croniter(self.cron, local).get_next(datetime)
        return found


def _host(value: str) -> str:
    if not _HOST.fullmatch(value):
        raise ValueError(f"`{value[:100]}` is not a host name or address")
    return value


def _secret_name(value: str | None) -> str | None:
    if value is not None and not _SECRET_NAME.fullmatch(value):
        raise ValueError("a secret's name (letters, digits, `_.-`), not the secret itself")
    return value


class LocalDestination(_Model):
    type: Literal["local"] = "local"
    path: str = Field("", max_length=200, description="A folder inside `FEEDS__LOCAL_DIR`.")
    checksum: bool = False

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _FOLDER.fullmatch(value) or ".." in value.split("/"):
            raise ValueError("a relative folder (`crm/daily`), without `..`")
        return value


class FtpsDestination(_Model):
    type: Literal["ftps"] = "ftps"
    host: str
    port: int = Field(21, ge=1, le=65535)
    directory: str = Field("/", max_length=200)
    user: str = Field(min_length=1, max_length=100)
    password_secret: str
    ca_file: str | None = Field(None, max_length=500)
    fingerprint: str | None = Field(None, description="SHA-256 of the server certificate.")
    checksum: bool = False

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        return _host(value)

    @field_validator("password_secret")
    @classmethod
    def _check_secret(cls, value: str) -> str | None:
        return _secret_name(value)

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str) -> str:
        if not _REMOTE_DIR.fullmatch(value) or ".." in value.split("/"):
            raise ValueError("a folder on the server (`/inbox`), without `..`")
        return value

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_HEX.fullmatch(value):
            raise ValueError("a SHA-256 fingerprint: 64 hex digits, colons allowed")
        return None if value is None else value.replace(":", "").lower()


class SftpDestination(_Model):
    type: Literal["sftp"] = "sftp"
    host: str
    port: int = Field(22, ge=1, le=65535)
    directory: str = Field(".", max_length=200)
    user: str = Field(min_length=1, max_length=100)
    password_secret: str | None = None
    key_secret: str | None = Field(None, description="A secret holding a private key (PEM).")
    known_hosts: str | None = Field(None, max_length=500, description="An OpenSSH known_hosts.")
    fingerprint: str | None = Field(None, description="`SHA256:...` as `ssh-keygen -l` prints.")
    checksum: bool = False

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        return _host(value)

    @field_validator("password_secret", "key_secret")
    @classmethod
    def _check_secrets(cls, value: str | None) -> str | None:
        return _secret_name(value)

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str) -> str:
        if value != "." and (not _REMOTE_DIR.fullmatch(value) or ".." in value.split("/")):
            raise ValueError("a folder on the server (`upload`), without `..`")
        return value

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        if value is not None and not _SSH_FINGERPRINT.fullmatch(value):
            raise ValueError(
                "an OpenSSH fingerprint as `ssh-keygen -lf KEY` prints it: `SHA256:` and "
                "43 base64 characters"
            )
        return value

    @model_validator(mode="after")
    def _verified(self) -> SftpDestination:
        if self.known_hosts is None and self.fingerprint is None:
            raise ValueError("an SFTP destination needs `known_hosts` or `fingerprint`")
        if self.password_secret is None and self.key_secret is None:
            raise ValueError("an SFTP destination needs `password_secret` or `key_secret`")
        return self


class WebhookDestination(_Model):
    type: Literal["webhook"] = "webhook"
    url: str = Field(max_length=2000)
    signing_secret: str
    ca_file: str | None = Field(None, max_length=500)
    batch_rows: int | None = Field(None, ge=1, le=100_000)

    @field_validator("signing_secret")
    @classmethod
    def _check_secret(cls, value: str) -> str | None:
        return _secret_name(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        # The whole value in ASCII (`\d` alone takes other scripts' digits as a port, and
        # `$` alone a final line break).
        if not re.fullmatch(r"https?://[A-Za-z0-9.\-:\[\]]+(?::\d+)?(?:/[^\s]*)?", value, re.ASCII):
            raise ValueError("an `https://` URL")
        return value


Destination = Annotated[
    LocalDestination | FtpsDestination | SftpDestination | WebhookDestination,
    Field(discriminator="type"),
]


class FeedDefinition(_Model):
    name: str
    description: str = Field("", max_length=500)
    source: Source = Field(default_factory=Source)
    mode: Literal["full", "delta"] = "full"
    key: str = Field("customer_key", description="The column source that identifies a row.")
    delta: Delta = Field(default_factory=Delta)
    columns: tuple[Column, ...] = Field(min_length=1, max_length=200)
    format: CsvFormat | JsonlFormat = Field(default_factory=CsvFormat, discriminator="type")
    file_name: str = Field("{feed}-{date:%Y%m%d}", max_length=200)
    schedule: Schedule | None = Field(default_factory=Schedule)
    destination: Destination = Field(default_factory=LocalDestination)
    purpose: str | None = Field("crm_sync", max_length=64)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("lower-case letters, digits, `-` and `_`, at most 64")
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return _check_source(value)

    @field_validator("file_name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        sample = render_file_name(value, feed="feed", run="r1", at=at)
        if not _FILE_NAME.fullmatch(sample):
            raise ValueError(
                f"`{value}` gives `{sample}`: letters, digits and `._-` with {{feed}}, {{run}}, "
                "{date} or {date:%Y%m%d}, {time}"
            )
        return value

    @model_validator(mode="after")
    def _columns(self) -> FeedDefinition:
        names = [c.name for c in self.columns]
        if self.mode == "delta":
            names.append(self.delta.action_column)
        if len(set(names)) != len(names):
            raise ValueError("two columns have the same name (the delta action column counts)")
        if self.mode == "delta" and not any(c.source == self.key for c in self.columns):
            raise ValueError(
                f"a delta feed exports its key: add a column with `source: {self.key}` "
                "(delete records carry only it)"
            )
        return self

    @property
    def extension(self) -> str:
        return ".jsonl" if self.format.type == "jsonl" else ".csv"

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def render_file_name(template: str, *, feed: str, run: str, at: datetime) -> str:
    """`{feed}-{date:%Y%m%d}` -> `crm-20261123`: four placeholders, nothing executed."""

    def one(match: re.Match[str]) -> str:
        name, spec = match.group(1), match.group(2)
        if name == "feed":
            return feed
        if name == "run":
            return run
        if spec is not None and not _DATE_FORMAT.fullmatch(spec):
            raise ValueError(f"date format `{spec}` uses codes that are not allowed")
        if name == "date":
            return at.strftime(spec or "%Y-%m-%d")
        return at.strftime(spec or "%H%M%S")

    return _PLACEHOLDER.sub(one, template)


def parse_feed(document: Any, *, name: str | None = None) -> FeedDefinition:
    """Validate a feed definition; the error names the first bad field."""
    found: FeedDefinition = parse_definition(
        FeedDefinition,
        document,
        name=name,
        root="feed",
        shape="an object with `name` and `columns`",
    )
    return found
