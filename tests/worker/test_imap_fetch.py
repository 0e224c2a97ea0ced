"""The lean FETCH reader: every response shape a server may send, byte for byte; and how a
folder's UIDs are cut into FETCH batches bounded by count and bytes (§6 Bounded).

(The same reader runs against the real Dovecot in tests/e2e/test_imap_sync.py and through the
fault proxy in tests/e2e/test_imap_resilience.py.)
"""

from __future__ import annotations

import io

import pytest
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from worker.imap.fetch import FetchResult, read_fetch_response, uid_set
from worker.imap.placeholders import MISSING_ON_SERVER, TOO_LARGE
from worker.imap.sync import FetchLimits, plan_batches

MSG_A = b"From: a@x.example\r\nSubject: one\r\n\r\nbody {3}\r\n* 9 FETCH (UID 99 BODY[] {2}\r\n"
MSG_B = b"Subject: two\r\n\r\n\xe3\x81\x82 8-bit\r\n"


def _result(
    transcript: bytes,
    tag: bytes = b"ilf7",
    wanted: set[int] | None = None,
    max_bytes: int | None = None,
) -> FetchResult:
    stream = io.BytesIO(transcript)
    return read_fetch_response(
        stream.readline,
        stream.read,
        tag,
        wanted=wanted if wanted is not None else {5, 6, 7},
        max_bytes=max_bytes,
    )


def _read(transcript: bytes, tag: bytes = b"ilf7", wanted: set[int] | None = None) -> dict:
    got = _result(transcript, tag, wanted)
    assert got.oversized == {}
    return got.bodies


def _lit(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def test_bodies_by_uid_whatever_the_item_order_and_content() -> None:
    got = _read(
        b"* 1 FETCH (UID 5 BODY[] " + _lit(MSG_A) + b")\r\n"
        b"* 2 FETCH (BODY[] " + _lit(MSG_B) + b" UID 6)\r\n"
        b"ilf7 OK Fetch completed.\r\n"
    )
    # A body that itself looks like protocol (a fake literal, a fake FETCH line) stays data.
    assert got == {5: MSG_A, 6: MSG_B}


def test_unsolicited_responses_are_read_whole_and_ignored() -> None:
    got = _read(
        b"* 3 EXISTS\r\n"
        b"* 1 FETCH (FLAGS (\\Seen) UID 5)\r\n"  # another session changed flags
        b"* 1 FETCH (UID 5 MODSEQ (12) BODY[] " + _lit(MSG_A) + b")\r\n"
        b"* OK [ALERT] " + _lit(b"a literal in a status line") + b"\r\n"
        b"* 2 FETCH (UID 6 BODY[] NIL)\r\n"  # expunged meanwhile: absent, not empty
        b"* 4 EXPUNGE\r\n"
        b"ilf7 OK done\r\n"
    )
    assert got == {5: MSG_A}


def test_a_uid_nobody_asked_for_is_not_returned() -> None:
    got = _read(b"* 1 FETCH (UID 500 BODY[] " + _lit(MSG_B) + b")\r\nilf7 OK\r\n")
    assert got == {}


def test_an_empty_message_is_kept_as_empty_bytes() -> None:
    assert _read(b"* 1 FETCH (UID 7 BODY[] {0}\r\n)\r\nilf7 OK\r\n") == {7: b""}


def test_another_commands_completion_is_not_ours() -> None:
    got = _read(b"ilf70 OK stale\r\n* 1 FETCH (UID 5 BODY[] " + _lit(MSG_B) + b")\r\nilf7 OK\r\n")
    assert got == {5: MSG_B}


@pytest.mark.parametrize("status", [b"NO", b"BAD"])
def test_a_refused_fetch_raises(status: bytes) -> None:
    with pytest.raises(IMAPClientError, match="FETCH failed"):
        _read(b"ilf7 " + status + b" [SERVERBUG] Internal error\r\n")


@pytest.mark.parametrize(
    "transcript",
    [
        b"* 1 FETCH (UID 5 BODY[] {100}\r\nshort",  # cut inside a literal
        b"* 1 FETCH (UID 5 BODY[] " + _lit(MSG_B),  # cut before the closing line
        b"* 1 FETCH (UID 5 BODY[] " + _lit(MSG_B) + b")\r\n",  # no completion
        b"* BYE shutting down\r\n",
    ],
)
def test_a_dropped_connection_raises_abort_never_returns_partial_data(transcript: bytes) -> None:
    stream = io.BytesIO(transcript)

    def read(n: int) -> bytes:
        data = stream.read(n)
        if len(data) != n:
            raise IMAPClientAbortError("closed")
        return data

    with pytest.raises(IMAPClientAbortError):
        read_fetch_response(stream.readline, read, b"ilf7", wanted={5})


def test_uid_sets_are_compact_ranges() -> None:
    assert uid_set([9, 1, 2, 3, 7, 10, 3]) == "1:3,7,9:10"
    assert uid_set([4]) == "4"
    assert uid_set(range(1, 201)) == "1:200"


def test_a_body_larger_than_the_bound_is_dropped_not_kept() -> None:
    """A server announcing a small RFC822.SIZE and then sending a huge body: the body is read
    off the wire in chunks and dropped (memory stays bounded); the UID is reported with the
    size it really had, and the messages around it are kept."""
    big = b"x" * 3_000_000
    reads: list[int] = []
    stream = io.BytesIO(
        b"* 1 FETCH (UID 5 BODY[] " + _lit(MSG_A) + b")\r\n"
        b"* 2 FETCH (UID 6 BODY[] " + _lit(big) + b")\r\n"
        b"* 3 FETCH (UID 7 BODY[] " + _lit(MSG_B) + b")\r\n"
        b"ilf7 OK done\r\n"
    )

    def read(n: int) -> bytes:
        reads.append(n)
        return stream.read(n)

    got = read_fetch_response(stream.readline, read, b"ilf7", wanted={5, 6, 7}, max_bytes=1_000_000)
    assert got.bodies == {5: MSG_A, 7: MSG_B}
    assert got.oversized == {6: len(big)}
    assert max(reads) <= 1 << 20  # never one read of the whole literal


def _limits(batch: int = 3, batch_bytes: int = 1000, max_message: int = 600) -> FetchLimits:
    return FetchLimits(batch=batch, batch_bytes=batch_bytes, max_message=max_message)


def test_batches_are_bounded_by_count_and_by_bytes() -> None:
    sizes = {1: 100, 2: 100, 3: 100, 4: 100, 5: 400, 6: 400, 7: 300, 8: 10}
    batches = plan_batches(sizes, sizes, _limits())
    assert [b.fetch for b in batches] == [[1, 2, 3], [4, 5, 6], [7, 8]]
    for b in batches:
        assert len(b.fetch) <= 3 and sum(sizes[u] for u in b.fetch) <= 1000
        assert b.skipped == {}


def test_a_message_over_the_byte_budget_but_allowed_goes_alone() -> None:
    sizes = {1: 10, 2: 900, 3: 10}
    limits = _limits(batch=10, batch_bytes=500, max_message=1000)
    assert [b.fetch for b in plan_batches(sizes, sizes, limits)] == [[1], [2], [3]]


def test_too_large_and_unlisted_uids_ride_with_their_uid_range() -> None:
    """A message over max_message is never in a FETCH; a UID without a size (the server did
    not return it) is recorded missing. Both travel in the batch of their UID range, so the
    cursor passes them in the commit that records them."""
    sizes = {1: 100, 2: 5000, 3: 100, 5: 100}
    batches = plan_batches([1, 2, 3, 4, 5], sizes, _limits(batch=3))
    assert [(b.fetch, b.skipped) for b in batches] == [
        ([1, 3], {2: (TOO_LARGE, 5000)}),
        ([5], {4: (MISSING_ON_SERVER, 0)}),
    ]
    assert [b.last_uid for b in batches] == [3, 5]
    ranges = [sorted([*b.fetch, *b.skipped]) for b in batches]
    assert ranges == [[1, 2, 3], [4, 5]]


def test_a_long_run_of_unfetchable_uids_is_still_cut_by_count() -> None:
    sizes = {u: 10_000 for u in range(1, 11)}
    batches = plan_batches(sizes, sizes, _limits(batch=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert all(not b.fetch for b in batches)
