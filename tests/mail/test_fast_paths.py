"""The shortcuts taken for speed and memory give exactly what the plain computation gives:
serialization of attached messages, the snippet's early stop, the capped text decode, and
the memory bound for a large attachment."""

from __future__ import annotations

import base64
import binascii
import hashlib
import random
import re
import tracemalloc
from email.message import Message
from email.policy import compat32

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.mail import body as body_module
from shared.mail import parse_message
from shared.mail.body import decode_text_part
from shared.mail.charsets import decode_bytes
from shared.mail.jis import _ASCII, _byte_by_byte, jis_to_sjis
from shared.mail.mime import Leaf, _b64, decode_payload, get_param, parse_tree
from shared.mail.quotes import make_snippet, strip_quoted
from shared.mail.serialize import part_bytes
from tests.mail.mail_helpers import DATA, corpus_messages

SEEDS = [p.read_bytes() for p in corpus_messages() if p.stat().st_size < 200_000]
SEEDS += [p.read_bytes() for p in sorted(DATA.glob("*.eml"))]
_WS = re.compile(r"\s+")
_B64_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n\r !*\x80\xff"


def _messages(msg: Message, out: list[Message] | None = None) -> list[Message]:
    """Every message inside a message/* part: what parse_message serializes."""
    out = [] if out is None else out
    if isinstance(msg._payload, list):
        for child in msg._payload:
            if msg.get_content_maintype() == "message":
                out.append(child)
            _messages(child, out)
    return out


def test_part_bytes_is_as_bytes() -> None:
    for seed in SEEDS:
        tree = parse_tree(seed, [])  # the trees parse_message really serializes from
        cache: dict[int, bytes] = {}  # keyed by id(): valid while this tree is alive
        for part in [tree, *_messages(tree)] if len(seed) < 20_000 else _messages(tree):
            try:
                expected = part.as_bytes(policy=compat32)
            except Exception:  # the stdlib generator on malformed trees; part_bytes copes
                continue
            assert part_bytes(part) == expected
            assert part_bytes(part, cache) == expected
            assert part_bytes(part, cache) is cache[id(part)]


def _snippet_without_early_stop(text: str, length: int = 200) -> str:
    own = strip_quoted(text[:20000])
    snippet = _WS.sub(" ", own).strip()
    if len(snippet) > length:
        cut = snippet[:length]
        space = cut.rfind(" ")
        snippet = (cut[:space] if space > length * 0.7 else cut).rstrip() + "…"
    return snippet


def test_snippet_early_stop_changes_nothing() -> None:
    rnd = random.Random(5)
    texts = [parse_message(seed).text for seed in SEEDS]
    words = ["a", "bb", "ccc", "  ", "\n", "\n\n", "> q", "-- ", "On Mon, X wrote:", "見積"]
    texts += [
        "".join(rnd.choice(words) + " " for _ in range(rnd.randint(0, 400))) for _ in range(300)
    ]
    for text in texts:
        for length in (200, 7):
            assert make_snippet(text, length) == _snippet_without_early_stop(text, length)


@pytest.mark.parametrize("cte", ["8bit", "7bit", "binary", "quoted-printable", "base64"])
@pytest.mark.parametrize("nul", [False, True])
def test_capped_text_decode_is_a_prefix_of_the_full_decode(
    cte: str, nul: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(body_module, "MAX_BODY_CHARS", 7)
    text = ("日本\x00語 text " if nul else "日本語 text ") * 20
    data = text.encode()
    payload = {
        "quoted-printable": "".join(f"={b:02X}" for b in data),
        "base64": base64.encodebytes(data).decode(),
    }.get(cte, data.decode("ascii", "surrogateescape"))
    part = Message(policy=compat32)
    part["Content-Type"] = "text/plain; charset=utf-8"
    part["Content-Transfer-Encoding"] = cte
    part._payload = payload
    leaf = Leaf(part, "text/plain", 0, "", False, False)
    defects: list[str] = []
    full = decode_payload(part, [])
    if b"\x00" in full:
        full = full.replace(b"\x00", b"")
    expected = decode_bytes(full[:28], get_param(part, "charset"))
    assert decode_text_part(leaf, defects) == expected
    assert defects == (["nul_bytes"] if nul else [])


@pytest.mark.parametrize("truncated", [False, True])
def test_large_attachment_parses_within_4x_its_size(truncated: bool) -> None:
    blob = random.Random(2).randbytes(6_000_000)
    raw = (
        b"From: a@example.com\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n'
        b'\r\nhello\r\n--b\r\nContent-Type: application/zip; name="big.zip"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(blob) + b"--b--\r\n"
    )
    if truncated:  # cut mid-attachment: no close boundary, an incomplete base64 quantum
        raw = raw[:-1003]
    tracemalloc.start()
    try:
        pm = parse_message(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pm.text == "hello"
    if truncated:
        assert pm.defects == ("close_boundary_not_found", "invalid_base64")
        kept = _b64_reference(raw.split(b"base64\r\n\r\n", 1)[1])
        assert len(kept) > len(blob) - 1000 and blob.startswith(kept)
        assert pm.attachments[0].size == len(kept)
        assert pm.attachments[0].sha256 == hashlib.sha256(kept).hexdigest()
    else:
        assert [(a.filename, a.size) for a in pm.attachments] == [("big.zip", len(blob))]
        assert pm.attachments[0].sha256 == hashlib.sha256(blob).hexdigest()
        assert pm.defects == ()
    assert peak < 4 * len(raw)


def _b64_reference(data: bytes | str) -> bytes:
    """The lenient base64 decode as first written (regex clean-up, one padded decode)."""
    try:
        return binascii.a2b_base64(data)
    except (binascii.Error, ValueError):
        pass
    if isinstance(data, str):
        data = data.encode("ascii", "ignore")
    clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data.split(b"=", 1)[0])
    if len(clean) % 4 == 1:
        clean = clean[:-1]
    clean += b"=" * (-len(clean) % 4)
    return binascii.a2b_base64(clean)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40).map(lambda b: bytes(_B64_BYTES[x % len(_B64_BYTES)] for x in b)))
def test_lenient_base64_matches_reference(data: bytes) -> None:
    for value in (data, data.decode("ascii", "surrogateescape")):
        assert _b64(value, []) == _b64_reference(value)


_JIS_TOKENS = [b"\x1b$B", b"\x1b(B", b"\x1b(I", b"\x1b$@", b"\x1b(J", b"\x1b$(Q", b"\x1b", b"\x1b$"]
_JIS_TOKENS += [b"\x0e", b"\x0f", b"\n", b"\r\n", b"\x80", b"\xff", b" "]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(_JIS_TOKENS),
            st.binary(min_size=1, max_size=8).map(lambda b: bytes(0x21 + x % 94 for x in b)),
            st.binary(max_size=3),
        ),
        max_size=16,
    )
)
def test_jis_runs_match_the_byte_by_byte_machine(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert jis_to_sjis(data) == _byte_by_byte(data, 0, _ASCII)


def test_jis_kanji_with_cp932_extensions() -> None:
    # ① is CP932's NEC row 13 (JIS 0x2D21, Shift_JIS 0x8740): strict iso2022_jp rejects it.
    assert jis_to_sjis(b"\x1b$B\x2d\x21\x1b(B ok\n").decode("cp932") == "① ok\n"
    jis = "山田様、いつも\n".encode("iso2022_jp") * 3
    assert jis_to_sjis(jis).decode("cp932") == "山田様、いつも\n" * 3
    assert decode_bytes(b"\x1b$B\x2d\x21\x1b(B", "iso-2022-jp") == "①"
