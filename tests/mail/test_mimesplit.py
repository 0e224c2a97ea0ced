"""The byte-level MIME splitter builds exactly the tree the stdlib compat32 FeedParser builds
(truncated multiparts and their defects included), and hands everything else back to it."""

from __future__ import annotations

from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.mail.mime import repair_header_block
from shared.mail.mimesplit import Unsupported, split_message
from tests.mail.mail_helpers import DATA, corpus_messages

SEEDS = [p.read_bytes() for p in corpus_messages() if p.stat().st_size < 200_000]
SEEDS += [p.read_bytes() for p in sorted(DATA.glob("*.eml"))]


def describe(msg: Message) -> list[object]:
    """Everything of a compat32 tree that our code (or a generator) can observe."""
    payload = msg._payload
    return [
        msg._headers,
        msg.get_unixfrom(),
        msg.preamble,
        msg.epilogue,
        msg.get_default_type(),
        [type(d).__name__ for d in msg.defects],
        [describe(p) for p in payload] if isinstance(payload, list) else payload,
    ]


def stdlib_tree(raw: bytes) -> list[object]:
    return describe(BytesParser(policy=compat32).parsebytes(raw))


def split_or_none(raw: bytes) -> list[object] | None:
    try:
        return describe(split_message(raw))
    except Unsupported:
        return None


def test_same_tree_as_stdlib_on_every_corpus_message() -> None:
    split = 0
    for seed in SEEDS:
        raw = repair_header_block(seed, [])
        tree = split_or_none(raw)
        if tree is not None:
            split += 1
            assert tree == stdlib_tree(raw)
    # Most real mail is well formed and takes the fast path.
    assert split >= len(SEEDS) // 2


HEAD = b"From: a@example.com\r\nSubject: s\r\n"
MIXED = HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'

SPLIT = {
    "plain_crlf": HEAD + b"\r\nline 1\r\nline 2\r\n",
    "plain_lf_no_final_eol": b"From: a@example.com\nSubject: s\n\nbody",
    "cr_only_line_endings": b"From: a@example.com\rSubject: s\r\rbody\r--x\r",
    "folded_headers": b"Subject: one\r\n two\r\n\tthree\r\nX-A:b\r\n\r\nbody\r\n",
    "unix_from_line": b"From sender@example.com Tue Mar  4 05:06:07 2025\nSubject: s\n\nb\n",
    "no_headers": b"\r\nbody only\r\n",
    "empty": b"",
    "headers_only": HEAD,
    "preamble_epilogue": MIXED
    + b"preamble\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\none\r\n\r\n"
    + b"--b  \t\r\nContent-Type: text/html\r\n\r\n<p>two</p>\r\n--b--\r\nepilogue\r\n",
    "boundary_text_mid_line": MIXED + b"--b\r\n\r\nsee --b and x--b--\r\n--bx\r\n--b--",
    "part_headers_end_at_boundary": MIXED + b"--b\r\nContent-Type: text/plain\r\n--b--\r\n",
    "nested_alternative": MIXED
    + b'--b\r\nContent-Type: multipart/alternative; boundary="i"\r\n\r\n'
    + b"--i\r\nContent-Type: text/plain\r\n\r\nplain\r\n\r\n--i\r\nContent-Type: text/html\r\n\r\n"
    + b"<b>html</b>\r\n\r\n--i--\r\n\r\n--b\r\nContent-Type: application/pdf; name=a.pdf\r\n"
    + b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n",
    # The FeedParser trims the line ending of whichever part it touched last: the inner
    # multipart of an attached message gets its epilogue trimmed, a leaf twice.
    "attached_message_with_multipart": MIXED
    + b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
    + b'Content-Type: multipart/mixed; boundary="c"\r\n\r\n--c\r\n\r\nin\r\n\r\n--c--\r\n'
    + b"\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: leaf\r\n\r\ntext\r\n\r\n\r\n--b--",
    "digest_default_type": HEAD
    + b'Content-Type: multipart/digest; boundary="d"\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\n1\r\n'
    + b"--d\r\nContent-Type: text/plain\r\n\r\n2\r\n--d--\r\n",
    "delivery_status_blocks": MIXED
    + b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
    + b"Final-Recipient: rfc822; a@b\r\nAction: failed\r\n\r\n\r\n"
    + b"Final-Recipient: rfc822; c@d\r\nAction: delayed\r\n--b--\r\n",
    "delivery_status_at_end_of_input": HEAD
    + b"Content-Type: message/delivery-status\n\nReporting-MTA: dns; x\n\nAction: failed\n",
    "start_boundary_not_found": MIXED + b"--WRONG\r\n\r\ntext\r\n",
    "close_boundary_not_found": MIXED + b"--b\r\n\r\ntext\r\n",
    "only_close_boundary": MIXED + b"--b--\r\n",
    "close_boundary_missing_in_nested_part": MIXED
    + b'--b\r\nContent-Type: multipart/alternative; boundary="i"\r\n\r\n--i\r\n\r\nx\r\n'
    + b"--b\r\n\r\nafter\r\n--b--\r\n",
    "truncated_after_separator": MIXED + b"--b\r\n\r\ntext\r\n--b",
    "start_boundary_missing_in_nested_part": MIXED
    + b'--b\r\nContent-Type: multipart/alternative; boundary="i"\r\n\r\nno parts\r\n'
    + b"--i--\r\ndropped\r\n--b--\r\n",
    "eight_bit_bytes": HEAD
    + b"Content-Type: text/plain; charset=utf-8\r\n\r\n\xe6\x97\xa5\xff\r\n",
}


@pytest.mark.parametrize("name", sorted(SPLIT))
def test_split_cases_give_the_stdlib_tree(name: str) -> None:
    raw = SPLIT[name]
    tree = split_or_none(raw)
    assert tree is not None, "expected the fast path"
    assert tree == stdlib_tree(raw)


UNSUPPORTED = {
    "missing_blank_line": b"From: a@example.com\r\n<html>body</html>\r\n",
    "first_line_continuation": b" folded\r\nSubject: s\r\n\r\nb",
    "misplaced_from_line": b"Subject: s\r\nFrom x@y Tue Mar  4 2025\r\nTo: b@c\r\n\r\nb",
    "empty_header_name": b": value\r\n\r\nb",
    "no_boundary_parameter": HEAD + b"Content-Type: multipart/mixed\r\n\r\nbody\r\n",
    "back_to_back_boundaries": MIXED + b"--b\r\n--b\r\n\r\ntext\r\n--b--\r\n",
    "encoded_multipart": HEAD
    + b'Content-Type: multipart/mixed; boundary="b"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    + b"--b\r\n\r\nx\r\n--b--\r\n",
    "status_block_with_mime_inside": MIXED
    + b"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
    + b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z--\r\n--b--\r\n",
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_defects_and_special_cases_go_to_the_stdlib(name: str) -> None:
    with pytest.raises(Unsupported):
        split_message(UNSUPPORTED[name])


def test_very_deep_trees_go_to_the_stdlib() -> None:
    body = b""
    for i in range(100):
        body += f'--b{i}\r\nContent-Type: multipart/mixed; boundary="b{i + 1}"\r\n\r\n'.encode()
    raw = b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n' + body
    with pytest.raises(Unsupported):
        split_message(raw)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    lines = draw(st.sampled_from(SEEDS)).splitlines(keepends=True)
    boundary_lines = [line for line in lines if line.startswith(b"--")] or [b"--x\n"]
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        pos = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "eol", "insert", "boundary"]))
        if op == "delete":
            del lines[pos]
        elif op == "duplicate":
            lines.insert(pos, lines[draw(st.integers(0, len(lines) - 1))])
        elif op == "eol":
            eol = draw(st.sampled_from([b"\n", b"\r\n", b"\r", b""]))
            lines[pos] = lines[pos].rstrip(b"\r\n") + eol
        elif op == "insert":
            lines.insert(pos, draw(st.sampled_from([b"\n", b"\r\n", b" x\n", b"From y\n", b":\n"])))
        else:
            line = draw(st.sampled_from(boundary_lines)).rstrip(b"\r\n")
            tail = draw(st.sampled_from([b"", b"--", b" \t", b"-- ", b"x"]))
            lines.insert(pos, line + tail + draw(st.sampled_from([b"\n", b"\r\n", b""])))
    return b"".join(lines)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_mutated_mail_splits_like_stdlib_or_falls_back(raw: bytes) -> None:
    raw = repair_header_block(raw, [])
    tree = split_or_none(raw)
    if tree is not None:
        assert tree == stdlib_tree(raw)
