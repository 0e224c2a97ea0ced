"""Rewrite ISO-2022-JP (RFC 1468) shift states into Shift_JIS bytes for a CP932 decode.

Mail labelled ``iso-2022-jp`` routinely carries the NEC/IBM rows of CP932 (``①``, ``㈱``,
``髙``), which Python's strict ``iso2022_jp`` codec rejects. Rewriting the JIS X 0208 byte
pairs to Shift_JIS and decoding with CP932 reads them as CP50220 does.

The rewrite is a byte-level state machine, but well-formed text is rewritten a whole run
(the text between two escape sequences) at a time: ASCII runs are copied, half-width kana runs
shifted with one ``bytes.translate``, kanji runs mapped with translate tables. From the first
run that is not clean (SO/SI, a stray escape, a broken pair) the byte-by-byte reference takes
over, so every input gives what the byte-by-byte machine alone gives.
"""

from __future__ import annotations

import re

# The patterns below are linear: each starts with a literal or is one character class, and
# _PAIRS repeats a fixed two-byte step (nothing to backtrack into).
_ESC_RE = re.compile(rb"\x1b(\$[@B]|\$\(D|\$\(Q|\$\(O|\$[A)]|\$\)C|\(B|\(J|\(I|\(H|\.A|\.F|N)")
_KANJI_SEQS = (b"$B", b"$@", b"$(Q", b"$(O")
_ASCII, _KANJI, _KANA = 0, 1, 2

_SHIFTS = re.compile(rb"[\x1b\x0e\x0f]")  # a stray escape, SO or SI
_PAIRS = re.compile(rb"(?:[\x21-\x7e][\x21-\x7e])*")  # JIS X 0208 row/cell pairs


def _lead(j1: int) -> int:
    return (((j1 + 1) >> 1) + (0x70 if j1 <= 0x5E else 0xB0)) & 0xFF


def _trail(j1: int, j2: int) -> int:
    return (j2 + (31 if j2 <= 95 else 32) if j1 & 1 else j2 + 126) & 0xFF


# Lead byte from j1; a parity flag (0x80 for odd j1) that is OR-ed onto j2 (always < 0x80
# in a run) so that one table maps (parity, j2) to the trail byte.
_LEAD = bytes(_lead(b) for b in range(256))
_PARITY = bytes(0x80 if b & 1 else 0 for b in range(256))
_TRAIL = bytes(_trail(1 if v & 0x80 else 0, v & 0x7F) for v in range(256))
_KANA_SHIFT = bytes(b + 0x80 if 0x21 <= b <= 0x5F else b for b in range(256))


def _pairs_to_sjis(run: bytes) -> bytes:
    firsts, seconds = run[0::2], run[1::2]
    flagged = int.from_bytes(seconds, "big") | int.from_bytes(firsts.translate(_PARITY), "big")
    out = bytearray(len(run))
    out[0::2] = firsts.translate(_LEAD)
    out[1::2] = flagged.to_bytes(len(seconds), "big").translate(_TRAIL)
    return bytes(out)


def jis_to_sjis(data: bytes) -> bytes:
    """Rewrite ISO-2022-JP shift states into Shift_JIS bytes (JIS X 0208 → SJIS mapping)."""
    pieces = _ESC_RE.split(data)  # text, escape sequence, text, escape sequence, ...
    out = bytearray()
    mode = _ASCII
    pos = 0
    for i, piece in enumerate(pieces):
        if i % 2:
            mode = _mode_after(piece)
            pos += len(piece) + 1
            continue
        fast = _clean_run(piece, mode)
        if fast is None:  # shift bytes, stray escapes or broken pairs: byte by byte from here
            out += _byte_by_byte(data, pos, mode)
            break
        out += fast
        pos += len(piece)
    return bytes(out)


def _mode_after(seq: bytes) -> int:
    return _KANJI if seq in _KANJI_SEQS else _KANA if seq == b"(I" else _ASCII


def _clean_run(piece: bytes, mode: int) -> bytes | None:
    """The rewrite of text between two escape sequences, or None if it needs the slow path."""
    if mode == _KANJI:
        return _pairs_to_sjis(piece) if _PAIRS.fullmatch(piece) else None
    if _SHIFTS.search(piece):
        return None
    return piece.translate(_KANA_SHIFT) if mode == _KANA else piece


def _byte_by_byte(data: bytes, pos: int, mode: int) -> bytes:
    """The reference state machine, from ``pos`` in ``mode`` to the end."""
    out = bytearray()
    n = len(data)
    while pos < n:
        byte = data[pos]
        if byte == 0x1B:
            m = _ESC_RE.match(data, pos)
            if m:
                mode = _mode_after(m.group(1))
                pos = m.end()
                continue
            out.append(byte)
            pos += 1
            continue
        if byte in (0x0A, 0x0D):
            out.append(byte)
            pos += 1
            continue
        if byte == 0x0E:
            mode = _KANA
            pos += 1
            continue
        if byte == 0x0F:
            mode = _ASCII
            pos += 1
            continue
        if mode == _KANJI and pos + 1 < n and 0x21 <= byte <= 0x7E:
            out.append(_lead(byte))
            out.append(_trail(byte, data[pos + 1]))
            pos += 2
            continue
        if mode == _KANA and 0x21 <= byte <= 0x5F:
            out.append(byte + 0x80)
        else:
            out.append(byte)
        pos += 1
    return bytes(out)
