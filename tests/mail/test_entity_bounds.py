"""Character references in forwarded header blocks: a reference with thousands of digits (which
Python refuses to turn into an int) is replaced, never an exception that fails the message."""

from __future__ import annotations

from shared.mail.forwards.blockaddr import clean_value, parse_block_addresses


def test_a_huge_numeric_reference_is_replaced_not_raised() -> None:
    value = "Ken &#" + "1" * 5000 + "; <ken@acme.example>"
    assert clean_value(value).endswith("<ken@acme.example>")
    assert [a.address for a in parse_block_addresses(value)] == ["ken@acme.example"]


def test_ordinary_references_still_decode() -> None:
    assert clean_value("Caf&eacute; &#x41;&#66; &lt;x@y.example&gt;") == "Café AB <x@y.example>"
