"""The lean FETCH reader: every response shape a server may send, byte for byte.

(The same reader runs against the real Dovecot in tests/e2e/test_imap_sync.py and through the
fault proxy in tests/e2e/test_imap_resilience.py.)
"""

from __future__ import annotations

import io

import pytest
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from worker.imap.fetch import read_fetch_response, uid_set

MSG_A = b"From: a@x.example\r\nSubject: one\r\n\r\nbody {3}\r\n* 9 FETCH (UID 99 BODY[] {2}\r\n"
MSG_B = b"Subject: two\r\n\r\n\xe3\x81\x82 8-bit\r\n"


def _read(transcript: bytes, tag: bytes = b"ilf7", wanted: set[int] | None = None) -> dict:
    stream = io.BytesIO(transcript)
    return read_fetch_response(
        stream.readline, stream.read, tag, wanted=wanted if wanted is not None else {5, 6, 7}
    )


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
