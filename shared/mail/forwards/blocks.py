"""Find inline forward header blocks in plain text, for every common client layout.

A *block* is a run of "Label: value" lines (quote markers ``>`` allowed) that contains a From
label and at least one of Date/Sent, Subject or To — or follows a forward banner (Gmail
"---------- Forwarded message ---------", Apple "Begin forwarded message:", Thunderbird
"-------- Forwarded Message --------", Outlook "-----Original Message-----" or the underscore
line, IONOS/Yahoo/HubSpot/Missive/MailMate banners, localized in de/fr/es/ja). Yahoo prints the
whole block on the banner line, so labels are split onto lines first.

Work is linear in the body: header labels are read with string methods, the per-line patterns
are anchored and possessive (nothing they consumed is tried again), and a block's fields are
joined once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LABELS: dict[str, str] = {}
for _field, _names in {
    "from": "from|von|de|差出人|送信元|送信者|från|van|da|od|发件人|寄件者",
    "to": "to|an|para|à|a|pour|宛先|送信先|受信者|till|aan|收件人|收件者",
    "cc": "cc|kopie|kopie (cc)|copie|copie à|cópia|cc (copia)|kopia|抄送|副本",
    "date": "date|sent|datum|gesendet|envoyé|enviado|fecha|data|送信日時|日付|日時|送信日|"
    "发送时间|寄件日期|skickat|verzonden",
    "subject": "subject|betreff|objet|sujet|asunto|assunto|件名|主题|主旨|ämne|onderwerp|oggetto",
    "reply-to": "reply-to|antwort an|répondre à|responder a",
}.items():
    for _n in _names.split("|"):
        _LABELS[_n] = _field

FORWARD_BANNER = re.compile(
    r"^\s*+(?:-{2,}+\s*+(?:forwarded\s+message|weitergeleitete\s+nachricht|message\s+transf[ée]r[ée]|"
    r"mensaje\s+reenviado|mensagem\s+encaminhada|転送されたメッセージ|メッセージを転送|"
    r"転送メッセージ|message\s+transmis|forwarded\s+mail)\s*-{0,}"
    r"|begin\s+forwarded\s+message\s*:|anfang\s+der\s+weitergeleiteten\s+nachricht\s*:|"
    r"d[ée]but\s+du\s+message\s+r[ée]exp[ée]di[ée]\s*:|inicio\s+del\s+mensaje\s+reenviado\s*:|"
    r"forwarded\s+message\s*:)",
    re.IGNORECASE,
)
OTHER_BANNER = re.compile(
    r"^\s*+(?:-{2,}+\s*+(?:original\s+message|ursprüngliche\s+nachricht|message\s+d'origine|"
    r"mensaje\s+original|元のメッセージ|オリジナルメッセージ)\s*-{0,}|_{20,}+\s*+$)",
    re.IGNORECASE,
)
# Nothing follows the repetition but an optional space: nothing to backtrack into.
_QUOTE = re.compile(r"^((?:\s?>)+)\s?")
# The lookbehind starts each attempt at the first space after a non-space: a run of spaces is
# read once from its start.
_YAHOO_SPLIT = re.compile(
    r"(?<=\S)\s*(?=(?:From|To|Cc|CC|Sent|Subject|Von|An|Gesendet|Betreff|De|Para|Enviado|Asunto|"
    r"À|Envoyé|Objet)\s?:\s)"
)


@dataclass(frozen=True, slots=True)
class Block:
    """One header block: its fields, where it sits, and whether a forward banner introduced it."""

    fields: dict[str, str]
    start: int  # line index of the first header line (or banner)
    end: int  # line index after the last header line
    quote: str  # quote prefix of the block lines (">", "> >", "")
    forward_banner: bool
    banner: bool


def label_of(line: str) -> tuple[str, str] | None:
    """``("from", value)`` for a header-looking line, else None.

    The line reads: spaces, at most two ``*``, a label (1–24 characters, none of ``:``, ``：``,
    ``*``), at most two ``*``, spaces, a colon (ASCII or full-width), at most two ``*``, the
    value — Outlook's bold ``**From:**`` included.
    """
    text = line.lstrip()
    text = text[2:] if text.startswith("**") else text[1:] if text.startswith("*") else text
    colon = _first_colon(text)
    if colon < 0:
        return None
    label = text[:colon].rstrip()
    label = label[:-2] if label.endswith("**") else label[:-1] if label.endswith("*") else label
    if not 1 <= len(label) <= 24 or "*" in label or "\n" in label:
        return None
    field = _LABELS.get(label.strip().lower())
    if not field:
        return None
    value = text[colon + 1 :]
    value = value[2:] if value.startswith("**") else value[1:] if value.startswith("*") else value
    return field, value.strip()


def _first_colon(text: str) -> int:
    """Where the first ":" or "：" is, or -1."""
    ascii_colon, wide_colon = text.find(":"), text.find("：")
    if ascii_colon < 0:
        return wide_colon
    return ascii_colon if wide_colon < 0 else min(ascii_colon, wide_colon)


def split_lines(text: str) -> list[tuple[str, str]]:
    """Lines as (quote prefix, content); Yahoo one-line blocks split per label."""
    out: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        m = _QUOTE.match(line)
        quote = m.group(1).replace(" ", "") if m else ""
        content = line[m.end() :] if m else line
        content = content.lstrip("\ufeff").rstrip()
        banner = FORWARD_BANNER.match(content)
        if banner and content[banner.end() :].strip(" -"):
            # Yahoo: "----- Forwarded Message ----- From: …To: …Sent: …Subject: …"
            out.append((quote, content[: banner.end()]))
            rest = content[banner.end() :].strip(" -")
            out.extend((quote, part.strip()) for part in _YAHOO_SPLIT.split(rest))
            continue
        out.append((quote, content))
    return out


def find_blocks(lines: list[tuple[str, str]], max_blocks: int = 50) -> list[Block]:
    """All header blocks in order (outermost first)."""
    blocks: list[Block] = []
    i = 0
    n = len(lines)
    while i < n and len(blocks) < max_blocks:
        quote, content = lines[i]
        is_fwd = bool(FORWARD_BANNER.match(content))
        is_other = not is_fwd and bool(OTHER_BANNER.match(content))
        start = i
        j = i + 1 if (is_fwd or is_other) else i
        # Allow blank lines between a banner and its header lines (Apple Mail, MailMate).
        if is_fwd or is_other:
            while j < n and j - i <= 3 and not lines[j][1].strip():
                j += 1
        fields: dict[str, str] = {}
        wrapped: dict[str, list[str]] = {}  # joined once below: += per line is quadratic
        k = j
        last: str | None = None
        while k < n:
            got = label_of(lines[k][1])
            if got is None:
                # A To/Cc list wrapped onto the next line (no label, contains an address).
                if last in ("to", "cc") and "@" in lines[k][1] and lines[k][1].strip():
                    wrapped.setdefault(last, []).append(lines[k][1].strip())
                    k += 1
                    continue
                break
            field, value = got
            if field in fields and field != "from":
                break
            if field == "from" and "from" in fields:
                break
            fields.setdefault(field, value)
            last = field
            k += 1
        for field, more in wrapped.items():
            fields[field] = " ".join([fields[field], *more])
        others = sum(1 for f in ("date", "subject", "to") if f in fields)
        if ("from" in fields and (others >= 2 or ((is_fwd or is_other) and others >= 1))) or (
            is_fwd and k > j
        ):
            blocks.append(
                Block(fields, start, k, lines[j][0] if j < n else quote, is_fwd, is_fwd or is_other)
            )
            i = max(k, i + 1)
            continue
        if is_fwd:
            # A forward banner with nothing readable after it: still a forward block.
            blocks.append(Block({}, start, j, quote, True, True))
        i += 1
    return blocks
