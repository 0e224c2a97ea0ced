"""Delivering one message to an upstream SMTP server (§9 Delivery, §6 Network safety): real
sessions on loopback against a scriptable aiosmtpd (tests/support/upstream_smtp.py)."""

from __future__ import annotations

import logging
import pickle
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from shared.networks import Networks
from shared.outbound.smtp_client import Accepted, SmtpSettings, send_message
from shared.outbound.smtp_errors import DeliveryError, Reply, parse_reply
from tests.support.upstream_smtp import BAD_TOKEN, DROP, HANG, UpstreamSmtp

LOOPBACK = Networks.parse("127.0.0.0/8")
SENDER = "alice@sender.test"
MESSAGE = (
    b"From: Alice <alice@sender.test>\r\nTo: bob@rcpt.test\r\nSubject: Hello\r\n"
    b"Message-ID: <m1@sender.test>\r\n\r\nHello Bob.\r\n.a line that starts with a dot\r\n"
)
TEMP_451 = "451 4.3.0 Temporary local problem - please try later"


def only_loopback(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
    """A resolver: every name is 127.0.0.1 (a name the test certificate does not carry)."""
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


@pytest.fixture
def upstream(request: pytest.FixtureRequest) -> Iterator[UpstreamSmtp]:
    """A plain upstream with no AUTH; ``@pytest.mark.parametrize("upstream", [{...}],
    indirect=True)`` passes options."""
    with UpstreamSmtp(**getattr(request, "param", {})) as server:
        yield server
        assert server.errors == []


def plain(server: UpstreamSmtp, **over: Any) -> SmtpSettings:
    fields: dict[str, Any] = dict(
        host="127.0.0.1", port=server.port, security="none", username=None, secret=None
    )
    return SmtpSettings(**{**fields, **over})


def send(
    settings: SmtpSettings,
    server: UpstreamSmtp | None = None,
    *,
    recipients: Sequence[str] = ("bob@rcpt.test",),
    data: bytes = MESSAGE,
    **kwargs: Any,
) -> Accepted:
    kwargs.setdefault("allowed", LOOPBACK)
    kwargs.setdefault("timeout", 10.0)
    if server is not None and server.ca_file:
        kwargs.setdefault("ca_file", server.ca_file)
    return send_message(settings, mail_from=SENDER, recipients=recipients, data=data, **kwargs)


def failure(
    settings: SmtpSettings, server: UpstreamSmtp | None = None, **kwargs: Any
) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        send(settings, server, **kwargs)
    return info.value


def verbs(server: UpstreamSmtp) -> list[str]:
    return [c.verb for c in server.commands]


# --- sessions that deliver -----------------------------------------------------------------


def test_plaintext_session_delivers_the_bytes_and_envelope(upstream: UpstreamSmtp) -> None:
    lf_message = MESSAGE.replace(b"\r\n", b"\n")  # bare LF goes out as CRLF
    result = send(
        plain(upstream),
        recipients=["bob@rcpt.test", "carol@rcpt.test"],
        data=lf_message,
        local_hostname="mta.sender.test",
    )
    assert result.recipients == ("bob@rcpt.test", "carol@rcpt.test")
    assert result.refused == {} and result.deferred == {}
    assert result.reply == Reply(250, "2.0.0", "Ok: queued as 1")
    (got,) = upstream.deliveries
    assert got.mail_from == SENDER
    assert got.rcpt_tos == ("bob@rcpt.test", "carol@rcpt.test")
    assert got.data == MESSAGE  # CRLF, and the leading dot survived dot-stuffing
    assert f"SIZE={len(MESSAGE)}" in got.mail_options
    assert got.auth is None and got.tls is False and got.helo == "mta.sender.test"
    assert "AUTH" not in verbs(upstream) and verbs(upstream)[-1] == "QUIT"


@pytest.mark.parametrize(
    "upstream", [{"tls": "starttls", "passwords": {"alice": "s3cret"}}], indirect=True
)
def test_starttls_with_password_signs_in_inside_tls_only(upstream: UpstreamSmtp) -> None:
    settings = plain(
        upstream, host="localhost", security="starttls", username="alice", secret="s3cret"
    )
    send(settings, upstream)
    (got,) = upstream.deliveries
    assert got.tls is True and got.auth is not None
    assert (got.auth.mechanism, got.auth.user) == ("PLAIN", "alice")
    cleartext = [c.verb for c in upstream.commands if not c.tls]
    assert cleartext == ["EHLO", "STARTTLS"]  # nothing else before TLS, AUTH least of all


@pytest.mark.parametrize(
    "upstream", [{"tls": "ssl", "passwords": {"alice": "s3cret"}}], indirect=True
)
def test_implicit_tls_delivers(upstream: UpstreamSmtp) -> None:
    settings = plain(upstream, host="localhost", security="ssl", username="alice", secret="s3cret")
    send(settings, upstream)
    (got,) = upstream.deliveries
    assert got.tls is True and got.auth is not None and got.auth.user == "alice"
    assert all(c.tls for c in upstream.commands)


@pytest.mark.parametrize("upstream", [{"passwords": {"alice": "s3cret"}}], indirect=True)
def test_password_in_clear_only_when_security_is_none(upstream: UpstreamSmtp) -> None:
    send(plain(upstream, username="alice", secret="s3cret"))
    (got,) = upstream.deliveries
    assert got.auth is not None and got.auth.mechanism == "PLAIN" and got.tls is False


@pytest.mark.parametrize("sasl", ["xoauth2", "oauthbearer"])
def test_oauth_token_signs_in(sasl: str) -> None:
    with UpstreamSmtp(tls="starttls", tokens={"alice@sender.test": "ya29.token"}) as server:
        settings = plain(
            server,
            host="localhost",
            security="starttls",
            username="alice@sender.test",
            secret="ya29.token",
            auth="oauth",
            sasl=sasl,
        )
        send(settings, server)
        (got,) = server.deliveries
        assert got.auth is not None
        assert (got.auth.mechanism, got.auth.user) == (sasl.upper(), "alice@sender.test")
        assert server.errors == []


@pytest.mark.parametrize("sasl", ["xoauth2", "oauthbearer"])
def test_a_refused_token_is_a_permanent_auth_failure_with_the_servers_words(sasl: str) -> None:
    # The server answers a bad token with a 334 error challenge; the client must answer it
    # (XOAUTH2: empty, OAUTHBEARER: \x01) to get the final 535 — a wrong answer gives a 501.
    with UpstreamSmtp(tls="starttls", tokens={"alice@sender.test": "ya29.token"}) as server:
        settings = plain(
            server,
            host="localhost",
            security="starttls",
            username="alice@sender.test",
            secret="expired",
            auth="oauth",
            sasl=sasl,
        )
        err = failure(settings, server)
        assert err.last_error == BAD_TOKEN
        assert (err.temporary, err.category, err.stage) == (False, "auth_failed", "auth")
        assert server.deliveries == [] and "MAIL" not in verbs(server)


# --- TLS that must not fall back -------------------------------------------------------------


@pytest.mark.parametrize(
    "upstream", [{"tls": "starttls", "passwords": {"alice": "s3cret"}}], indirect=True
)
@pytest.mark.parametrize(
    "case",
    ["name_not_on_certificate", "untrusted_ca"],
)
def test_a_certificate_that_does_not_verify_stops_the_session(
    upstream: UpstreamSmtp, case: str
) -> None:
    if case == "name_not_on_certificate":
        # The name resolves to 127.0.0.1, which the certificate does carry: only checking the
        # name (never the IP) refuses it.
        settings = plain(
            upstream,
            host="mail.sender.test",
            security="starttls",
            username="alice",
            secret="s3cret",
        )
        err = failure(settings, upstream, resolver=only_loopback)
    else:
        settings = plain(
            upstream, host="localhost", security="starttls", username="alice", secret="s3cret"
        )
        err = failure(settings, None)  # no ca_file: the test CA is not trusted
    assert (
        err.last_error
        == "tls_failed: the server's certificate could not be verified for its host name"
    )
    assert (err.temporary, err.stage) == (False, "starttls")
    assert verbs(upstream) == ["EHLO", "STARTTLS"]  # no AUTH, no MAIL, in clear or otherwise
    assert upstream.deliveries == []


@pytest.mark.parametrize("upstream", [{"tls": "ssl"}], indirect=True)
def test_implicit_tls_checks_the_name_too(upstream: UpstreamSmtp) -> None:
    err = failure(
        plain(upstream, host="mail.sender.test", security="ssl"), upstream, resolver=only_loopback
    )
    assert err.category == "tls_failed" and err.temporary is False
    assert upstream.commands == []


@pytest.mark.parametrize("upstream", [{"passwords": {"alice": "s3cret"}}], indirect=True)
def test_starttls_not_offered_is_an_error_never_plaintext(upstream: UpstreamSmtp) -> None:
    settings = plain(upstream, security="starttls", username="alice", secret="s3cret")
    err = failure(settings, upstream)
    assert err.last_error == "tls_failed: the server does not offer STARTTLS"
    assert err.temporary is False
    assert verbs(upstream) == ["EHLO", "QUIT"]
    assert upstream.deliveries == []


@pytest.mark.parametrize("upstream", [{"tls": "starttls"}], indirect=True)
def test_starttls_refused_is_the_servers_refusal_never_plaintext(upstream: UpstreamSmtp) -> None:
    upstream.script(starttls=["454 4.7.0 TLS not available due to temporary reason"])
    err = failure(plain(upstream, host="localhost", security="starttls"), upstream)
    assert err.last_error == "454 4.7.0 TLS not available due to temporary reason"
    assert (err.temporary, err.stage) == (True, "starttls")
    assert "MAIL" not in verbs(upstream)


# --- AUTH ------------------------------------------------------------------------------------


@pytest.mark.parametrize("upstream", [{"passwords": {"alice": "s3cret"}}], indirect=True)
def test_wrong_password_is_permanent_and_tried_once(upstream: UpstreamSmtp) -> None:
    err = failure(plain(upstream, username="alice", secret="wrong"))
    assert err.last_error == "535 5.7.8 Authentication credentials invalid"
    assert (err.temporary, err.category) == (False, "auth_failed")
    assert verbs(upstream).count("AUTH") == 1  # not once per mechanism: lockouts come fast


@pytest.mark.parametrize("upstream", [{"passwords": {"alice": "s3cret"}}], indirect=True)
def test_auth_454_is_temporary(upstream: UpstreamSmtp) -> None:
    upstream.script(auth=["454 4.7.0 Temporary authentication failure"])
    err = failure(plain(upstream, username="alice", secret="s3cret"))
    assert err.last_error == "454 4.7.0 Temporary authentication failure"
    assert (err.temporary, err.category) == (True, "deferred")


def test_a_username_for_a_server_without_auth_is_refused_before_any_mail(
    upstream: UpstreamSmtp,
) -> None:
    err = failure(plain(upstream, username="alice", secret="s3cret"))
    assert err.last_error == "auth_unavailable: the server does not offer authentication (AUTH)"
    assert err.temporary is False and "MAIL" not in verbs(upstream)


# --- the server's verdicts -------------------------------------------------------------------


def test_451_to_every_rcpt_is_temporary_with_the_servers_words(upstream: UpstreamSmtp) -> None:
    upstream.script(rcpt=[TEMP_451, TEMP_451])
    err = failure(plain(upstream), recipients=["bob@rcpt.test", "carol@rcpt.test"])
    assert err.last_error == TEMP_451
    assert (err.temporary, err.category, err.stage) == (True, "deferred", "rcpt")
    assert err.reply == Reply(451, "4.3.0", "Temporary local problem - please try later")
    assert upstream.deliveries == [] and "DATA" not in verbs(upstream)


def test_451_to_data_is_temporary_and_the_script_runs_out(upstream: UpstreamSmtp) -> None:
    upstream.script(data=[TEMP_451, TEMP_451])  # the next two DATA, then 250
    for _ in range(2):
        err = failure(plain(upstream))
        assert err.last_error == TEMP_451 and err.temporary and err.stage == "data"
    send(plain(upstream))
    assert len(upstream.deliveries) == 1 and upstream.connections == 3


@pytest.mark.parametrize(
    ("stage", "reply", "last_error"),
    [
        ("mail", "550 5.7.1 Sender address rejected", "550 5.7.1 Sender address rejected"),
        (
            "rcpt",
            "550 5.1.1 <bob@rcpt.test>: user unknown",
            "550 5.1.1 <bob@rcpt.test>: user unknown",
        ),
        ("data", "554 5.7.1 Message rejected as spam", "554 5.7.1 Message rejected as spam"),
        (
            "mail",
            "552 Message size exceeds limit",
            "552 Message size exceeds limit",
        ),  # no enhanced code
    ],
)
def test_5xx_is_permanent_with_the_reply(
    upstream: UpstreamSmtp, stage: str, reply: str, last_error: str
) -> None:
    upstream.script(**{stage: [reply]})
    err = failure(plain(upstream))
    assert err.last_error == last_error
    assert (err.temporary, err.category, err.stage) == (False, "rejected", stage)
    assert upstream.deliveries == []


def test_421_while_sending_is_temporary_and_needs_no_quit(upstream: UpstreamSmtp) -> None:
    upstream.script(mail=["421 4.7.0 Too many connections, closing"])
    err = failure(plain(upstream))
    assert err.last_error == "421 4.7.0 Too many connections, closing" and err.temporary
    assert "QUIT" not in verbs(upstream)


def test_partial_refusal_reports_refused_and_deferred_recipients(upstream: UpstreamSmtp) -> None:
    upstream.script_recipient("gone@rcpt.test", ["550 5.1.1 No such user"])
    upstream.script_recipient("full@rcpt.test", ["452 4.2.2 Mailbox full"])
    result = send(plain(upstream), recipients=["bob@rcpt.test", "gone@rcpt.test", "full@rcpt.test"])
    assert result.recipients == ("bob@rcpt.test",)
    assert result.refused == {"gone@rcpt.test": Reply(550, "5.1.1", "No such user")}
    assert result.deferred == {"full@rcpt.test": Reply(452, "4.2.2", "Mailbox full")}
    (got,) = upstream.deliveries
    assert got.rcpt_tos == ("bob@rcpt.test",)


def test_every_recipient_refused_for_good_is_permanent(upstream: UpstreamSmtp) -> None:
    upstream.script(rcpt=["550 5.1.1 No such user", "550 5.1.1 No such user"])
    err = failure(plain(upstream), recipients=["gone@rcpt.test", "left@rcpt.test"])
    assert err.last_error == "550 5.1.1 No such user" and err.temporary is False
    assert set(err.refused) == {"gone@rcpt.test", "left@rcpt.test"}


def test_none_accepted_but_one_deferred_retries_the_message(upstream: UpstreamSmtp) -> None:
    upstream.script(rcpt=["550 5.1.1 No such user", TEMP_451])
    err = failure(plain(upstream), recipients=["gone@rcpt.test", "later@rcpt.test"])
    assert err.temporary is True and err.last_error == TEMP_451
    assert set(err.refused) == {"gone@rcpt.test"}  # the caller may drop that one from the retry


def test_reply_text_is_cleaned_and_cut_to_200_characters(upstream: UpstreamSmtp) -> None:
    noisy = "550 5.7.1 Rejected\x1b[31m by\x07 policy\x00 " + "x" * 1000
    upstream.script(data=[noisy])
    err = failure(plain(upstream))
    assert err.reply is not None
    text = err.reply.text
    assert len(text) == 200 and text.isprintable()
    assert text.startswith("Rejected [31m by policy xxx")
    assert err.last_error == f"550 5.7.1 {text}"


def test_multiline_reply_is_one_line(upstream: UpstreamSmtp) -> None:
    lines = [
        "451-4.7.1 Greylisted, see",
        "451-4.7.1 https://postmaster.example",
        "451 4.7.1 try again",
    ]
    upstream.script(rcpt=["\r\n".join(lines)])
    err = failure(plain(upstream))
    assert err.last_error == "451 4.7.1 Greylisted, see https://postmaster.example try again"


@pytest.mark.parametrize("upstream", [{"smtputf8": False}], indirect=True)
def test_non_ascii_address_needs_smtputf8(upstream: UpstreamSmtp) -> None:
    err = failure(plain(upstream), recipients=["jörg@rcpt.test"])
    assert err.category == "smtputf8_unsupported" and err.temporary is False
    assert "MAIL" not in verbs(upstream)


def test_non_ascii_address_goes_with_smtputf8(upstream: UpstreamSmtp) -> None:
    send(plain(upstream), recipients=["jörg@rcpt.test"])
    (got,) = upstream.deliveries
    assert got.rcpt_tos == ("jörg@rcpt.test",) and "SMTPUTF8" in got.mail_options


# --- servers that never said 220: our words ---------------------------------------------------


@pytest.mark.parametrize(
    "upstream", [{"greeting": "* OK [CAPABILITY IMAP4rev1] Dovecot ready."}], indirect=True
)
def test_a_non_smtp_server_gets_our_words_not_its_own(upstream: UpstreamSmtp) -> None:
    err = failure(plain(upstream))
    assert err.last_error == (
        "protocol_error: the server did not answer as an SMTP server "
        "(check the host, port and security settings)"
    )
    assert err.temporary is False and err.reply is None
    assert "Dovecot" not in str(err) and "IMAP" not in str(err)


@pytest.mark.parametrize(
    ("greeting", "category", "temporary"),
    [
        ("421 4.3.2 System shutting down <script>", "server_busy", True),
        ("554 5.7.1 No SMTP service for you <script>", "connection_refused", False),
    ],
)
def test_a_refusing_greeting_gets_our_words(
    upstream: UpstreamSmtp, greeting: str, category: str, temporary: bool
) -> None:
    upstream.script(greeting=[greeting])
    err = failure(plain(upstream))
    assert err.category == category and err.temporary is temporary
    assert err.last_error.startswith(f"{category}: ") and "script" not in err.last_error


def test_connection_refused_is_connect_failed() -> None:
    with socket.socket() as holder:  # bound, never listening: connecting is refused
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        settings = SmtpSettings("127.0.0.1", port, "none", None, None)
        err = failure(settings)
    assert err.last_error == "connect_failed: could not connect to the server"
    assert (err.temporary, err.stage) == (True, "connect")


def test_a_loopback_server_is_never_dialled_unless_allowed(upstream: UpstreamSmtp) -> None:
    err = failure(plain(upstream), allowed=Networks())
    assert err.category == "host_not_allowed" and err.temporary is False
    assert err.last_error.startswith("host_not_allowed: the server's address is not public")
    assert upstream.connections == 0


def test_a_name_that_does_not_resolve_is_temporary() -> None:
    def nxdomain(host: str, port: int, *args: Any) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    err = failure(SmtpSettings("smtp.gone.test", 587, "starttls", None, None), resolver=nxdomain)
    assert err.last_error == "host_not_found: the server's name could not be resolved"
    assert err.temporary is True


def test_a_server_that_stops_answering_is_a_timeout(upstream: UpstreamSmtp) -> None:
    upstream.script(data=[HANG])
    err = failure(plain(upstream), timeout=0.5)
    assert err.last_error == "timeout: the server did not answer in time"
    assert (err.temporary, err.stage) == (True, "data")


def test_a_dropped_connection_is_temporary(upstream: UpstreamSmtp) -> None:
    upstream.script(rcpt=[DROP])
    err = failure(plain(upstream))
    assert err.last_error == "connection_lost: the connection to the server was lost"
    assert (err.temporary, err.stage) == (True, "rcpt")


# --- hygiene ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "upstream", [{"tls": "starttls", "passwords": {"alice": "pw-SECRET-1"}}], indirect=True
)
def test_no_secret_or_body_reaches_logs_or_output(
    upstream: UpstreamSmtp, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    body = b"Subject: s\r\n\r\nBODY-MARKER-77\r\n"
    settings = plain(
        upstream, host="localhost", security="starttls", username="alice", secret="pw-SECRET-1"
    )
    send(settings, upstream, data=body)
    upstream.script(data=[TEMP_451])
    failure(settings, upstream, data=body)
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]  # not aiosmtpd's
    text = "\n".join(r.getMessage() for r in ours) + "".join(capfd.readouterr())
    assert "pw-SECRET-1" not in text and "BODY-MARKER-77" not in text


def test_delivery_error_survives_pickling() -> None:
    err = DeliveryError(
        TEMP_451,
        temporary=True,
        category="deferred",
        stage="rcpt",
        reply=Reply(451, "4.3.0", "Temporary local problem - please try later"),
        refused={"gone@rcpt.test": Reply(550, "5.1.1", "No such user")},
    )
    back = pickle.loads(pickle.dumps(err))
    assert (
        back.last_error,
        back.temporary,
        back.category,
        back.stage,
        back.reply,
        dict(back.refused),
    ) == (
        err.last_error,
        err.temporary,
        err.category,
        err.stage,
        err.reply,
        dict(err.refused),
    )


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (250, b"2.0.0 Ok: queued as ABC", Reply(250, "2.0.0", "Ok: queued as ABC")),
        (550, b"5.1.1 one\n5.1.1 two", Reply(550, "5.1.1", "one two")),
        (550, b"4.1.1 class does not match", Reply(550, None, "4.1.1 class does not match")),
        (451, b"", Reply(451, None, "")),
        (554, "caf\xe9 \t tabs".encode(), Reply(554, None, "café tabs")),
        (550, b"\xff\xfe bad utf-8", Reply(550, None, "\ufffd\ufffd bad utf-8")),
    ],
)
def test_parse_reply(code: int, message: bytes, expected: Reply) -> None:
    assert parse_reply(code, message) == expected


@pytest.mark.parametrize(
    "recipients",
    [[], ["bob@rcpt.test\r\nRCPT TO:<evil@x.test>"], ["<bob@rcpt.test>"]],
)
def test_recipients_that_could_never_be_sent_are_refused_before_connecting(
    recipients: list[str],
) -> None:
    with pytest.raises(ValueError):
        send(SmtpSettings("127.0.0.1", 1, "none", None, None), recipients=recipients)
