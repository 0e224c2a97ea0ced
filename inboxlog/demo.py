"""`inboxlog demo`: start everything, create a demo account, send real mail over SMTP, and show
what was logged where and why."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from typing import TypedDict

import click
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from inboxlog import demo_mail
from shared.db.engine import transaction
from shared.db.models import Company, Contact, Decision, EmailContact, LoggedEmail, User
from shared.principal import Principal
from shared.services import accounts, inboxes, users
from shared.services.accounts import intake_address


class DemoAccount(TypedDict):
    """The demo account's id, its two users' addresses and its three intake addresses."""

    account_id: int
    alice_id: int
    alice: str
    hanako: str
    bcc: str
    forward: str
    team: str


def create_demo_account(sessions: sessionmaker[Session], domain: str) -> DemoAccount:
    with transaction(sessions) as s:
        account, alice, _ = accounts.create_account(
            session=s, name="Demo Co", admin_email="alice@demo-co.example", admin_name="Alice Sales"
        )
        admin = Principal("user", account.id, alice.id, "admin")
        hanako, _ = users.create_user(
            session=s,
            principal=admin,
            email="hanako@demo-co.example",
            name="Hanako Sato",
            role="member",
        )
        accounts.update_settings(
            session=s, account=account, patch={"never_log": ["rival-corp.example"]}
        )
        inbox = inboxes.create_inbox(
            session=s,
            principal=admin,
            name="Sales",
            sender_name="Demo Sales",
            member_ids_=[alice.id, hanako.id],
        )
        return {
            "account_id": account.id,
            "alice_id": alice.id,
            "alice": alice.email,
            "hanako": hanako.email,
            "bcc": intake_address(account.bcc_token, domain),
            "forward": intake_address(account.forward_token, domain),
            "team": intake_address(inbox.forward_token, domain),
        }


def send_samples(host: str, port: int, demo: DemoAccount) -> list[tuple[str, str]]:
    samples = [
        ("English BCC", demo["alice"], demo["bcc"], demo_mail.english_bcc(demo["alice"])),
        (
            "Japanese ISO-2022-JP BCC",
            demo["hanako"],
            demo["bcc"],
            demo_mail.japanese_bcc(demo["hanako"]),
        ),
        (
            "Forwarded customer mail",
            demo["hanako"],
            demo["forward"],
            demo_mail.forwarded_customer_mail(demo["hanako"]),
        ),
        (
            "BCC to a never-log recipient",
            demo["alice"],
            demo["bcc"],
            demo_mail.never_log_bcc(demo["alice"]),
        ),
        (
            "Auto-reply to the Sales inbox",
            "ken.tanaka@acme-robotics.example",
            demo["team"],
            demo_mail.auto_reply(demo["team"]),
        ),
    ]
    sent = []
    with smtplib.SMTP(host, port, timeout=30) as smtp:
        for label, mail_from, rcpt, raw in samples:
            smtp.sendmail(mail_from, [rcpt], raw)
            sent.append((label, rcpt))
    return sent


def wait_for_decisions(
    sessions: sessionmaker[Session],
    account_id: int,
    n: int,
    timeout: float,
    alive: Callable[[], bool],
) -> list[Decision]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        with sessions() as s:
            found = list(
                s.scalars(
                    sa.select(Decision)
                    .where(Decision.account_id == account_id)
                    # In the order the samples were sent (stored), not the order processed.
                    .order_by(Decision.stored_message_id)
                )
            )
        if len(found) >= n:
            return found
        time.sleep(0.3)
    raise click.ClickException(f"only {len(found)} of {n} messages were processed in time")


def report(
    sessions: sessionmaker[Session], account_id: int, labels: list[str], decisions: list[Decision]
) -> None:
    echo = click.echo
    echo("\nWhat happened to each message:\n")
    for label, d in zip(labels, decisions, strict=False):
        codes = f" ({', '.join(d.codes)})" if d.codes else ""
        echo(f"  {label}")
        echo(f"    subject : {d.subject}")
        echo(f"    outcome : {d.outcome}{codes}")
        for p in d.participants:
            echo(f"    - {p['address']}: {p['action']} — {p['reason']}")
    with sessions() as s:
        users_by_id = {
            u.id: u.email for u in s.scalars(sa.select(User).where(User.account_id == account_id))
        }
        echo("\nContact timelines:\n")
        for contact in s.scalars(
            sa.select(Contact).where(Contact.account_id == account_id).order_by(Contact.id)
        ):
            company = s.get(Company, contact.company_id) if contact.company_id else None
            subjects = list(
                s.scalars(
                    sa.select(LoggedEmail.subject)
                    .join(EmailContact, EmailContact.email_id == LoggedEmail.id)
                    .where(EmailContact.contact_id == contact.id)
                )
            )
            owner = "-" if contact.owner_id is None else users_by_id.get(contact.owner_id, "-")
            where = company.domain if company else "none — free mail"
            echo(f"  {contact.email}  (owner {owner}; company {where})")
            for subj in subjects:
                echo(f"    • {subj}")
    echo("")
