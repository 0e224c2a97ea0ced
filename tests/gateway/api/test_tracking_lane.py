"""The tracking lane (§9) on both databases: hits written in batches and answered after their
commit, one bad hit losing only itself, a bound on what waits, the lane's answers when the
database refuses, and the per-client rate limit in front of it all."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from gateway.api.clients import RateLimiter
from gateway.api.context import ApiContext
from gateway.api.tracking_lane import TrackingLane
from gateway.api.tracking_writer import Hit, HitRecorder, Outcome, Overloaded
from shared.crypto import SecretBox
from shared.db.base import utcnow
from shared.db.engine import make_engine, make_session_factory
from shared.db.models import Contact, OutboxCopy, TrackingEvent, TrackingLink
from shared.services import outbound
from shared.services import tracking as svc
from tests.conftest import make_settings
from tests.support.world import new_world

_n = iter(range(1, 10_000))
HTML = "<p><a href='https://shop.example/a'>a</a> <a href='https://shop.example/b?x=1'>b</a></p>"


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    yield make_session_factory(engine)
    engine.dispose()


def _tracked(
    sessions: sessionmaker[Session], accepted: bool = True, ago: float = 0.0
) -> dict[str, list[str]]:
    """A tracked message to one customer, as if delivered: its tokens by kind."""
    n = next(_n)
    box = SecretBox(Fernet.generate_key().decode())
    world = new_world(sessions, admin_email=f"admin{n}@ours{n}.example")
    address = f"rep{n}@ours{n}.example"
    me = world.smtp_sender(address, port=2525, box=box)
    with sessions() as s, s.begin():
        row = outbound.send_email(
            session=s, principal=me, logging_domain="log.localhost",
            tracking_url=lambda k, t: f"http://127.0.0.1/t/{k}/{t}", max_bytes=10**6,
            sender=address, to=[f"kim{n}@customer.example"], subject="Hi", text="hello",
            html=HTML, track=True,
        )  # fmt: skip
        if accepted:
            s.execute(
                sa.update(OutboxCopy)
                .where(OutboxCopy.outbox_id == row.id)
                .values(status="accepted", accepted_at=utcnow() - timedelta(seconds=ago))
            )
        links = s.execute(
            sa.select(TrackingLink.kind, TrackingLink.token).where(TrackingLink.outbox_id == row.id)
        ).all()
    found: dict[str, list[str]] = {"open": [], "click": []}
    for kind, token in links:
        found[kind].append(token)
    return found


FIREFOX = {"user-agent": "Mozilla/5.0 (X11) Firefox/130.0"}


def _link(sessions: sessionmaker[Session], token: str) -> svc.Link:
    with sessions() as s:
        link = svc.resolve(s, [token]).links.get(token)
    assert link is not None
    return link


def _pending(sessions: sessionmaker[Session], token: str) -> svc.PendingHit:
    return svc.PendingHit(_link(sessions, token), "GET", FIREFOX, None, utcnow())


def _hit(token: str, kind: str = "open", link: svc.Link | None = None) -> Hit:
    """A request as the lane hands it over (``link``: the token was known already)."""
    return Hit(token, kind, link, "GET", FIREFOX, None, utcnow())


def _events(sessions: sessionmaker[Session], token: str) -> int:
    with sessions() as s:
        link = s.get(TrackingLink, token)
        assert link is not None
        return int(
            s.scalar(
                sa.select(sa.func.count())
                .select_from(TrackingEvent)
                .where(TrackingEvent.copy_id == link.copy_id, TrackingEvent.type == link.kind)
            )
            or 0
        )


class Gate:
    """A record function that holds its first batch until released (no sleeping)."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.sizes: list[int] = []

    def __call__(self, *, session: Session, hits: Any, opted_out: Any) -> int:
        self.sizes.append(len(hits))
        self.entered.set()
        assert self.release.wait(30)
        return svc.record_hits(session=session, hits=hits, opted_out=opted_out)


def test_hits_wait_for_their_commit_and_share_it(sessions: sessionmaker[Session]) -> None:
    """Fifty requests, none of whose tokens was known: two transactions — each reading its
    batch's tokens and recording its hits — and nobody answered before a commit."""
    tokens = _tracked(sessions)
    gate = Gate()
    recorder = HitRecorder(sessions, record=gate)

    async def main() -> list[Outcome]:
        first = asyncio.ensure_future(recorder.record(_hit(tokens["open"][0])))
        await asyncio.to_thread(gate.entered.wait, 30)  # the recorder holds batch 1
        rest = [
            asyncio.ensure_future(recorder.record(_hit(t, kind)))
            for t, kind in [(tokens["open"][0], "open")] * 46
            + [
                (tokens["click"][0], "click"),
                ("no-such-token", "open"),
                (tokens["open"][0], "click"),
            ]
        ]
        await asyncio.sleep(0)  # each has queued its hit and waits
        assert not any(f.done() for f in [first, *rest])
        gate.release.set()
        return await asyncio.gather(first, *rest)

    outcomes = asyncio.run(main())
    recorder.close()
    assert gate.sizes == [1, 47]  # two transactions; 49 hits less the unknown, the mismatched
    assert all(o.link is not None and o.link.token == tokens["open"][0] for o in outcomes[:47])
    click = outcomes[47].link
    assert click is not None and click.url == "https://shop.example/a"
    assert outcomes[48:] == [Outcome(None), Outcome(None)]  # 404s: unknown, and a pixel as a link
    assert _events(sessions, tokens["open"][0]) == 47


def test_a_bad_hit_loses_only_itself(sessions: sessionmaker[Session]) -> None:
    token = _tracked(sessions)["open"][0]
    known = _link(sessions, token)
    gone = replace(known, outbox_id=10**9)  # its outbox deleted since the token was read
    recorder = HitRecorder(sessions)

    async def main() -> list[Outcome]:
        hits = (_hit(token), _hit(token, link=gone), _hit(token, link=known))
        return await asyncio.gather(*(recorder.record(h) for h in hits))

    assert asyncio.run(main()) == [Outcome(known), Outcome(gone, error=True), Outcome(known)]
    recorder.close()
    assert _events(sessions, token) == 2


def test_what_waits_is_bounded(sessions: sessionmaker[Session]) -> None:
    token = _tracked(sessions)["open"][0]
    gate = Gate()
    recorder = HitRecorder(sessions, record=gate, max_pending=2)

    async def main() -> None:
        first = asyncio.ensure_future(recorder.record(_hit(token)))
        await asyncio.to_thread(gate.entered.wait, 30)
        second = asyncio.ensure_future(recorder.record(_hit(token)))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await recorder.record(_hit(token))
        gate.release.set()
        assert all(o.link is not None for o in await asyncio.gather(first, second))

    asyncio.run(main())
    recorder.close()
    assert _events(sessions, token) == 2


async def _not_found(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _lane(
    db_url: str, sessions: sessionmaker[Session], tmp_path: Any
) -> tuple[TrackingLane, TestClient]:
    settings = make_settings(db_url, tmp_path)
    ctx = ApiContext(settings=settings, sessions=sessions, box=SecretBox(settings.secret_key))
    lane = TrackingLane(_not_found, ctx=ctx)
    return lane, TestClient(lane)


def test_the_lane_answers(db_url: str, sessions: sessionmaker[Session], tmp_path: Any) -> None:
    tokens = _tracked(sessions)
    lane, client = _lane(db_url, sessions, tmp_path)
    pixel = client.get(f"/t/o/{tokens['open'][0]}")
    assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
    assert pixel.headers["cache-control"] == "no-store, private" and pixel.content[:6] == b"GIF89a"
    assert client.head(f"/t/o/{tokens['open'][0]}").status_code == 200
    hops = sorted(
        client.get(f"/t/c/{t}", follow_redirects=False).headers["location"] for t in tokens["click"]
    )
    assert hops == ["https://shop.example/a", "https://shop.example/b?x=1"]
    for path in (
        f"/t/c/{tokens['open'][0]}",  # a pixel token is no link
        f"/t/o/{tokens['open'][0]}x",
        f"/t/o/{tokens['open'][0]}/x",
        "/t/o/" + "A" * 65,
        "/t/o/",
    ):
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code == 404 and "location" not in answer.headers, path
    assert client.post(f"/t/o/{tokens['open'][0]}").status_code == 405
    assert client.get("/t/x/abc").status_code == 404  # passed on to the app
    assert _events(sessions, tokens["open"][0]) == 2
    lane.state.recorder.close()


def test_when_the_database_refuses_a_pixel_says_so_and_a_click_still_goes(
    db_url: str, sessions: sessionmaker[Session], tmp_path: Any
) -> None:
    tokens = _tracked(sessions)
    lane, client = _lane(db_url, sessions, tmp_path)
    click = f"/t/c/{tokens['click'][0]}"
    assert client.get(f"/t/o/{tokens['open'][0]}").status_code == 200  # both links now known
    assert client.get(click, follow_redirects=False).status_code == 302
    with sessions() as s, s.begin():
        s.execute(sa.text("ALTER TABLE tracking_events RENAME TO tracking_events_away"))
    try:
        refused = client.get(f"/t/o/{tokens['open'][0]}")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        still = client.get(click, follow_redirects=False)
        assert still.status_code == 302 and still.headers["location"].startswith("https://shop.")
    finally:
        with sessions() as s, s.begin():
            s.execute(sa.text("ALTER TABLE tracking_events_away RENAME TO tracking_events"))
    assert client.get(f"/t/o/{tokens['open'][0]}").status_code == 200
    assert _events(sessions, tokens["open"][0]) == 2
    lane.state.recorder.close()


def test_a_client_over_its_rate_records_nothing(
    db_url: str, sessions: sessionmaker[Session], tmp_path: Any
) -> None:
    token = _tracked(sessions)["open"][0]
    lane, client = _lane(db_url, sessions, tmp_path)
    lane.state.limiter = RateLimiter(rate=0.0, burst=2.0)
    answers = [client.get(f"/t/o/{token}").status_code for _ in range(4)]
    assert answers == [200, 200, 429, 429]
    assert _events(sessions, token) == 2
    lane.state.recorder.close()


def test_a_click_link_is_read_again_until_its_copy_is_accepted(
    db_url: str, sessions: sessionmaker[Session], tmp_path: Any
) -> None:
    """A scanner is told by the time since acceptance: a link read before it is not kept."""
    token = _tracked(sessions, accepted=False)["click"][0]
    lane, client = _lane(db_url, sessions, tmp_path)
    assert client.get(f"/t/c/{token}", follow_redirects=False).status_code == 302
    assert lane.state.links.get(token) is None
    with sessions() as s, s.begin():
        link = s.get(TrackingLink, token)
        assert link is not None
        s.execute(
            sa.update(OutboxCopy).where(OutboxCopy.id == link.copy_id).values(accepted_at=utcnow())
        )
    assert client.get(f"/t/c/{token}", follow_redirects=False).status_code == 302
    cached = lane.state.links.get(token)
    assert cached is not None and cached.accepted_at is not None
    lane.state.recorder.close()


def _clicks(sessions: sessionmaker[Session], token: str) -> list[tuple[bool, str | None]]:
    with sessions() as s:
        link = s.get(TrackingLink, token)
        assert link is not None
        rows = s.execute(
            sa.select(TrackingEvent.machine, TrackingEvent.reason)
            .where(TrackingEvent.copy_id == link.copy_id, TrackingEvent.type == "click")
            .order_by(TrackingEvent.id)
        )
        return [(bool(m), r) for m, r in rows]


def _record(sessions: sessionmaker[Session], *hits: svc.PendingHit) -> None:
    with sessions() as s, s.begin():
        svc.record_hits(session=s, hits=hits)


def test_a_scanner_burst_is_seen_across_batches_and_within_one(
    sessions: sessionmaker[Session],
) -> None:
    """Every link of a copy clicked within 2 s is a scanner — the clicks already stored and
    those of the same batch alike; one link clicked alone is a person."""
    person = _tracked(sessions, ago=600)["click"]
    _record(sessions, _pending(sessions, person[0]))
    assert _clicks(sessions, person[0]) == [(False, None)]

    across = _tracked(sessions, ago=600)
    _record(sessions, _pending(sessions, across["click"][0]))  # stored first
    _record(sessions, _pending(sessions, across["click"][1]), _pending(sessions, across["open"][0]))
    assert _clicks(sessions, across["click"][0]) == [(True, "scanner"), (True, "scanner")]

    within = _tracked(sessions, ago=600)["click"]
    _record(sessions, *(_pending(sessions, t) for t in within))
    assert _clicks(sessions, within[0]) == [(True, "scanner"), (True, "scanner")]
    assert _clicks(sessions, person[0]) == [(False, None)]  # other copies untouched


def test_a_recipient_who_opted_out_is_not_recorded_known_token_or_not(
    sessions: sessionmaker[Session],
) -> None:
    """Opt-out is read with the token when the token is new to this process, and on its own
    when the token was known already: neither records."""
    tokens = _tracked(sessions)
    known = _link(sessions, tokens["open"][0])
    with sessions() as s, s.begin():  # the recipient opts out (a contact by now, or made so)
        s.execute(
            sa.update(Contact)
            .where(Contact.account_id == known.account_id, Contact.email == known.recipient)
            .values(tracking_opt_out=True)
        )
        if not s.scalar(sa.select(Contact.id).where(Contact.email == known.recipient)):
            s.add(
                Contact(account_id=known.account_id, email=known.recipient, tracking_opt_out=True)
            )
    recorder = HitRecorder(sessions)

    async def main() -> list[Outcome]:
        return [
            await recorder.record(_hit(tokens["open"][0])),  # new: read with the token
            await recorder.record(_hit(tokens["open"][0], link=known)),  # known: read apart
        ]

    assert asyncio.run(main()) == [Outcome(known), Outcome(known)]  # answered all the same
    recorder.close()
    assert _events(sessions, tokens["open"][0]) == 0
    other = _tracked(sessions)["open"][0]  # someone who did not opt out
    recorder = HitRecorder(sessions)
    asyncio.run(recorder.record(_hit(other)))
    recorder.close()
    assert _events(sessions, other) == 1
