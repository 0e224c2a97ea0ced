"""Cheap introspection for aiosmtpd, which builds every connection's tables of commands, AUTH
mechanisms and handler hooks with ``dir()`` and ``inspect.getmembers`` — reading every attribute
of the protocol and of the handler, properties included, at every connection. With a new
connection per message (as many MTAs send), that was about a tenth of the gateway's CPU.

A class that mixes in ``NamedHooks`` lists, through ``__dir__``, only the attributes aiosmtpd
looks for: names beginning with one of the class's ``hook_prefixes``, found once per class.
``hasattr``/``getattr`` are untouched; only ``dir()`` of an instance is narrowed.
"""

from __future__ import annotations

from typing import Any, ClassVar


class NamedHooks:
    hook_prefixes: ClassVar[tuple[str, ...]] = ()
    _hook_names: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._hook_names = tuple(n for n in dir(cls) if n.startswith(cls.hook_prefixes))

    def __dir__(self) -> list[str]:
        return list(self._hook_names)
