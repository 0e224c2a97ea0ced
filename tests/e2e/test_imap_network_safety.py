"""§6 Network safety with the real ``inboxlog poller`` process: a server on a loopback address
is refused unless INBOXLOG_ALLOWED_PRIVATE_NETWORKS lets it through, and what a server says
never reaches the connection's ``last_error``."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from shared.crypto import SecretBox
from shared.db.engine import transaction
from shared.db.models import Connection
from shared.netsafety import NOT_ALLOWED_SENTENCE
from tests.support.databases import fresh_postgres
from tests.support.imap_faults import FakeImapServer
from tests.support.stack import make_stack, redis_broker_url, wait_for
from tests.support.world import new_world

STARTUP = 120.0  # a poller process starting on a loaded machine
BANNER = b"secret-internal-banner"


def test_loopback_is_refused_unless_allowed_and_last_error_is_ours(tmp_path: Path) -> None:
    # A database of our own: the poller claims every free connection it finds.
    with fresh_postgres() as db_url, FakeImapServer(b"* BYE " + BANNER + b"\r\n") as server:
        stack = make_stack(tmp_path, db_url, redis_broker_url(), INBOXLOG_POLL_SECONDS="2")
        stack.env["INBOXLOG_ALLOWED_PRIVATE_NETWORKS"] = ""  # the default: public servers only
        try:
            world = new_world(stack.sessions)
            box = SecretBox(stack.env["INBOXLOG_SECRET_KEY"])
            with transaction(stack.sessions) as s:
                # Written directly: the save-time check is the API's; this is the connect-time
                # one (a name may resolve elsewhere by the time the poller connects).
                c = Connection(
                    account_id=world.account_id,
                    address="me@ours.example",
                    kind="personal",
                    user_id=world.admin_id,
                    imap_host="127.0.0.1",
                    imap_port=server.port,
                    imap_security="none",
                    imap_username="me",
                    imap_password_enc=box.encrypt("pw"),
                )
                s.add(c)
                s.flush()
                cid = c.id

            def last_error() -> str | None:
                with stack.sessions() as s:
                    return s.scalar(sa.select(Connection.last_error).where(Connection.id == cid))

            stack.start("poller", "poller")
            wait_for(lambda: last_error(), STARTUP, lambda: stack.log("poller"))
            assert last_error() == f"host_not_allowed: {NOT_ALLOWED_SENTENCE}"
            assert server.accepted == 0  # never dialled
            stack.stop("poller")

            stack.env["INBOXLOG_ALLOWED_PRIVATE_NETWORKS"] = "127.0.0.0/8"
            stack.start("poller2", "poller")
            wait_for(
                lambda: (last_error() or "").startswith("protocol_error"),
                STARTUP,
                lambda: stack.log("poller2"),
            )
            assert server.accepted >= 1
            error = last_error()
            assert error == "protocol_error: the server's answer was not valid IMAP"
            assert BANNER.decode() not in stack.log("poller2")
        finally:
            stack.close()
            stack.sessions.kw["bind"].dispose()
