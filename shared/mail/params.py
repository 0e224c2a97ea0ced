"""MIME header parameters (RFC 2045 §5.1, RFC 2231) read in time linear in the header.

The stdlib's ``email.message._parseparam`` cuts the header value after every parameter
(``s = s[end:]``) and recounts the quotes from the start at every ``;`` inside a quoted value:
quadratic, so one 1 MB ``Content-Type`` costs seconds on every ``get_param`` — and the parsers
ask for the boundary, the charset, the name and the filename of every part.
:class:`ParamMessage` is the stdlib ``Message`` with the same parameter splitting done in one
pass; the parse tree is built from it, so every parameter lookup (ours and the stdlib
parser's own ``get_boundary``) goes through :func:`split_params`.
"""

from __future__ import annotations

from email import utils
from email.message import Message
from typing import Any


def split_params(value: object) -> list[str]:
    """Exactly ``email.message._parseparam(value)``, in one pass over the value."""
    s = ";" + str(value)
    n = len(s)
    out: list[str] = []
    pos = 0  # s[pos] is the ";" before the next parameter
    while pos < n and s[pos] == ";":
        start = pos + 1
        end = s.find(";", start)
        # A ";" inside a quoted string does not end the parameter: the stdlib counts the
        # quotes (less escaped ones) before each candidate; here the counts are carried over
        # from one candidate to the next. A '\\"' never spans a ";", so no pair is split.
        quotes = 0
        counted = start
        while end > start:
            quotes += s.count('"', counted, end) - s.count('\\"', counted, end)
            counted = end
            if quotes % 2 == 0:
                break
            end = s.find(";", end + 1)
        if end < 0:
            end = n
        f = s[start:end]
        if "=" in f:
            i = f.index("=")
            f = f[:i].strip().lower() + "=" + f[i + 1 :].strip()
        out.append(f.strip())
        pos = end
    return out


class ParamMessage(Message):
    """A compat32 ``Message`` whose parameter lookups are linear (see the module docstring)."""

    def _get_params_preserve(self, failobj: Any, header: str) -> Any:
        # The stdlib method with split_params in place of _parseparam.
        missing = object()
        value = self.get(header, missing)
        if value is missing:
            return failobj
        params = []
        for p in split_params(value):
            try:
                name, val = p.split("=", 1)
                name = name.strip()
                val = val.strip()
            except ValueError:  # a bare attribute
                name = p.strip()
                val = ""
            params.append((name, val))
        return utils.decode_params(params)
