"""OAuth 2 connections (§10): providers, the HTTP client, identities, tokens and their failures.

Authlib 1.9 prefers the ``httpx2`` fork and, importing its httpx client with plain ``httpx``
(which we use), warns on every import through a filter it installs as "always". That warning is
about Authlib's plans, not our code: it is silenced here, before any module of this package
imports Authlib's httpx client.
"""

import warnings

from authlib.deprecate import AuthlibDeprecationWarning

warnings.filterwarnings(
    "ignore", message="The httpx module is deprecated", category=AuthlibDeprecationWarning
)
