"""Bound tests for sender verification (spec §6 Bounded work): Authentication-Results and
DKIM-Signature headers are the sender's to write; reading them is linear in the header block,
and gives the same verdicts as before."""

from __future__ import annotations

import time

from gateway.smtp.verify import dkim_pass, header_from, trusted_auth_results_pass

CEILING = 10.0  # seconds
TRUSTED = frozenset({"mx.ours.example"})


def mail(*headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return (
        "From: Bob <bob@ours.example>\r\nTo: log@log.localhost\r\nSubject: hi\r\n"
        f"{head}\r\nbody\r\n"
    ).encode()


def test_bound_authentication_results_of_hostile_text() -> None:
    junk = [
        "mx.ours.example; dkim=pass" + " a=" * 20_000,
        "mx.ours.example; " + "dkim=" * 12_000,
        "mx.ours.example; dkim=pass " + "header.d" * 7_000,
        "mx.ours.example; " + "x" * 60_000,
    ]
    start = time.perf_counter()
    for value in junk:
        assert not trusted_auth_results_pass(
            mail(f"Authentication-Results: {value}"), "ours.example", TRUSTED
        )
    assert time.perf_counter() - start < CEILING


def test_bound_many_dkim_signature_lines() -> None:
    raw = mail(*["DKIM-Signature:" + " " * 40 for _ in range(4_000)])
    start = time.perf_counter()
    assert not dkim_pass(raw[:70_000], "ours.example", dnsfunc=lambda *a, **k: None)
    assert time.perf_counter() - start < CEILING


def test_verdicts_are_unchanged() -> None:
    def verdict(value: str) -> bool:
        return trusted_auth_results_pass(
            mail(f"Authentication-Results: {value}"), "ours.example", TRUSTED
        )

    assert verdict("mx.ours.example; dkim=pass header.d=ours.example")
    assert verdict("mx.ours.example; spf=fail; DMARC=Pass header.from=ours.example")
    assert verdict("mx.ours.example;\r\n dkim=pass header.i=@x header.d=mail.ours.example")
    assert not verdict("mx.ours.example; dkim=pass header.d=other.example")
    assert not verdict("mx.evil.example; dkim=pass header.d=ours.example")
    assert not verdict("mx.ours.example; xdkim=pass header.d=ours.example")  # not a method
    assert header_from(mail()) == "bob@ours.example"


def _from_whole_block(raw: bytes) -> str | None:
    """header_from as it read before header_block: the parser over the first 64 KB."""
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    from shared.mail.addresses import parse_address

    values = BytesHeaderParser(policy=compat32).parsebytes(raw[:65536]).get_all("From") or []
    addr = parse_address(str(values[0])) if len(values) == 1 else None
    return addr.address if addr else None


def test_header_from_reads_only_the_header_block_with_the_same_answer() -> None:
    import random
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "mail"))
    from mail_helpers import DATA, corpus_messages

    samples = [p.read_bytes() for p in [*sorted(DATA.glob("*.eml")), *corpus_messages()]]
    rng = random.Random(5)
    pieces = [b"From: a@b.example", b"From: <c@d.example>", b"X: y", b" folded", b"", b"\r",
              b"no colon here", b"From c@d Mon", b"\tFrom: e@f.example"]  # fmt: skip
    for _ in range(3000):
        lines = [rng.choice(pieces) for _ in range(rng.randrange(1, 8))]
        samples.append(b"".join(line + rng.choice([b"\n", b"\r\n", b"\r"]) for line in lines))
    assert len(samples) > 3000
    found = 0
    for raw in samples:
        ours = header_from(raw)
        assert ours == _from_whole_block(raw), raw[:300]
        found += ours is not None
    assert found > 200  # enough samples had a single From to compare the address itself
