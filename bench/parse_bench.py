# ruff: noqa: E501
"""Parse benchmark: shared.mail.parse_message vs a bare policy.default parse + get_body()."""

from __future__ import annotations

import base64
import email
import email.policy
import gc
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shared.mail import parse_message  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "public"


def baseline(raw: bytes) -> object:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return msg.get_body(preferencelist=("plain", "html"))


def public_corpus() -> list[bytes]:
    if not CORPUS.is_dir():
        return []
    return [
        p.read_bytes()
        for p in sorted(CORPUS.rglob("*"))
        if p.is_file()
        and "crisp-email-forward-parser" not in p.parts
        and not p.name.startswith(("LICENSE", "README", "COPYING"))
        and p.suffix not in (".md", ".json")
    ]


def generated(n: int, seed: int = 7) -> list[bytes]:
    rnd = random.Random(seed)
    words = [
        "quote",
        "order",
        "invoice",
        "meeting",
        "schedule",
        "delivery",
        "price",
        "contract",
        "team",
    ]
    ja = [
        "見積",
        "注文",
        "請求書",
        "会議",
        "予定",
        "納品",
        "価格",
        "契約",
        "よろしくお願いいたします",
    ]
    out = []
    for i in range(n):
        japanese = rnd.random() < 0.3
        size = rnd.randint(2_000, 20_000)
        if japanese:
            text = "".join(rnd.choice(ja) for _ in range(size // 6)) + "\n"
            body = text.encode("iso2022_jp", "ignore")
            subj = (
                "=?ISO-2022-JP?B?"
                + base64.b64encode("お見積りの件".encode("iso2022_jp")).decode()
                + "?="
            )
            ctype, cte = "text/plain; charset=ISO-2022-JP", "7bit"
        else:
            words_n = size // 7
            text = " ".join(rnd.choice(words) for _ in range(words_n))
            body = "\n".join(text[j : j + 72] for j in range(0, len(text), 72)).encode()
            subj = f"Re: {rnd.choice(words)} #{i}"
            ctype, cte = "text/plain; charset=utf-8", "8bit"
        head = (
            f"From: Sender {i} <s{i}@example.com>\r\nTo: team@ours.example, a{i}@x.example\r\n"
            f"Subject: {subj}\r\nDate: Tue, 04 Mar 2025 14:06:07 +0900\r\n"
            f"Message-ID: <gen-{i}@example.com>\r\nMIME-Version: 1.0\r\n"
        )
        if rnd.random() < 0.1:
            att = base64.encodebytes(rnd.randbytes(rnd.randint(20_000, 1_000_000)))
            raw = (
                head + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
                f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
            ).encode()
            raw += (
                body
                + (
                    b'\r\n--b\r\nContent-Type: application/pdf; name="doc.pdf"\r\n'
                    b"Content-Transfer-Encoding: base64\r\n\r\n"
                )
                + att
                + b"--b--\r\n"
            )
        else:
            raw = (
                head + f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
            ).encode()
            raw += body
        out.append(raw)
    return out


def rates(msgs: list[bytes], chunk: int = 200) -> tuple[float, float]:
    """Messages/s of ours and of the baseline over ``msgs``, timed in alternating chunks.

    Alternating (and swapping which side goes first) keeps both sides under the same machine
    load and cache state, so the ratio stays meaningful on a busy machine.
    """
    spent = {parse_message: 0.0, baseline: 0.0}
    for n, i in enumerate(range(0, len(msgs), chunk)):
        part = msgs[i : i + chunk]
        order = (parse_message, baseline) if n % 2 == 0 else (baseline, parse_message)
        for fn in order:
            start = time.perf_counter()
            for raw in part:
                fn(raw)
            spent[fn] += time.perf_counter() - start
    return len(msgs) / spent[parse_message], len(msgs) / spent[baseline]


def big_message() -> bytes:
    big_att = base64.encodebytes(random.Random(1).randbytes(18_500_000))
    return (
        b"From: a@example.com\r\nTo: b@example.com\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
        b'hello\r\n--b\r\nContent-Type: application/zip; name="big.zip"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + big_att + b"--b--\r\n"
    )


def _vm_hwm() -> int:
    """This process's peak resident set (Linux VmHWM, reset by exec unlike ru_maxrss), bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_here(side: str, path: str) -> tuple[int, int]:
    """Peak traced bytes and max-RSS growth of one parse of the message in ``path``.

    The raw bytes are read before tracing starts, so only what the parse allocates is counted.
    """
    fn = parse_message if side == "ours" else baseline
    raw = Path(path).read_bytes()
    gc.collect()
    rss0 = _vm_hwm()
    tracemalloc.start()
    result = fn(raw)
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = _vm_hwm() - rss0
    del result
    return top, rss


def peak(side: str, raw: bytes) -> tuple[int, int]:
    """Measure each side in a fresh interpreter so neither inherits the other's heap or peak."""
    with tempfile.NamedTemporaryFile(suffix=".eml") as f:
        f.write(raw)
        f.flush()
        out = subprocess.run(
            [sys.executable, __file__, "--peak", side, f.name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
    return int(out[0]), int(out[1])


def main() -> None:
    rows = []
    pub = public_corpus()
    if pub:
        parse_message(pub[0])
        baseline(pub[0])
        rows.append((f"public corpus ({len(pub)} msgs), msg/s", *rates(pub)))
    gen = generated(10_000)
    rows.append(("generated 10,000 msgs, msg/s", *rates(gen)))
    big = big_message()
    mb = len(big) / 1e6
    (p_ours, rss_ours), (p_base, rss_base) = peak("ours", big), peak("baseline", big)
    print(f"{'measure':44} {'inboxlog':>12} {'baseline':>12} {'ratio':>7}")
    for name, ours, base in rows:
        print(f"{name:44} {ours:12.0f} {base:12.0f} {ours / base:7.2f}")
    print(
        f"{f'peak memory, {mb:.1f} MB message (MB)':44} {p_ours / 1e6:12.1f} {p_base / 1e6:12.1f}"
        f" {p_ours / len(big):6.2f}x size (baseline {p_base / len(big):.2f}x)"
    )
    print(
        f"{'  max RSS growth, same parse (MB)':44} {rss_ours / 1e6:12.1f} {rss_base / 1e6:12.1f}"
        f" {rss_ours / len(big):6.2f}x size (baseline {rss_base / len(big):.2f}x)"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--peak"]:
        print(*peak_here(sys.argv[2], sys.argv[3]))
    else:
        main()
