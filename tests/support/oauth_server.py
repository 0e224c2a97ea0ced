"""A local OAuth 2 / OpenID authorization server for tests.

``LocalOAuthServer`` serves :class:`~tests.support.oauth_provider.OAuthProvider` over real
HTTP on 127.0.0.1 (ephemeral port, one thread per connection), so that Authlib's clients,
inboxlog's processes and Dovecot's oauth2 passdb can talk to it. Tests steer it with the
provider's methods (``add_client``, ``next_consent``, ``revoke_grant``, ...). No pytest
dependency.

Endpoints (``*_url`` properties): ``GET /authorize``, ``POST /token``,
``GET|POST /userinfo`` (Bearer), ``POST /introspect`` (RFC 7662 form ``token=``; GET with
``?token=`` or a Bearer header works too), ``GET /jwks``,
``GET /.well-known/openid-configuration``. Nothing is logged: URLs and bodies carry secrets.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .oauth_model import Reply, json_reply
from .oauth_provider import OAuthProvider

HOST = "127.0.0.1"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    provider: LocalOAuthServer

    def __init__(self, provider: LocalOAuthServer) -> None:
        self.provider = provider
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((HOST, 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections are closed after this
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.open_connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: request lines may hold tokens (``/introspect?token=``)."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        try:
            reply = self._route(method)
        except Exception:
            self.server.provider._record_error(traceback.format_exc())
            reply = json_reply(500, {"error": "server_error"})
        self._send(reply)

    def _route(self, method: str) -> Reply:
        provider = self.server.provider
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        body = self._read_body()
        path = url.path
        if path == "/authorize" and method == "GET":
            return provider.handle_authorize(query)
        if path == "/token" and method == "POST":
            return provider.handle_token(self._form(body), self.headers.get("Authorization"))
        if path == "/userinfo":
            return provider.handle_userinfo(self._bearer())
        if path == "/introspect":
            form = self._form(body) or {}
            token = form.get("token") or query.get("token") or self._bearer()
            return provider.handle_introspect(token)
        if path == "/jwks" and method == "GET":
            return provider.handle_jwks()
        if path == "/.well-known/openid-configuration" and method == "GET":
            return provider.handle_discovery(provider.endpoint_urls())
        if path in {"/authorize", "/token", "/jwks", "/.well-known/openid-configuration"}:
            return json_reply(405, {"error": "method_not_allowed"})
        return json_reply(404, {"error": "not_found"})

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _form(self, body: bytes) -> dict[str, str] | None:
        """The form parameters; None when one was repeated (RFC 6749 §3.2)."""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return {}
        pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        form = dict(pairs)
        return form if len(form) == len(pairs) else None

    def _bearer(self) -> str | None:
        scheme, _, value = (self.headers.get("Authorization") or "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if reply.body and self.command != "HEAD":
            self.wfile.write(reply.body)


class LocalOAuthServer(OAuthProvider):
    """An OAuth 2 / OpenID provider on http://127.0.0.1:<ephemeral port>.

    Use as a context manager, or ``start()`` then ``close()``. Constructor options are
    :class:`OAuthProvider`'s (``access_token_ttl``, ``code_ttl``,
    ``rotate_refresh_tokens``, ``revoke_grant_on_refresh_reuse``); all stay settable as
    attributes while it runs.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._errors: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalOAuthServer:
        if self._httpd is not None:
            return self
        self._httpd = _HTTPServer(self)
        self.issuer = self.base_url
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"oauth-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with httpd.connections_lock:
            connections = list(httpd.open_connections)
        for conn in connections:  # keep-alive clients (Dovecot's auth process, httpx pools)
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LocalOAuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("LocalOAuthServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def authorize_url(self) -> str:
        return self.base_url + "/authorize"

    @property
    def token_url(self) -> str:
        return self.base_url + "/token"

    @property
    def userinfo_url(self) -> str:
        return self.base_url + "/userinfo"

    @property
    def introspection_url(self) -> str:
        return self.base_url + "/introspect"

    @property
    def jwks_url(self) -> str:
        return self.base_url + "/jwks"

    @property
    def metadata_url(self) -> str:
        return self.base_url + "/.well-known/openid-configuration"

    def endpoint_urls(self) -> dict[str, str]:
        """Endpoint names as OpenID discovery spells them."""
        return {
            "authorization_endpoint": self.authorize_url,
            "token_endpoint": self.token_url,
            "userinfo_endpoint": self.userinfo_url,
            "introspection_endpoint": self.introspection_url,
            "jwks_uri": self.jwks_url,
        }

    # ------------------------------------------------------------------ diagnostics

    @property
    def errors(self) -> list[str]:
        """Tracebacks of requests that crashed the handler (answered 500); should stay empty."""
        with self._lock:
            return list(self._errors)

    def _record_error(self, text: str) -> None:
        with self._lock:
            self._errors.append(text)
