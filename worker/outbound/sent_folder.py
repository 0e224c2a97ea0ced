"""The sent copy in the mailbox's Sent folder (§9 ``save_sent``): ``auto`` looks for the
Message-ID in \\Sent and APPENDs the message (\\Seen) only when the provider did not file it;
``always`` APPENDs; ``never`` does nothing. This APPEND is the only write inboxlog ever makes
to a mailbox; everything else is EXAMINE and BODY.PEEK."""

from __future__ import annotations

import contextlib
import logging

import sqlalchemy as sa
from imapclient.imapclient import SENT

from shared.db.models import Connection, Outbox
from worker.imap.client import open_session
from worker.imap.errors import describe
from worker.imap.session import PollerConfig
from worker.imap.signin import signin_settings
from worker.imap.snapshot import read_snapshot
from worker.outbound.deliver import DeliveryDeps

log = logging.getLogger("inboxlog.outbound")


def file_sent(outbox_id: int, deps: DeliveryDeps, imap: PollerConfig) -> str | None:
    """``found``, ``appended``, ``failed`` or ``skipped`` (no mailbox to file in, or
    ``never``), recorded on the outbox; None: not sent, or already done."""
    with deps.sessions() as session:
        row = session.get(Outbox, outbox_id)
        if row is None or row.status != "sent" or row.sent_folder is not None:
            return None
        conn = session.get(Connection, row.connection_id) if row.connection_id else None
        if conn is None or conn.imap_host is None or conn.save_sent == "never":
            return _record(deps, outbox_id, "skipped")
        mode, message_id, raw = conn.save_sent, row.message_id, row.raw
    outcome = "failed"
    try:
        snap = read_snapshot(deps.sessions, deps.box, conn.id)
        if snap is None:
            return _record(deps, outbox_id, "skipped")
        settings, _ = signin_settings(conn.id, snap, imap.tokens)
        client = open_session(
            settings,
            allowed=imap.allowed_networks,
            ca_file=imap.ca_file,
            resolver=imap.resolver,
        )
        try:
            folder = client.find_special_folder(SENT)
            if folder is None:
                log.warning("outbox=%s: the mailbox has no \\Sent folder", outbox_id)
            else:
                client.select_folder(folder, readonly=True)
                found = mode == "auto" and client.search(
                    ["HEADER", "Message-ID", f"<{message_id}>"]
                )
                if found:
                    outcome = "found"
                else:
                    client.append(folder, raw, flags=(b"\\Seen",))
                    outcome = "appended"
        finally:
            with contextlib.suppress(Exception):
                client.logout()
    except Exception as exc:  # our words only (§6)
        log.warning("outbox=%s: filing in Sent failed: %s", outbox_id, describe(exc))
    return _record(deps, outbox_id, outcome)


def _record(deps: DeliveryDeps, outbox_id: int, outcome: str) -> str:
    with deps.sessions() as session, session.begin():
        session.execute(sa.update(Outbox).where(Outbox.id == outbox_id).values(sent_folder=outcome))
    return outcome
