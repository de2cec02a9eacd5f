"""Outgoing mail: one small port, two adapters.

- `SmtpMailer` delivers through an SMTP server (STARTTLS when asked, login when configured).
- `OutboxMailer`, the embedded default, writes each message as an `.eml` file into a private
  folder under the data root, which `tenantguard outbox` shows. Nothing leaves the machine.

Mail carries sign-in links, which are credentials: messages are never logged, and the outbox
folder and its files are private to the service's user.
"""

from __future__ import annotations

import os
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from pathlib import Path
from typing import Protocol
from uuid import uuid4

from pydantic import SecretStr

from tenantguard.errors import ServiceUnavailable


class Mailer(Protocol):
    def send(self, message: EmailMessage) -> None: ...


def compose(*, sender: str, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message


@dataclass(frozen=True, slots=True)
class SmtpMailer:
    host: str
    port: int
    starttls: bool = False
    username: str | None = None
    password: SecretStr | None = None
    timeout: float = 10.0

    def send(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                if self.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.username is not None and self.password is not None:
                    smtp.login(self.username, self.password.get_secret_value())
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise ServiceUnavailable("Mail could not be sent.") from exc


@dataclass(frozen=True, slots=True)
class OutboxMailer:
    folder: Path

    def send(self, message: EmailMessage) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.folder / f"{uuid4().hex}.eml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(message.as_bytes())

    def messages(self) -> list[EmailMessage]:
        """Every message in the outbox, oldest first."""
        if not self.folder.is_dir():
            return []
        paths = sorted(self.folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)
        parser = BytesParser(policy=default)
        return [parser.parsebytes(p.read_bytes()) for p in paths]
