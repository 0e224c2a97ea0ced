"""API lists and timelines at a million logged emails (§8: p99 < 50 ms).

A fresh PostgreSQL database (dropped afterwards) is migrated and one account is filled with
N logged emails by ``bench/api_fill.py`` (server-side bulk inserts; the shape is described
there). Then the real API process (``inboxlog api``) is started and each list is read over
HTTP by one keep-alive client, request after request: p50, p99 and max latency per case.

Each list is read on its first page, on a deep page by keyset (``before_id``: the cursors
are the ids at the deep position and the next pages, found once with SQL, as a client that
walked there would hold them) and, for the record, on the same deep page by ``offset``
— which reads every row before it, by design: offset paging is what keyset paging replaces.
Deep is the middle of the list (the 500,000th row of a million-row list).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import httpx  # noqa: E402
import psycopg  # noqa: E402
from api_fill import Users, fill  # noqa: E402
from bench_measure import cpu_snapshot, pct  # noqa: E402
from bench_report import Figures, machine, print_figures  # noqa: E402

from shared.crypto import hash_token  # noqa: E402
from shared.db.migrate import upgrade  # noqa: E402
from tests.support.databases import PG_ADMIN_DSN, fresh_postgres, pg_url  # noqa: E402
from tests.support.stack import make_stack, redis_broker_url  # noqa: E402

TARGET_MS = 50.0
PAGE = 50


def _psql_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class Client:
    """One keep-alive client. ``cpu``: the API process group and the database, whose CPU
    seconds per request are measured alongside the latencies (a figure that the other
    processes on a shared machine disturb far less than wall time)."""

    def __init__(self, base: str, api_pgid: int, dbname: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=60)
        self.api_pgid, self.dbname = api_pgid, dbname
        self.last_cpu: tuple[float, float] = (0.0, 0.0)  # ms per request: API, PostgreSQL

    def call(self, method: str, path: str, token: str, status: int = 200, **kw: object) -> dict:
        r = self.http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)  # type: ignore[arg-type]
        if r.status_code != status:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return dict(r.json())

    def times(self, paths: list[str], token: str, n: int) -> list[float]:
        """Milliseconds per request, ``n`` requests cycling through ``paths`` (after a warm-up
        of each path once)."""
        for p in paths:
            self.call("GET", p, token)
        out = []
        before = cpu_snapshot({"api": self.api_pgid}, self.dbname)
        for i in range(n):
            t0 = time.perf_counter()
            self.call("GET", paths[i % len(paths)], token)
            out.append((time.perf_counter() - t0) * 1000)
        after = cpu_snapshot({"api": self.api_pgid}, self.dbname)
        self.last_cpu = tuple(  # type: ignore[assignment]
            1000 * (after.get(k, 0.0) - before.get(k, 0.0)) / n for k in ("api", "postgres")
        )
        return out


def _setup(c: Client, operator: str) -> tuple[Users, dict[str, str]]:
    acc = c.call(
        "POST",
        "/v1/accounts",
        operator,
        201,
        json={"name": "Big", "admin_email": "alice@ours.example"},
    )
    admin = acc["token"]
    made = {
        name: c.call("POST", "/v1/users", admin, 201, json={"email": f"{name}@ours.example"})
        for name in ("bob", "carol", "dave")
    }
    ids = {k: v["user"]["id"] for k, v in made.items()}
    inbox = c.call(
        "POST",
        "/v1/inboxes",
        admin,
        201,
        json={"name": "Support", "member_ids": [ids["bob"], ids["dave"]]},
    )
    users = Users(
        account_id=acc["account"]["id"],
        inbox_id=inbox["id"],
        admin_id=acc["admin"]["id"],
        bob_id=ids["bob"],
        carol_id=ids["carol"],
        dave_id=ids["dave"],
    )
    tokens = {"admin": admin, **{k: v["token"] for k, v in made.items()}}
    return users, tokens


TIMELINE = "coalesce(e.date, e.received_at) DESC, e.received_at DESC, e.id DESC"


def _cursors(conn: psycopg.Connection, sql: str, deep: int, k: int) -> list[int]:
    """The ids at positions deep-1, deep-1+PAGE, … (k of them): the last item of the page
    before each of k consecutive deep pages."""
    rows = conn.execute(f"{sql} OFFSET %s LIMIT %s", (max(0, deep - 1), k * PAGE)).fetchall()
    return [rows[i * PAGE][0] for i in range(k) if i * PAGE < len(rows)]


def _cases(conn: psycopg.Connection, u: Users, n: int) -> list[tuple[str, str, str, int, str]]:
    """(case, token name, path, list length, ordering SQL of the list's ids) per list."""
    big_contact, contact_n = conn.execute(
        "SELECT contact_id, count(*) FROM email_contacts GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
    ).fetchone()  # type: ignore[misc]
    mid_contact, mid_n = conn.execute(
        "SELECT contact_id, count(*) FROM email_contacts GROUP BY 1 ORDER BY 2 DESC "
        "OFFSET 100 LIMIT 1"
    ).fetchone()  # type: ignore[misc]
    big_company, company_n = conn.execute(
        "SELECT company_id, count(*) FROM email_companies GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
    ).fetchone()  # type: ignore[misc]

    def timeline(link: str, col: str, key: int) -> str:
        return (
            f"SELECT e.id FROM logged_emails e JOIN {link} l ON l.email_id = e.id "
            f"WHERE l.{col} = {key} ORDER BY {TIMELINE}"
        )

    def count(sql: str) -> int:
        return int(conn.execute(f"SELECT count(*) FROM ({sql}) q").fetchone()[0])  # type: ignore[index]

    decisions_admin = (
        f"SELECT id FROM decisions WHERE account_id = {u.account_id} AND "
        f"(private_to_user_id IS NULL OR private_to_user_id = {u.admin_id}) ORDER BY id DESC"
    )
    skipped_admin = decisions_admin.replace("ORDER BY", "AND outcome = 'skipped' ORDER BY")
    failed_admin = decisions_admin.replace("ORDER BY", "AND outcome = 'failed' ORDER BY")
    personal_admin = decisions_admin.replace("ORDER BY", "AND source = 'bcc' ORDER BY")
    bob_sees = (
        f"SELECT d.id FROM decisions d JOIN stored_messages s ON s.id = d.stored_message_id "
        f"WHERE d.account_id = {u.account_id} AND (d.private_to_user_id = {u.bob_id} OR "
        f"(d.private_to_user_id IS NULL AND (d.acting_user_id = {u.bob_id} OR "
        f"s.inbox_id = {u.inbox_id}))) ORDER BY d.id DESC"
    )
    carol_sees = (
        f"SELECT id FROM decisions WHERE account_id = {u.account_id} AND "
        f"(private_to_user_id = {u.carol_id} OR acting_user_id = {u.carol_id}) ORDER BY id DESC"
    )
    convs = (
        f"SELECT id FROM conversations WHERE inbox_id = {u.inbox_id} {{}} "
        "ORDER BY last_message_at DESC NULLS LAST, id DESC"
    )
    out = [
        ("contact timeline (top contact)", "admin", f"/v1/contacts/{big_contact}/emails",
         contact_n, timeline("email_contacts", "contact_id", big_contact)),
        ("  … as a member", "bob", f"/v1/contacts/{big_contact}/emails",
         contact_n, timeline("email_contacts", "contact_id", big_contact)),
        (f"contact timeline (101st, {mid_n} emails)", "admin", f"/v1/contacts/{mid_contact}/emails",
         mid_n, timeline("email_contacts", "contact_id", mid_contact)),
        ("company timeline (top company)", "admin", f"/v1/companies/{big_company}/emails",
         company_n, timeline("email_companies", "company_id", big_company)),
        ("decisions", "admin", "/v1/decisions", count(decisions_admin), decisions_admin),
        ("decisions ?outcome=skipped", "admin", "/v1/decisions?outcome=skipped",
         count(skipped_admin), skipped_admin),
        ("decisions ?outcome=failed", "admin", "/v1/decisions?outcome=failed",
         count(failed_admin), failed_admin),
        ("decisions ?source=bcc", "admin", "/v1/decisions?source=bcc",
         count(personal_admin), personal_admin),
        ("decisions, member in the inbox", "bob", "/v1/decisions", count(bob_sees), bob_sees),
        ("decisions, member in no inbox", "carol", "/v1/decisions", count(carol_sees), carol_sees),
        ("conversations of the inbox", "bob", f"/v1/inboxes/{u.inbox_id}/conversations",
         count(convs.format("")), convs.format("")),
        ("  … ?status=open", "bob", f"/v1/inboxes/{u.inbox_id}/conversations?status=open",
         count(convs.format("AND status = 'open'")), convs.format("AND status = 'open'")),
        ("  … ?assignee_id=bob", "bob",
         f"/v1/inboxes/{u.inbox_id}/conversations?assignee_id={u.bob_id}",
         count(convs.format(f"AND assignee_id = {u.bob_id}")),
         convs.format(f"AND assignee_id = {u.bob_id}")),
        ("emails of the top contact, as a member", "carol",
         f"/v1/contacts/{big_contact}/emails",
         contact_n, timeline("email_contacts", "contact_id", big_contact)),
    ]  # fmt: skip
    return out


@contextmanager
def _database(args: argparse.Namespace) -> Iterator[str]:
    if args.database:
        upgrade(args.database)
        yield args.database
        return
    if not args.keep:
        with fresh_postgres() as url:
            yield url
        return
    name = f"inboxlog_bench_api_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    upgrade(pg_url(name))
    yield pg_url(name)


def _reuse(dsn: str) -> tuple[Users, dict[str, str]]:
    """The users of the filled account, with new tokens for them."""
    with psycopg.connect(dsn) as conn:
        account_id, inbox_id = conn.execute(
            "SELECT account_id, id FROM team_inboxes ORDER BY id LIMIT 1"
        ).fetchone()  # type: ignore[misc]
        ids, tokens = {}, {}
        for name in ("alice", "bob", "carol", "dave"):
            (uid,) = conn.execute(
                "SELECT id FROM users WHERE account_id = %s AND email = %s",
                (account_id, f"{name}@ours.example"),
            ).fetchone()  # type: ignore[misc]
            token = secrets.token_urlsafe(32)
            conn.execute(
                "INSERT INTO api_tokens (account_id, user_id, token_hash, created_at) "
                "VALUES (%s, %s, %s, now())",
                (account_id, uid, hash_token(token)),
            )
            ids[name], tokens[name] = uid, token
    tokens["admin"] = tokens.pop("alice")
    users = Users(account_id, inbox_id, ids["alice"], ids["bob"], ids["carol"], ids["dave"])
    return users, tokens


def _fmt(ms: list[float]) -> str:
    return f"{pct(ms, 50):6.1f} {pct(ms, 99):7.1f} {max(ms):7.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emails", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=200, help="per measurement")
    ap.add_argument("--offset-requests", type=int, default=20, help="per deep-offset measurement")
    ap.add_argument("--keep", action="store_true", help="keep the database: its URL is printed")
    ap.add_argument(
        "--database",
        help="measure an existing database that a --keep run filled (migrated to the newest "
        "schema first; not dropped)",
    )
    args = ap.parse_args()
    started = time.monotonic()
    fig = Figures()
    with _database(args) as db_url, tempfile.TemporaryDirectory() as tmp:
        stack = make_stack(Path(tmp), db_url, redis_broker_url())
        try:
            base = stack.start_api()
            c = Client(base, stack.procs["api"].pid, db_url.rsplit("/", 1)[1])
            if args.database:
                users, tokens = _reuse(_psql_dsn(db_url))
            else:
                users, tokens = _setup(c, stack.env["INBOXLOG_ADMIN_TOKEN"])
                name = db_url.rsplit("/", 1)[1]
                print(f"filling {args.emails:,} emails into {name} …", flush=True)
                t0 = time.monotonic()
                fill(_psql_dsn(db_url), args.emails, users)
                fill_s = time.monotonic() - t0
                fig.rows.append(("fill (bulk insert + VACUUM ANALYZE)", f"{fill_s:,.0f} s",
                                 f"{args.emails:,} logged emails"))  # fmt: skip
            with psycopg.connect(_psql_dsn(db_url)) as conn:
                cases = _cases(conn, users, args.emails)
                _measure(c, conn, tokens, cases, args, fig)
                email_ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM logged_emails WHERE visibility = 'account' "
                        "ORDER BY md5(id::text) LIMIT 200"
                    )
                ]
            for who in ("admin", "bob"):
                paths = [f"/v1/emails/{i}" for i in email_ids]
                ms = c.times(paths, tokens[who], args.requests)
                _row(fig, f"GET /v1/emails/{{id}} as {who}", "200 ids", ms, keyset=True, c=c)
            fig.notes.append(
                f"{machine()}. One client, one request at a time, keep-alive; page size "
                f"{PAGE}. Deep = the middle of each list."
            )
            print()
            print_figures(fig, time.monotonic() - started)
            if args.keep:
                print(f"  kept: {db_url}  (bench/api --database URL measures it again)")
        finally:
            stack.close()
    sys.exit(0)


def _row(fig: Figures, name: str, detail: str, ms: list[float], *, keyset: bool, c: Client) -> None:
    api, db = c.last_cpu
    fig.rows.append((name, _fmt(ms), f"CPU/req: API {api:4.1f} ms, PG {db:4.1f} ms; {detail}"))
    if keyset:
        p99 = pct(ms, 99)
        fig.targets.append((name, f"p99 {p99:.1f} ms", f"< {TARGET_MS:.0f} ms", p99 < TARGET_MS))


def _measure(
    c: Client,
    conn: psycopg.Connection,
    tokens: dict[str, str],
    cases: list[tuple[str, str, str, int, str]],
    args: argparse.Namespace,
    fig: Figures,
) -> None:
    fig.rows.append(("list (its rows)  —  p50 / p99 / max ms:", "", ""))
    for name, who, path, size, sql in cases:
        token = tokens[who]
        sep = "&" if "?" in path else "?"
        deep = size // 2
        first = c.times([f"{path}{sep}limit={PAGE}"], token, args.requests)
        _row(fig, f"{name}: first page", f"{size:,} rows, as {who}", first, keyset=True, c=c)
        cursors = _cursors(conn, sql, deep, 10)
        if cursors:
            # The page a client holding the cursor gets must be the list's next rows.
            got = c.call("GET", f"{path}{sep}limit={PAGE}&before_id={cursors[0]}", token)
            want = [r[0] for r in conn.execute(f"{sql} OFFSET %s LIMIT %s", (deep, PAGE))]
            if [i["id"] for i in got["items"]] != want:
                fig.notes.append(f"{name}: the keyset page differs from the SQL order!")
            paths = [f"{path}{sep}limit={PAGE}&before_id={k}" for k in cursors]
            _row(fig, f"{name}: row {deep:,} by before_id", "10 cursors",
                 c.times(paths, token, args.requests), keyset=True, c=c)  # fmt: skip
            offset = c.times([f"{path}{sep}limit={PAGE}&offset={deep}"], token,
                             args.offset_requests)  # fmt: skip
            _row(fig, f"{name}: row {deep:,} by offset", "for the record", offset, keyset=False,
                 c=c)  # fmt: skip
        print(f"  measured {name}", flush=True)


if __name__ == "__main__":
    main()
