"""Turn bytes plus a (possibly wrong, missing or non-IANA) charset label into text.

Real mail lies about its charset. The rules here follow what mail clients actually do:

* ISO-2022-JP is decoded as the CP50220-style superset (NEC special characters such as
  ``①`` and ``㈱`` and IBM extensions appear under the plain ``iso-2022-jp`` label), by
  rewriting the JIS X 0208 shift sequences to Shift_JIS and decoding with CP932.
* Shift_JIS and its aliases are decoded as CP932; EUC-JP falls back to EUC-JIS-2004.
* GB2312 is decoded as GB18030 (a strict superset; GBK-only characters are common).
* ISO-8859-1 and US-ASCII labels are read as windows-1252 (the WHATWG convention).
* A missing or unknown label, or bytes that do not fit the label, are detected with
  charset-normalizer. Only when nothing decodes cleanly is U+FFFD substitution used.

Nothing in this module raises on any input.
"""

from __future__ import annotations

import codecs

from charset_normalizer import from_bytes

from shared.mail.jis import jis_to_sjis

_ALIASES: dict[str, str] = {
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "x_sjis": "cp932",
    "s-jis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "csshiftjis": "cp932",
    "x-ms-cp932": "cp932",
    "gb2312": "gb18030",
    "gb_2312-80": "gb18030",
    "gb_2312": "gb18030",
    "euc-cn": "gb18030",
    "x-euc-cn": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "csgb2312": "gb18030",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "euc-kr": "cp949",
    "x-euc-kr": "cp949",
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "cp1252",
    "ascii": "cp1252",
    "ansi_x3.4-1968": "cp1252",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-6-i": "iso-8859-6",
    "utf8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
    "x-unknown": "",
    "unknown-8bit": "",
    "unknown": "",
    "x-user-defined": "",
    "default": "",
    "charset": "",
}
_ISO2022JP = {
    "iso-2022-jp",
    "iso2022_jp",
    "iso2022-jp",
    "iso-2022-jp-1",
    "iso-2022-jp-2",
    "iso-2022-jp-3",
    "iso-2022-jp-2004",
    "iso2022_jp_2",
    "iso-2022-jp-ms",
    "cp50220",
    "cp50221",
    "cp50222",
    "csiso2022jp",
    "x-iso-2022-jp",
}
_EUCJP = {"euc-jp", "euc_jp", "eucjp", "x-euc-jp", "cp51932", "ujis", "cseucpkdfmtjapanese"}
_FALLBACKS: dict[str, tuple[str, ...]] = {
    "cp932": ("shift_jis_2004", "shift_jisx0213"),
    "euc_jp": ("euc_jis_2004", "euc_jisx0213"),
    "gb18030": (),
    "cp949": ("johab",),
}


def normalize_label(label: str | None) -> str | None:
    """Return a Python codec name for a MIME charset label, "" for "unknown", None if unusable."""
    if not label:
        return ""
    key = label.strip().strip("\"'").lower()
    if not key:
        return ""
    if key in _ISO2022JP:
        return "iso2022_jp"
    if key in _EUCJP:
        return "euc_jp"
    if key in _ALIASES:
        return _ALIASES[key]
    try:
        name = codecs.lookup(key).name
    except (LookupError, ValueError):
        return None
    return _ALIASES.get(name, name)


def decode_bytes(data: bytes, label: str | None = None) -> str:
    """Decode ``data`` declared as ``label``; never raises, never returns mojibake if avoidable."""
    if not data:
        return ""
    codec = normalize_label(label)
    if codec == "iso2022_jp" or (not codec and b"\x1b$" in data):
        text = _decode_iso2022jp(data)
        if text is not None:
            return text
    if codec and codec not in ("iso2022_jp", "cp1252", "utf-8"):
        for name in (codec, *_FALLBACKS.get(codec, ())):
            try:
                return data.decode(name)
            except (UnicodeDecodeError, LookupError):
                continue
    if data.isascii():
        return data.decode("ascii")
    if codec == "cp1252":
        # A "us-ascii"/"iso-8859-1" label on UTF-8 bytes is a very common lie.
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("cp1252", errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    return detect_and_decode(data)


def detect_and_decode(data: bytes) -> str:
    """Detect the charset of undeclared 8-bit bytes with charset-normalizer."""
    sample = data if len(data) <= 65536 else data[:65536]
    try:
        best = from_bytes(sample, steps=4, chunk_size=512).best()
    except Exception:  # charset-normalizer is third-party code on hostile input
        best = None
    if best is not None:
        codec = normalize_label(best.encoding) or best.encoding
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
    for name in ("cp932", "euc_jp", "gb18030"):
        try:
            return data.decode(name)
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", errors="replace")


def _decode_iso2022jp(data: bytes) -> str:
    """Decode ISO-2022-JP, accepting CP932 extensions (NEC/IBM rows) like CP50220 does."""
    try:
        return data.decode("iso2022_jp")
    except UnicodeDecodeError:
        pass
    sjis = jis_to_sjis(data)  # rewritten once, used for the strict and the lenient decode
    try:
        return sjis.decode("cp932")
    except UnicodeDecodeError:
        pass
    for name in ("iso2022_jp_2", "iso2022_jp_2004", "iso2022_jp_ext"):
        try:
            return data.decode(name)
        except UnicodeDecodeError:
            continue
    return sjis.decode("cp932", errors="replace")
