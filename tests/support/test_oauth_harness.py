"""Tests for the local OAuth 2 server and Dovecot's oauth2 passdb against it.

The client side is Authlib's httpx ``OAuth2Client`` unmodified and imapclient's
``oauth2_login``/``oauthbearer_login``: what inboxlog will use.
"""

from __future__ import annotations

import secrets
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from joserfc import jwt
from joserfc.jwk import KeySet

from .dovecot import DovecotServer, dovecot_server_factory
from .oauth_server import LocalOAuthServer

with warnings.catch_warnings():
    # Authlib 1.9 warns once at import that it prefers the httpx2 package.
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import OAuth2Client

EMAIL = "alice@example.test"
CLIENT_ID, CLIENT_SECRET = "inboxlog-test", "client-secret-1234"
REDIRECT_URI = "http://app.example.test/oauth/callback"
SCOPE = "openid email https://mail.example.test/imap offline_access"
MESSAGE = (
    b"From: Bob <bob@example.com>\r\nTo: alice@example.test\r\nSubject: hi\r\n"
    b"Message-ID: <m1@example.com>\r\n\r\nhello\r\n"
)


@pytest.fixture
def oauth() -> Iterator[LocalOAuthServer]:
    with LocalOAuthServer(access_token_ttl=90) as server:
        server.add_client(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI])
        server.set_identity(EMAIL)
        yield server
        assert server.errors == []


@pytest.fixture
def dovecot(tmp_path: Path, oauth: LocalOAuthServer) -> Iterator[DovecotServer]:
    make, cleanup = dovecot_server_factory(tmp_path)
    server = make(oauth_introspection_url=oauth.introspection_url)
    server.add_user(EMAIL, "plain password")
    server.append(EMAIL, "INBOX", MESSAGE)
    yield server
    cleanup()


def new_client(**options: Any) -> OAuth2Client:
    return OAuth2Client(
        CLIENT_ID,
        options.pop("client_secret", CLIENT_SECRET),
        scope=SCOPE,
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        **options,
    )


def authorize(server: LocalOAuthServer, client: OAuth2Client, verifier: str) -> dict[str, str]:
    """Play the browser: follow the authorize URL and return the redirect's parameters."""
    url, state = client.create_authorization_url(server.authorize_url, code_verifier=verifier)
    resp = httpx.get(url, follow_redirects=False)
    assert resp.status_code == 302, resp.text
    location = resp.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    params = dict(parse_qsl(urlsplit(location).query))
    assert params.pop("state") == state
    return params


def connect(server: LocalOAuthServer, **options: Any) -> tuple[OAuth2Client, dict[str, Any]]:
    """Authorization code + PKCE from start to finish: (client, token response)."""
    client = new_client(**options)
    verifier = secrets.token_urlsafe(64)
    params = authorize(server, client, verifier)
    token = client.fetch_token(server.token_url, code=params["code"], code_verifier=verifier)
    return client, dict(token)


def imap_login(dovecot: DovecotServer, access_token: str, *, bearer: bool = False) -> IMAPClient:
    imap = IMAPClient(*dovecot.address, ssl=False, timeout=10)
    try:
        if bearer:
            imap.oauthbearer_login(EMAIL, access_token)
        else:
            imap.oauth2_login(EMAIL, access_token)
    except BaseException:
        imap.shutdown()
        raise
    return imap


def assert_login_refused(dovecot: DovecotServer, access_token: str, reason: str) -> None:
    with pytest.raises(LoginError, match=reason):
        imap_login(dovecot, access_token)


def refresh(client: OAuth2Client, server: LocalOAuthServer, refresh_token: str) -> dict[str, Any]:
    return dict(client.refresh_token(server.token_url, refresh_token=refresh_token))


def test_code_flow_tokens_log_in_with_xoauth2_and_oauthbearer(
    oauth: LocalOAuthServer, dovecot: DovecotServer
) -> None:
    _client, token = connect(oauth)

    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 90
    assert token["scope"] == SCOPE
    jwks = KeySet.import_key_set(httpx.get(oauth.jwks_url).json())
    claims = jwt.decode(token["id_token"], jwks).claims
    assert claims["iss"] == oauth.issuer
    assert claims["aud"] == CLIENT_ID
    assert (claims["email"], claims["email_verified"]) == (EMAIL, True)
    assert claims["preferred_username"] == EMAIL
    assert claims["exp"] > claims["iat"]

    for bearer in (False, True):
        imap = imap_login(dovecot, token["access_token"], bearer=bearer)
        assert imap.select_folder("INBOX", readonly=True)[b"EXISTS"] == 1
        imap.logout()
    assert oauth.hits("introspect") == 2  # Dovecot asked the server at each login
    [record] = oauth.token_requests
    assert (record.grant_type, record.client_id, record.outcome) == (
        "authorization_code",
        CLIENT_ID,
        "ok",
    )
    assert record.email == EMAIL


def test_refresh_rotates_and_the_new_access_token_logs_in(
    oauth: LocalOAuthServer, dovecot: DovecotServer
) -> None:
    client, first = connect(oauth)
    second = refresh(client, oauth, first["refresh_token"])

    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert first["refresh_token"] in oauth.revoked
    assert oauth.issued_refresh_tokens == [first["refresh_token"], second["refresh_token"]]
    with pytest.raises(OAuthError) as excinfo:
        refresh(client, oauth, first["refresh_token"])
    assert excinfo.value.error == "invalid_grant"
    imap = imap_login(dovecot, second["access_token"])
    assert imap.select_folder("INBOX", readonly=True)[b"EXISTS"] == 1
    imap.logout()
    imap_login(dovecot, first["access_token"]).logout()  # lives on until it expires
    assert oauth.count("refresh_token") == 2
    assert oauth.count("refresh_token", outcome="invalid_grant", email=EMAIL) == 1


def test_refresh_token_reuse_can_revoke_the_whole_grant(
    oauth: LocalOAuthServer, dovecot: DovecotServer
) -> None:
    oauth.revoke_grant_on_refresh_reuse = True
    client, first = connect(oauth)
    second = refresh(client, oauth, first["refresh_token"])

    for token in (first["refresh_token"], second["refresh_token"]):
        with pytest.raises(OAuthError, match="invalid_grant"):
            refresh(client, oauth, token)
    assert_login_refused(dovecot, second["access_token"], "AUTHENTICATIONFAILED")


def test_without_rotation_the_refresh_token_stays(oauth: LocalOAuthServer) -> None:
    oauth.rotate_refresh_tokens = False  # Google's way
    client, first = connect(oauth)
    for _ in range(2):
        again = refresh(client, oauth, first["refresh_token"])
        # No refresh_token in the answer; Authlib then keeps the one it sent.
        assert again["refresh_token"] == first["refresh_token"]
        assert again["access_token"] != first["access_token"]
    assert oauth.issued_refresh_tokens == [first["refresh_token"]]
    assert oauth.revoked == set()
    assert oauth.count("refresh_token", outcome="ok") == 2


def test_revoked_grant_fails_imap_login_refresh_and_userinfo(
    oauth: LocalOAuthServer, dovecot: DovecotServer
) -> None:
    client, token = connect(oauth)
    imap_login(dovecot, token["access_token"]).logout()

    assert oauth.revoke_grant(EMAIL) == 1

    assert_login_refused(dovecot, token["access_token"], "AUTHENTICATIONFAILED")
    with pytest.raises(OAuthError, match="invalid_grant"):
        refresh(client, oauth, token["refresh_token"])
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert httpx.get(oauth.userinfo_url, headers=bearer).status_code == 401
    assert {token["access_token"], token["refresh_token"]} <= oauth.revoked


def test_expired_access_token_fails_imap_login_until_refreshed(
    oauth: LocalOAuthServer, dovecot: DovecotServer
) -> None:
    client, token = connect(oauth)
    assert oauth.expire_access_tokens(EMAIL) == 1

    assert_login_refused(dovecot, token["access_token"], "AUTHENTICATIONFAILED")
    oauth.access_token_ttl = 5
    fresh = refresh(client, oauth, token["refresh_token"])
    assert fresh["expires_in"] == 5
    imap_login(dovecot, fresh["access_token"]).logout()


def test_unavailable_introspection_is_a_temporary_imap_failure(
    oauth: LocalOAuthServer, dovecot: DovecotServer
) -> None:
    _client, token = connect(oauth)
    oauth.fail_introspection_requests(1)
    assert_login_refused(dovecot, token["access_token"], "UNAVAILABLE")
    imap_login(dovecot, token["access_token"]).logout()


def test_wrong_pkce_verifier_is_invalid_grant_and_burns_the_code(
    oauth: LocalOAuthServer,
) -> None:
    client = new_client()
    verifier = secrets.token_urlsafe(64)
    code = authorize(oauth, client, verifier)["code"]

    with pytest.raises(OAuthError, match="invalid_grant"):
        client.fetch_token(oauth.token_url, code=code, code_verifier=secrets.token_urlsafe(64))
    with pytest.raises(OAuthError, match="invalid_grant"):
        client.fetch_token(oauth.token_url, code=code, code_verifier=verifier)
    assert oauth.count("authorization_code", outcome="invalid_grant") == 2


def test_expired_code_is_invalid_grant(oauth: LocalOAuthServer) -> None:
    oauth.code_ttl = 0
    client = new_client()
    verifier = secrets.token_urlsafe(64)
    code = authorize(oauth, client, verifier)["code"]
    with pytest.raises(OAuthError, match="expired"):
        client.fetch_token(oauth.token_url, code=code, code_verifier=verifier)


def test_code_is_single_use(oauth: LocalOAuthServer) -> None:
    client = new_client()
    verifier = secrets.token_urlsafe(64)
    code = authorize(oauth, client, verifier)["code"]
    client.fetch_token(oauth.token_url, code=code, code_verifier=verifier)
    with pytest.raises(OAuthError, match="invalid_grant"):
        client.fetch_token(oauth.token_url, code=code, code_verifier=verifier)


def test_authorize_refuses_plain_or_missing_pkce(oauth: LocalOAuthServer) -> None:
    base = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI}
    for extra in ({"code_challenge": "x" * 43, "code_challenge_method": "plain"}, {}):
        query = urlencode({**base, **extra, "state": "s1"})
        resp = httpx.get(f"{oauth.authorize_url}?{query}")
        assert resp.status_code == 302
        params = dict(parse_qsl(urlsplit(resp.headers["location"]).query))
        assert (params["error"], params["state"]) == ("invalid_request", "s1")


def test_denied_consent_redirects_with_access_denied(oauth: LocalOAuthServer) -> None:
    oauth.next_consent(deny=True)
    client = new_client()
    params = authorize(oauth, client, secrets.token_urlsafe(64))
    assert params["error"] == "access_denied"
    assert "code" not in params
    assert authorize(oauth, client, secrets.token_urlsafe(64)).keys() == {"code"}


def test_unknown_client_or_redirect_uri_gets_a_page_not_a_redirect(
    oauth: LocalOAuthServer,
) -> None:
    for client_id, redirect_uri in ((CLIENT_ID, "http://evil.test/cb"), ("nobody", REDIRECT_URI)):
        client = OAuth2Client(
            client_id, "x", redirect_uri=redirect_uri, code_challenge_method="S256"
        )
        url, _state = client.create_authorization_url(
            oauth.authorize_url, code_verifier=secrets.token_urlsafe(64)
        )
        resp = httpx.get(url, follow_redirects=False)
        assert resp.status_code == 400
        assert "location" not in resp.headers
    assert [r.outcome for r in oauth.authorize_requests] == ["refused", "refused"]


def test_client_authentication_basic_and_post(oauth: LocalOAuthServer) -> None:
    connect(oauth, token_endpoint_auth_method="client_secret_post")
    connect(oauth)  # Authlib's default: client_secret_basic
    with pytest.raises(OAuthError, match="invalid_client"):
        connect(oauth, client_secret="wrong")
    assert [r.outcome for r in oauth.token_requests] == ["ok", "ok", "invalid_client"]


def test_concurrent_refreshes_with_one_token_only_one_wins(oauth: LocalOAuthServer) -> None:
    _client, token = connect(oauth)
    oauth.token_delay(0.3)
    barrier = threading.Barrier(2)
    results: list[str] = []

    def worker() -> None:
        client = new_client()
        barrier.wait()
        try:
            refresh(client, oauth, token["refresh_token"])
            results.append("ok")
        except OAuthError as exc:
            results.append(str(exc.error))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(results) == ["invalid_grant", "ok"]
    assert oauth.count("refresh_token") == 2


def test_delay_after_processing_loses_the_answer_but_rotates(oauth: LocalOAuthServer) -> None:
    _client, token = connect(oauth)
    oauth.token_delay(1.0, after_processing=True)
    impatient = new_client(timeout=0.2)
    with pytest.raises(httpx.ReadTimeout):
        refresh(impatient, oauth, token["refresh_token"])
    oauth.token_delay(0)
    assert token["refresh_token"] in oauth.revoked  # the provider rotated all the same
    assert len(oauth.issued_refresh_tokens) == 2


def test_injected_token_failures_and_refresh_errors(oauth: LocalOAuthServer) -> None:
    client, token = connect(oauth)
    oauth.fail_token_requests(2, 503, body="html")
    for _ in range(2):
        with pytest.raises(httpx.HTTPStatusError):
            refresh(client, oauth, token["refresh_token"])
    oauth.error_for_refresh("invalid_grant", "AADSTS70000: The grant is expired.")
    with pytest.raises(OAuthError) as excinfo:
        refresh(client, oauth, token["refresh_token"])
    assert (excinfo.value.error, excinfo.value.description) == (
        "invalid_grant",
        "AADSTS70000: The grant is expired.",
    )
    refresh(client, oauth, token["refresh_token"])  # neither failure consumed the token
    outcomes = [r.outcome for r in oauth.token_requests if r.grant_type == "refresh_token"]
    assert outcomes == ["injected_503", "injected_503", "invalid_grant", "ok"]


def test_email_verified_can_be_left_out_like_microsoft(oauth: LocalOAuthServer) -> None:
    oauth.next_consent("bob@example.test", email_verified=None, sub="ms-oid-1")
    _client, token = connect(oauth)
    jwks = KeySet.import_key_set(httpx.get(oauth.jwks_url).json())
    claims = jwt.decode(token["id_token"], jwks).claims
    assert claims["sub"] == "ms-oid-1"
    assert "email_verified" not in claims
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert httpx.get(oauth.userinfo_url, headers=bearer).json() == {
        "sub": "ms-oid-1",
        "email": "bob@example.test",
    }
    introspection = httpx.post(oauth.introspection_url, data={"token": token["access_token"]})
    assert introspection.json()["username"] == "bob@example.test"


def test_all_secrets_lists_what_must_never_leak(oauth: LocalOAuthServer) -> None:
    client = new_client()
    verifier = secrets.token_urlsafe(64)
    code = authorize(oauth, client, verifier)["code"]
    token = dict(client.fetch_token(oauth.token_url, code=code, code_verifier=verifier))
    fresh = refresh(client, oauth, token["refresh_token"])

    issued = {t[k] for t in (token, fresh) for k in ("access_token", "refresh_token", "id_token")}
    assert oauth.all_secrets() == {CLIENT_SECRET, code, verifier} | issued


def test_introspection_by_post_get_and_bearer(oauth: LocalOAuthServer) -> None:
    _client, token = connect(oauth)
    access = token["access_token"]
    answers = [
        httpx.post(oauth.introspection_url, data={"token": access}).json(),
        httpx.get(oauth.introspection_url, params={"token": access}).json(),
        httpx.get(oauth.introspection_url, headers={"Authorization": f"Bearer {access}"}).json(),
    ]
    for answer in answers:
        assert answer["active"] is True
        assert (answer["email"], answer["client_id"], answer["scope"]) == (EMAIL, CLIENT_ID, SCOPE)
    oauth.expire_access_tokens()
    expired = httpx.post(oauth.introspection_url, data={"token": access}).json()
    assert expired == {"active": False}
    refresh_token = httpx.post(oauth.introspection_url, data={"token": token["refresh_token"]})
    assert refresh_token.json() == {"active": False}  # only access tokens open a mailbox


def test_discovery_document_lists_the_endpoints(oauth: LocalOAuthServer) -> None:
    meta = httpx.get(oauth.metadata_url).json()
    assert meta["issuer"] == oauth.issuer
    assert meta["token_endpoint"] == oauth.token_url
    assert meta["authorization_endpoint"] == oauth.authorize_url
    assert meta["jwks_uri"] == oauth.jwks_url
    assert meta["code_challenge_methods_supported"] == ["S256"]
