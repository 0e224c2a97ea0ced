"""The database layer: per-row results of bulk inserts, errors that never carry mail, and a
schema built by the migrations that matches the models (with lz4 on PostgreSQL)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shared.db.base import Base
from shared.db.bulk import insert_each
from shared.db.engine import make_engine, make_session_factory, single_read
from shared.db.models import Account, StoredMessage
from shared.intake import IncomingMessage, store_messages
from tests.support.world import World, new_world


@pytest.fixture
def sessions(db_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def _account(sessions, name: str) -> int:  # type: ignore[no-untyped-def]
    with sessions() as s, s.begin():
        acc = Account(name=name, bcc_token=f"b-{name}", forward_token=f"f-{name}")
        s.add(acc)
        s.flush()
        return acc.id


def _imap(world: World, cid: int, uid: int, raw: bytes) -> IncomingMessage:
    return IncomingMessage(
        account_id=world.account_id, source="personal", raw=raw, connection_id=cid,
        folder="INBOX", folder_role="inbox", uidvalidity=7, uid=uid,
    )  # fmt: skip


def test_store_messages_answers_per_row_in_order_with_none_for_duplicates(
    sessions, request
) -> None:  # type: ignore[no-untyped-def]
    world = new_world(sessions)
    cid = world.connect("alice@ours.example", kind="personal", user_id=world.admin_id)
    with sessions() as s, s.begin():
        first = store_messages(
            session=s, items=[_imap(world, cid, u, b"m%d" % u) for u in (1, 2, 3)]
        )
    assert all(isinstance(i, int) for i in first) and first == sorted(first)
    with sessions() as s, s.begin():
        again = store_messages(
            session=s, items=[_imap(world, cid, u, b"new %d" % u) for u in (2, 4, 3, 5)]
        )
    assert again[0] is None and again[2] is None  # UIDs 2 and 3 are already stored
    assert isinstance(again[1], int) and isinstance(again[3], int) and again[1] < again[3]
    with sessions() as s:
        rows = s.execute(
            sa.select(StoredMessage.uid, StoredMessage.raw, StoredMessage.envelope_to)
            .where(StoredMessage.connection_id == cid)
            .order_by(StoredMessage.uid)
        ).all()
    # The first copy of a UID is kept; JSON columns go through their type's bind processing.
    assert [(r.uid, bytes(r.raw), r.envelope_to) for r in rows] == [
        (1, b"m1", []), (2, b"m2", []), (3, b"m3", []), (4, b"new 4", []), (5, b"new 5", []),
    ]  # fmt: skip


def test_gateway_rows_without_uid_all_get_ids_in_order(sessions, request) -> None:  # type: ignore[no-untyped-def]
    aid = _account(sessions, f"gw-{request.node.callspec.id}")
    items = [
        IncomingMessage(account_id=aid, source="bcc", raw=b"x%d" % i, envelope_to=("a@b",))
        for i in range(30)
    ]
    with sessions() as s, s.begin():
        ids = store_messages(session=s, items=items)
    with sessions() as s:
        got = dict(s.execute(sa.select(StoredMessage.id, StoredMessage.raw).where(
            StoredMessage.id.in_(ids))).all())  # fmt: skip
    assert [bytes(got[i]) for i in ids] == [b"x%d" % i for i in range(30)]


def test_a_failed_bulk_insert_raises_sqlalchemy_errors_without_the_mail(sessions) -> None:  # type: ignore[no-untyped-def]
    secret = b"Subject: private deal terms 4711"
    with pytest.raises(sa.exc.IntegrityError) as err, sessions() as s, s.begin():
        # No such account: the foreign key refuses the row.
        insert_each(s, StoredMessage.__table__, [{
            "account_id": 999_999_999, "source": "bcc", "raw": secret, "raw_size": len(secret),
            "status": "stored", "attempts": 0, "envelope_to": ["private@x.example"],
        }], returning=("id",))  # fmt: skip
    text = str(err.value)
    assert "4711" not in text and "private" not in text
    with sessions() as s:  # the session and its pool stay usable
        assert s.scalar(sa.select(sa.func.count()).select_from(StoredMessage)) is not None


def test_the_migrations_build_exactly_the_models_schema(db_url: str) -> None:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == []


def test_raw_messages_and_bodies_are_lz4_compressed_on_postgresql(postgresql_url: str) -> None:
    engine = make_engine(postgresql_url)
    with engine.connect() as conn:
        got = dict(
            conn.execute(
                sa.text(
                    "SELECT c.relname || '.' || a.attname, a.attcompression FROM pg_attribute a "
                    "JOIN pg_class c ON c.oid = a.attrelid "
                    "WHERE (c.relname, a.attname) IN (('stored_messages', 'raw'), "
                    "('logged_emails', 'text'), ('logged_emails', 'html'))"
                )
            ).all()
        )
    engine.dispose()
    assert got == {"stored_messages.raw": "l", "logged_emails.text": "l", "logged_emails.html": "l"}


def test_single_read_holds_no_transaction_open(sessions, db_url: str) -> None:  # type: ignore[no-untyped-def]
    with single_read(sessions) as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(Account)).scalar() is not None
        if db_url.startswith("postgresql"):
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            with sessions() as other:
                state = other.execute(
                    sa.text("SELECT state FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
                ).scalar()
            assert state == "idle"  # not "idle in transaction": no snapshot held between reads
    # Afterwards the database takes writes at once (SQLite: no lock left behind).
    world = new_world(sessions)
    assert world.account_id
