"""The invitation mail: plain text and HTML from autoescaped templates, with eleven rating
links and a one-click unsubscribe header; sent over SMTP (STARTTLS or TLS, verified) or
written to the outbox folder as `.eml`."""

from __future__ import annotations

import email.policy
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from functools import cache
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, select_autoescape

from closedloop.config import Settings
from closedloop.outbound import DeliveryError, check_host
from closedloop.surveys.definition import SurveyDefinition

__all__ = ["Invitation", "MailError", "render_mail", "send_mail", "templates"]


@cache
def templates(folder: Path | None = None) -> Environment:
    """The templates: files in `folder` (`SURVEYS__TEMPLATES_DIR`) first, then the shipped
    ones. Every value put into them is escaped (HTML) or plain text (`mail.txt`)."""
    shipped = PackageLoader("closedloop.surveys", "templates")
    loader = ChoiceLoader([FileSystemLoader(str(folder)), shipped]) if folder else shipped
    return Environment(
        loader=loader,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


_POLICY = email.policy.default.clone(max_line_length=998)
_SUBJECT = {"de": "Ihre Meinung ist uns wichtig", "en": "We would like your opinion"}


class MailError(Exception):
    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


@dataclass(frozen=True)
class Invitation:
    id: str
    email: str
    locale: str
    token: str


def render_mail(
    settings: Settings, definition: SurveyDefinition, invitation: Invitation
) -> EmailMessage:
    base = settings.surveys.base_url.rstrip("/")
    links = [(score, f"{base}/s/{invitation.token}?score={score}") for score in range(11)]
    locale = invitation.locale if invitation.locale in ("de", "en") else "de"
    question = definition.question.de if locale == "de" else definition.question.en
    context = {
        "question": question,
        "links": links,
        "locale": locale,
        "unsubscribe": f"{base}/s/{invitation.token}/unsubscribe",
    }
    # Headers up to RFC 5322's 998 characters: a long List-Unsubscribe URL must stay one
    # plain `<URL>`, not be folded into encoded words that mail clients cannot use.
    message = EmailMessage(policy=_POLICY)
    message["Subject"] = _SUBJECT[locale]
    message["From"] = definition.sender
    message["To"] = invitation.email
    if definition.reply_to:
        message["Reply-To"] = definition.reply_to
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(idstring=invitation.id)
    message["List-Unsubscribe"] = f"<{context['unsubscribe']}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["X-Closedloop-Invitation"] = invitation.id
    env = templates(settings.surveys.templates_dir)
    message.set_content(env.get_template("mail.txt").render(context))
    message.add_alternative(env.get_template("mail.html").render(context), subtype="html")
    return message


def send_mail(settings: Settings, definition: SurveyDefinition, invitation: Invitation) -> None:
    """Send one invitation (one attempt); MailError says whether a retry may help."""
    message = render_mail(settings, definition, invitation)
    config = settings.surveys
    if config.smtp_host is None:
        folder = Path(config.outbox_dir)
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f".{invitation.id}.eml.part"
        part.write_bytes(bytes(message))
        part.replace(folder / f"{invitation.id}.eml")
        return
    context = ssl.create_default_context(
        cafile=str(config.smtp_ca_file) if config.smtp_ca_file else None
    )
    timeout = 30
    try:
        check_host(config.smtp_host, config.smtp_port, settings)
    except DeliveryError as exc:
        raise MailError(f"SMTP server: {exc.message}", transient=exc.transient) from None
    try:
        if config.smtp_security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                config.smtp_host, config.smtp_port, timeout=timeout, context=context
            )
        else:
            client = smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=timeout)
        with client:
            if config.smtp_security == "starttls":
                client.starttls(context=context)
            if config.smtp_user:
                password = config.smtp_password.get_secret_value() if config.smtp_password else ""
                client.login(config.smtp_user, password)
            client.send_message(message)
    except smtplib.SMTPNotSupportedError as exc:
        raise MailError(
            f"the SMTP server does not offer STARTTLS: {exc}", transient=False
        ) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"SMTP login refused: {exc.smtp_code}", transient=False) from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise MailError(
            f"recipient refused: {list(exc.recipients.values())[:1]}", transient=False
        ) from None
    except smtplib.SMTPResponseException as exc:
        transient = 400 <= exc.smtp_code < 500
        raise MailError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", transient=transient) from None
    except ssl.SSLCertVerificationError as exc:
        raise MailError(
            f"the SMTP server's certificate does not verify: {exc.verify_message}", transient=False
        ) from None
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        raise MailError(f"SMTP failed: {type(exc).__name__}: {exc}", transient=True) from None
