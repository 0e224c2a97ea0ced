"""Run private, throw-away Dovecot IMAP servers for tests.

One job: start a Dovecot instance that lives entirely in temporary directories (own
config, run dir, state, log, Maildir store, users, optional self-signed TLS),
listens on ephemeral loopback ports only, and offers the small set of helpers IMAP
poller tests need (users, folders, APPEND, bulk Maildir loading, flag snapshots,
UIDVALIDITY resets, stop / kill / restart).

The core class has no pytest dependency; ``dovecot_server_factory`` at the bottom is a
thin helper for building fixtures.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import imaplib
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

REPO_ROOT = Path(__file__).resolve().parents[2]
ENSURE_SCRIPT = REPO_ROOT / "scripts" / "ensure-dovecot"
HOST = "127.0.0.1"

# Dovecot 2.3 post-login capabilities minus IDLE (used when idle=False; Dovecot has no
# "remove one capability" syntax, so the whole list is spelled out).
_CAPS_WITHOUT_IDLE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE SORT SORT=DISPLAY THREAD=REFERENCES "
    "THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN "
    "NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES "
    "WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW "
    "STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE"
)

# IMAP system flag -> Maildir info letter (letters must be written in ASCII order).
_MAILDIR_FLAGS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}

_install_lock = threading.Lock()
_installed = False
_live_groups: set[int] = set()  # process groups of masters started by this process
_private_roots: set[Path] = set()  # per-instance private dirs, removed at exit


@atexit.register
def _kill_leftovers() -> None:
    """Safety net: never leave private Dovecot instances behind when Python exits."""
    for pgid in list(_live_groups):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    _live_groups.clear()
    for root in list(_private_roots):
        shutil.rmtree(root, ignore_errors=True)
    _private_roots.clear()


class DovecotError(RuntimeError):
    """Dovecot could not be installed, started or driven."""


def ensure_dovecot_installed() -> None:
    """Run scripts/ensure-dovecot once per process.

    The script installs dovecot-imapd when ``dovecot`` is missing and makes sure the
    packaged system service is not running (~0.1 s when already installed).
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        proc = subprocess.run(
            ["bash", str(ENSURE_SCRIPT)], capture_output=True, text=True, timeout=900
        )
        if proc.returncode != 0:
            raise DovecotError(
                f"{ENSURE_SCRIPT} failed (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        if shutil.which("dovecot", path=_search_path()) is None:
            raise DovecotError("dovecot binary not found after running ensure-dovecot")
        _installed = True


def dovecot_version() -> tuple[int, ...]:
    """Installed Dovecot version as a tuple of ints, e.g. (2, 3, 19, 1)."""
    out = subprocess.run(
        [_binary("dovecot"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.match(r"\s*(\d+(?:\.\d+)*)", out)
    if not match:
        raise DovecotError(f"cannot parse dovecot --version output: {out!r}")
    return tuple(int(p) for p in match.group(1).split("."))


def _search_path() -> str:
    return os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin"


def _binary(name: str) -> str:
    found = shutil.which(name, path=_search_path())
    if found is None:
        raise DovecotError(f"{name} not found on PATH; run scripts/ensure-dovecot")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    """True when nothing listens on the port (TIME_WAIT leftovers do not count: Dovecot
    binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _expand_uid_set(uid_set: str) -> list[int]:
    """ "3:5,9" -> [3, 4, 5, 9]."""
    result: list[int] = []
    for part in uid_set.split(","):
        lo, _, hi = part.partition(":")
        start, end = int(lo), int(hi or lo)
        step = 1 if end >= start else -1
        result.extend(range(start, end + step, step))
    return result


def _encode_mutf7(name: str) -> str:
    """Encode a mailbox name in IMAP modified UTF-7 (RFC 3501 5.1.3)."""
    from imapclient.imap_utf7 import encode

    return encode(name).decode("ascii")


def _write_tls_material(directory: Path) -> tuple[Path, Path, Path]:
    """Create a throw-away CA plus a server cert for localhost/127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    later = now + dt.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "inboxlog test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = directory / "ca.pem"
    cert_path = directory / "server-cert.pem"
    key_path = directory / "server-key.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    # Server chain: leaf then CA, so clients that only trust the CA can build the chain.
    cert_path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


class DovecotServer:
    """A private Dovecot instance rooted in one temporary directory.

    Create with :meth:`start`; finish with :meth:`close` (or use it as a context
    manager). ``tmp_dir`` holds the config, users file, log, state and TLS material and a
    ``mail`` symlink to the Maildir store. The store, the homes and the run directory with
    the UNIX sockets live in ``private_root`` (``/tmp/ilog-dovecot-*``, mode 0711): socket
    paths are length-limited, and the unprivileged mail/login processes must be able to
    reach them even when ``tmp_dir`` sits below a 0700 directory such as pytest's
    ``pytest-of-root``. :meth:`stop` keeps all data for :meth:`restart`.
    """

    START_TIMEOUT = 15.0

    def __init__(
        self,
        tmp_dir: Path,
        *,
        tls: bool = False,
        idle: bool = True,
        oauth_introspection_url: str | None = None,
        clients: int = 0,
    ) -> None:
        self.tmp_dir = Path(tmp_dir).resolve()
        self.tls = tls
        self.idle = idle
        self.clients = clients
        self.oauth_introspection_url = oauth_introspection_url
        self.version = dovecot_version()
        if oauth_introspection_url is not None and self.version >= (2, 4):
            raise DovecotError("the oauth2 passdb is only configured for Dovecot 2.3")
        self.port = 0
        self._tls_port: int | None = None
        self.ca_cert_path: Path | None = None
        self._cert_path: Path | None = None
        self._key_path: Path | None = None
        self._passwords: dict[str, str] = {}
        self._clients: dict[str, IMAPClient] = {}
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_dir: Path | None = None
        # Mailboxes, homes and the run dir live in a short private directory under the
        # system temp dir that the unprivileged mail/login users can traverse (tmp_dir may
        # sit below pytest's 0700 pytest-of-<user>, which pytest itself keeps resetting).
        # tmp_dir/mail is a symlink to the mail store for inspection.
        self.private_root = Path(tempfile.mkdtemp(prefix="ilog-dovecot-"))
        self.private_root.chmod(0o711)
        _private_roots.add(self.private_root)
        self._bulk_seq = 0
        self.config_path = self.tmp_dir / "dovecot.conf"
        self.log_path = self.tmp_dir / "dovecot.log"
        self.stderr_path = self.tmp_dir / "dovecot.stderr"
        self.users_path = self.tmp_dir / "users"
        self.oauth2_config_path = self.tmp_dir / "dovecot-oauth2.conf.ext"
        self.mail_root = self.private_root / "mail"
        self.home_root = self.private_root / "home"
        self.state_dir = self.tmp_dir / "state"
        self._is_root = os.geteuid() == 0
        if self._is_root:
            # Dovecot refuses mail access as root, so mailboxes belong to the system
            # "mail" account (exists on every Debian); see private_root above.
            mail_user = pwd.getpwnam("mail")
            self._mail_uid, self._mail_gid = mail_user.pw_uid, mail_user.pw_gid
            self._login_user, self._internal_user = "dovenull", "dovecot"
        else:
            self._mail_uid, self._mail_gid = os.getuid(), os.getgid()
            me = pwd.getpwuid(os.getuid()).pw_name
            self._login_user = self._internal_user = me

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(
        cls,
        tmp_dir: Path,
        *,
        tls: bool = False,
        idle: bool = True,
        oauth_introspection_url: str | None = None,
        clients: int = 0,
    ) -> DovecotServer:
        """Install Dovecot if needed, configure an instance in ``tmp_dir`` and start it.

        ``oauth_introspection_url`` (an RFC 7662 endpoint, e.g. ``LocalOAuthServer``'s
        ``introspection_url``) also enables XOAUTH2 and OAUTHBEARER logins, checked by
        Dovecot's oauth2 passdb against that endpoint at every login (Dovecot 2.3 only;
        PLAIN/LOGIN still check the users file). The token's ``email`` must be the login
        name, so OAuth users are added with their email as the name:
        ``add_user("alice@example.test", password)``. Such a server has no auth penalty
        (see ``_disable_auth_penalty``); a failed login is answered within ~0.5 s.

        ``clients``: simultaneous IMAP sessions to allow beyond Dovecot's defaults (about a
        hundred processes): benchmarks holding a thousand mailboxes open.
        """
        ensure_dovecot_installed()
        server = cls(
            tmp_dir,
            tls=tls,
            idle=idle,
            oauth_introspection_url=oauth_introspection_url,
            clients=clients,
        )
        server._prepare()
        last_error: DovecotError | None = None
        for _ in range(5):  # retry on the rare race where a chosen port got taken
            server.port = _free_port()
            server._tls_port = _free_port() if tls else None
            try:
                server._launch()
                return server
            except DovecotError as exc:
                last_error = exc
                server._terminate(signal.SIGKILL)
                if "Address already in use" not in str(exc):
                    break
        server.close()
        assert last_error is not None
        raise last_error

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the plain/STARTTLS IMAP listener."""
        return (HOST, self.port)

    @property
    def tls_port(self) -> int:
        """Port of the implicit-TLS (imaps) listener; only for ``tls=True`` servers."""
        if self._tls_port is None:
            raise DovecotError("server was started without tls=True")
        return self._tls_port

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down cleanly (SIGTERM to the master, which stops all its children)."""
        self._drop_clients()
        self._terminate(signal.SIGTERM, timeout=timeout)

    def kill(self) -> None:
        """Simulate a crash: SIGKILL the master and every process it spawned."""
        self._drop_clients(logout=False)
        self._terminate(signal.SIGKILL)

    def restart(self) -> None:
        """Stop (if running) and start again on the same ports with the same data."""
        if self.running:
            self.stop()
        else:
            self._terminate(signal.SIGKILL)
        for port in (self.port, self._tls_port):
            if port is None:
                continue
            deadline = time.monotonic() + 10
            while not _port_is_free(port):
                if time.monotonic() > deadline:
                    raise DovecotError(f"port {port} still busy after stop")
                time.sleep(0.05)
        self._launch()

    def close(self) -> None:
        """Stop and delete the private mail store (``stop`` keeps data for ``restart``)."""
        self.stop()
        shutil.rmtree(self.private_root, ignore_errors=True)
        _private_roots.discard(self.private_root)
        link = self.tmp_dir / "mail"
        if link.is_symlink():
            link.unlink()

    def __enter__(self) -> DovecotServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the Dovecot log and of the master's stderr (for error messages)."""
        chunks = []
        for path in (self.log_path, self.stderr_path):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                chunks.append(f"--- {path.name} ---\n" + "\n".join(text))
        return "\n".join(chunks) or "(no dovecot log output)"

    # ------------------------------------------------------------------ users/folders

    def add_user(self, name: str, password: str) -> None:
        """Add a login; INBOX and Sent (\\Sent special-use) exist once this returns.

        For XOAUTH2/OAUTHBEARER logins the name is the email the OAuth server vouches for.
        """
        self.add_users({name: password})

    def add_users(self, logins: dict[str, str], *, sign_in: bool = True) -> None:
        """Add several logins at once (one passwd-file re-read for all of them, instead of
        about a second each). ``sign_in=False``: return without signing in as each (and
        holding a session per user); their INBOX and Sent come with their first login."""
        for name, password in logins.items():
            if not name or any(c in name for c in ":/\n\r") or name.startswith("."):
                raise ValueError(f"unsupported user name {name!r}")
            if "\n" in password or ":" in password:
                raise ValueError("password must not contain ':' or newlines")
        with self._lock:
            self._passwords.update(logins)
            self._write_users()
        for name in logins:
            for path in (self.mail_root / name, self.home_root / name):
                path.mkdir(parents=True, exist_ok=True)
                if self._mail_uid != os.geteuid():
                    os.chown(path, self._mail_uid, self._mail_gid)
        for name in logins if self.running and sign_in else ():
            # Dovecot re-reads the passwd-file at most about once a second, so a user added
            # right after another may need a moment before the login works.
            deadline = time.monotonic() + 5
            while True:
                try:
                    with self._session(name) as client:  # first login creates INBOX and Sent
                        client.noop()
                    break
                except LoginError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    def create_folder(self, user: str, name: str) -> None:
        """Create (and subscribe) a mailbox; ``/`` is the hierarchy separator."""
        with self._session(user) as client:
            if not client.folder_exists(name):
                client.create_folder(name)
            client.subscribe_folder(name)

    def append(
        self,
        user: str,
        folder: str,
        raw: bytes,
        flags: Iterable[str] = (),
        internal_date: dt.datetime | None = None,
    ) -> int:
        """IMAP APPEND one message and return its UID."""
        with self._session(user) as client:
            resp = client.append(folder, raw, flags=tuple(flags), msg_time=internal_date)
        match = re.search(rb"APPENDUID (\d+) (\d+)", resp)
        if not match:
            raise DovecotError(f"APPEND response without APPENDUID: {resp!r}")
        return int(match.group(2))

    def append_many(
        self,
        user: str,
        folder: str,
        messages: Iterable[bytes],
        flags: Iterable[str] = (),
        internal_date: dt.datetime | None = None,
        *,
        batch_size: int = 500,
    ) -> list[int]:
        """APPEND many messages with MULTIAPPEND batches; returns their UIDs in order.

        Roughly 10,000 messages in ~1-2 s (single ``append`` calls cost ~2-5 ms each).
        """
        flag_tuple = tuple(flags)
        uids: list[int] = []
        batch: list[dict[str, object]] = []

        def flush() -> None:
            if not batch:
                return
            with self._session(user) as client:
                typ, data = client.multiappend(folder, batch)
            text = b" ".join(d for d in data if isinstance(d, bytes))
            match = re.search(rb"APPENDUID \d+ ([\d:,]+)", text)
            if typ != "OK" or not match:
                raise DovecotError(f"MULTIAPPEND failed: {typ} {data!r}")
            uids.extend(_expand_uid_set(match.group(1).decode()))
            batch.clear()

        for raw in messages:
            item: dict[str, object] = {"msg": raw, "flags": flag_tuple}
            if internal_date is not None:
                item["date"] = internal_date
            batch.append(item)
            if len(batch) >= batch_size:
                flush()
        flush()
        return uids

    def bulk_load(
        self,
        user: str,
        folder: str,
        messages: Iterable[bytes],
        *,
        flags: Iterable[str] = (),
        internal_date: dt.datetime | None = None,
    ) -> int:
        """Write messages straight into the folder's Maildir ``cur/`` (fast path).

        Dovecot assigns UIDs (in load order) the next time the folder is opened.
        ``flags`` may contain system flags only (\\Seen, \\Answered, \\Flagged, \\Deleted,
        \\Draft). ``internal_date`` (default: now) is what IMAP SINCE sees: Dovecot reads
        it from the file's mtime. Returns the number of messages written.
        """
        letters = "".join(sorted(_MAILDIR_FLAGS[f] for f in set(flags)))
        if folder.upper() != "INBOX" and self.running:
            self.create_folder(user, folder)
        mdir = self.maildir_path(user, folder)
        for sub in ("cur", "new", "tmp"):
            (mdir / sub).mkdir(parents=True, exist_ok=True)
        if folder.upper() != "INBOX":
            (mdir / "maildirfolder").touch()
        base = int(time.time())
        stamp = int(internal_date.timestamp()) if internal_date is not None else base
        tmp_dir, cur_dir = mdir / "tmp", mdir / "cur"
        count = 0
        with self._lock:
            for raw in messages:
                self._bulk_seq += 1
                data = raw.replace(b"\r\n", b"\n")  # Maildir stores LF line endings
                name = f"{base}.M{self._bulk_seq:09d}P{os.getpid()}.inboxlog,S={len(data)}"
                tmp_file = tmp_dir / name
                tmp_file.write_bytes(data)
                os.utime(tmp_file, (stamp, stamp))
                tmp_file.rename(cur_dir / f"{name}:2,{letters}")
                count += 1
        if self._mail_uid != os.geteuid():
            for path in [mdir, *mdir.rglob("*")]:
                os.chown(path, self._mail_uid, self._mail_gid)
        return count

    def maildir_path(self, user: str, folder: str) -> Path:
        """Filesystem path of a folder's Maildir (Maildir++ layout, ``.`` prefixed)."""
        if folder.upper() == "INBOX":
            return self.mail_root / user
        return self.mail_root / user / ("." + _encode_mutf7(folder).replace("/", "."))

    # ------------------------------------------------------------------ inspection

    def flags_snapshot(self, user: str, folder: str) -> dict[int, frozenset[str]]:
        """UID -> flags (as str, without the session-specific \\Recent), read via EXAMINE."""
        with self._session(user) as client:
            info = client.select_folder(folder, readonly=True)
            try:
                # imapclient 4 cannot FETCH "1:*" (it filters by int ids): list UIDs first.
                uids = client.search("ALL") if info.get(b"EXISTS") else []
                data = client.fetch(uids, ["FLAGS"]) if uids else {}
            finally:
                client.unselect_folder()
        result: dict[int, frozenset[str]] = {}
        for uid, item in data.items():
            flags = (f.decode() if isinstance(f, bytes) else str(f) for f in item[b"FLAGS"])
            result[int(uid)] = frozenset(f for f in flags if f != "\\Recent")
        return result

    def uidvalidity(self, user: str, folder: str) -> int:
        with self._session(user) as client:
            status = client.folder_status(folder, [b"UIDVALIDITY"])
        return int(status[b"UIDVALIDITY"])

    def uidnext(self, user: str, folder: str) -> int:
        """The UID the folder's next message will get."""
        with self._session(user) as client:
            status = client.folder_status(folder, [b"UIDNEXT"])
        return int(status[b"UIDNEXT"])

    def message_count(self, user: str, folder: str) -> int:
        with self._session(user) as client:
            status = client.folder_status(folder, [b"MESSAGES"])
        return int(status[b"MESSAGES"])

    def reset_uidvalidity(self, user: str, folder: str) -> int:
        """Make the folder present a new UIDVALIDITY for the same messages; returns it.

        The server is stopped, the folder's ``dovecot-uidlist`` and index files plus the
        user's mailbox-list index are deleted, and the server is started again on the same
        ports. Dovecot then rebuilds the folder from the Maildir files: same messages, UIDs
        renumbered from 1, a fresh UIDVALIDITY. Open client connections are cut.
        """
        old = self.uidvalidity(user, folder)
        count = self.message_count(user, folder)
        self.stop()
        mdir = self.maildir_path(user, folder)
        doomed = [mdir / "dovecot-uidlist", *mdir.glob("dovecot.index*")]
        doomed += (self.mail_root / user).glob("dovecot.list.index*")
        for path in doomed:
            path.unlink(missing_ok=True)
        self.restart()
        new = self.uidvalidity(user, folder)
        if new == old:
            raise DovecotError(f"UIDVALIDITY of {user}/{folder} did not change ({old})")
        if self.message_count(user, folder) != count:
            raise DovecotError(f"message count of {user}/{folder} changed during reset")
        return new

    # ------------------------------------------------------------------ internals

    def _prepare(self) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for path in (self.mail_root, self.home_root, self.state_dir):
            path.mkdir(exist_ok=True)
        if self._mail_uid != os.geteuid():
            for path in (self.mail_root, self.home_root):
                os.chown(path, self._mail_uid, self._mail_gid)
        link = self.tmp_dir / "mail"
        if link.is_symlink():
            link.unlink()  # left over from an earlier instance on the same tmp_dir
        if not link.exists():
            link.symlink_to(self.mail_root, target_is_directory=True)
        if not self.users_path.exists():
            self._write_users()
        if self.tls and self.ca_cert_path is None:
            self.ca_cert_path, self._cert_path, self._key_path = _write_tls_material(self.tmp_dir)
        if self.oauth_introspection_url is not None:
            self._write_oauth2_config(self.oauth_introspection_url)

    def _write_users(self) -> None:
        lines = [
            f"{name}:{{PLAIN}}{pw}:::{self.home_root / name}::\n"
            for name, pw in sorted(self._passwords.items())
        ]
        tmp = self.users_path.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        tmp.chmod(0o600)
        tmp.replace(self.users_path)  # atomic: Dovecot re-reads it on mtime change

    def _write_oauth2_config(self, introspection_url: str) -> None:
        """Args file of the oauth2 passdb (Dovecot 2.3 syntax, one ``key = value`` a line).

        Every login is one RFC 7662 POST ``token=...`` to ``introspection_url``; the answer
        must say ``"active": true`` and carry ``email`` equal (case-insensitively) to the
        login name. db-oauth2 keeps no token cache of its own, and the auth cache is off
        (``auth_cache_size = 0``), so a revoked or expired token fails at the next login.
        An inactive answer (``{"active": false}``) makes Dovecot answer
        ``NO [AUTHENTICATIONFAILED]``, as for a wrong password; an HTTP error status or no
        answer from the endpoint makes it ``NO [UNAVAILABLE]`` (temporary failure). Both
        are checked by tests/support/test_oauth_harness.py.
        """
        self.oauth2_config_path.write_text(
            "# Generated by tests/support/dovecot.py\n"
            f"introspection_url = {introspection_url}\n"
            "introspection_mode = post\n"
            "username_attribute = email\n"
            "active_attribute = active\n"
            "active_value = true\n"
            "timeout_msecs = 10000\n"
            "max_idle_time_msecs = 1000\n"
        )

    def _config(self) -> str:
        assert self._run_dir is not None
        caps = "" if self.idle else f"imap_capability = {_CAPS_WITHOUT_IDLE}\n"
        if self.version >= (2, 4):
            return self._config_24(caps)
        if self.tls:
            ssl_block = (
                "ssl = yes\n"
                f"ssl_cert = <{self._cert_path}\n"
                f"ssl_key = <{self._key_path}\n"
                "ssl_min_protocol = TLSv1.2\n"
            )
            imaps = (
                f"  inet_listener imaps {{\n    address = {HOST}\n"
                f"    port = {self._tls_port}\n    ssl = yes\n  }}\n"
            )
        else:
            ssl_block = "ssl = no\n"
            imaps = "  inet_listener imaps {\n    port = 0\n  }\n"
        # The auth process must read the users file inside tmp_dir, which may sit below a
        # 0700 directory (pytest's tmp_path): run it as root when we are root.
        auth_service = "service auth {\n  user = root\n}\n" if self._is_root else ""
        mechanisms, plain_only, oauth_passdb = "plain login", "", ""
        if self.oauth_introspection_url is not None:
            mechanisms += " xoauth2 oauthbearer"
            plain_only = "  mechanisms = plain login\n"
            oauth_passdb = (
                "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {self.oauth2_config_path}\n}}\n"
            )
        limits, login_limits, imap_service = "", "", ""
        if self.clients:
            n = self.clients + 100
            limits = f"default_process_limit = {n}\ndefault_client_limit = {4 * n}\n"
            # One login process serves many connections (no process per TLS session).
            login_limits = f"  service_count = 0\n  process_min_avail = 2\n  client_limit = {n}\n"
            imap_service = f"service imap {{\n  process_limit = {n}\n}}\n"
        return f"""# Generated by tests/support/dovecot.py -- private test instance (Dovecot 2.3)
base_dir = {self._run_dir}
state_dir = {self.state_dir}
instance_name = inboxlog-test-{self.port}
log_path = {self.log_path}
info_log_path = {self.log_path}
protocols = imap
listen = {HOST}
shutdown_clients = yes
default_login_user = {self._login_user}
default_internal_user = {self._internal_user}
first_valid_uid = 0
first_valid_gid = 0
mail_uid = {self._mail_uid}
mail_gid = {self._mail_gid}
mail_location = maildir:{self.mail_root}/%u
mail_fsync = never
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_cache_size = 0
auth_failure_delay = 0
login_trusted_networks =
{limits}{ssl_block}{caps}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.users_path}
{plain_only}}}
{oauth_passdb}userdb {{
  driver = passwd-file
  args = username_format=%u {self.users_path}
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
}}
{imap_service}service imap-login {{
  chroot =
{login_limits}  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
{imaps}}}
service anvil {{
  chroot =
}}
{auth_service}service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0600
  }}
}}
"""

    def _config_24(self, caps: str) -> str:
        """Best-effort Dovecot 2.4 configuration (untested: Debian 12 ships 2.3)."""
        if not self.idle:
            caps = "imap_capability {\n  IDLE = no\n}\n"
        auth_service = "service auth {\n  user = root\n}\n" if self._is_root else ""
        if self.tls:
            ssl_block = (
                "ssl = yes\n"
                f"ssl_server_cert_file = {self._cert_path}\n"
                f"ssl_server_key_file = {self._key_path}\n"
            )
            imaps = (
                f"  inet_listener imaps {{\n    listen = {HOST}\n"
                f"    port = {self._tls_port}\n    ssl = yes\n  }}\n"
            )
        else:
            ssl_block = "ssl = no\n"
            imaps = "  inet_listener imaps {\n    port = 0\n  }\n"
        return f"""# Generated by tests/support/dovecot.py -- private test instance (Dovecot 2.4)
dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
base_dir = {self._run_dir}
state_dir = {self.state_dir}
instance_name = inboxlog-test-{self.port}
log_path = {self.log_path}
info_log_path = {self.log_path}
protocols = imap
listen = {HOST}
default_login_user = {self._login_user}
default_internal_user = {self._internal_user}
first_valid_uid = 0
first_valid_gid = 0
mail_uid = {self._mail_uid}
mail_gid = {self._mail_gid}
mail_driver = maildir
mail_path = {self.mail_root}/%{{user}}
auth_allow_cleartext = yes
auth_mechanisms = plain login
{ssl_block}{caps}
passdb passwd-file {{
  passwd_file_path = {self.users_path}
}}
userdb passwd-file {{
  passwd_file_path = {self.users_path}
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    listen = {HOST}
    port = {self.port}
  }}
{imaps}}}
service anvil {{
  chroot =
}}
{auth_service}"""

    def _launch(self) -> None:
        """Write config, start the master in the foreground and wait for the greeting."""
        self._run_dir = self.private_root / "run"
        shutil.rmtree(self._run_dir, ignore_errors=True)  # stale sockets of a killed master
        self._run_dir.mkdir()
        self._run_dir.chmod(0o755)  # unprivileged login processes must reach the sockets
        self.config_path.write_text(self._config())
        stderr = self.stderr_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [_binary("dovecot"), "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,  # own process group: kill() reaches every child
            )
        finally:
            stderr.close()
        _live_groups.add(self._proc.pid)
        deadline = time.monotonic() + self.START_TIMEOUT
        if self.oauth_introspection_url is not None:
            self._disable_auth_penalty(deadline)
        ports = [self.port] + ([self._tls_port] if self._tls_port else [])
        pending = list(ports)
        while pending:
            if self._proc.poll() is not None:
                raise DovecotError(
                    f"dovecot exited with {self._proc.returncode} during start "
                    f"(config {self.config_path}):\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise DovecotError(
                    f"dovecot did not greet on {pending} within {self.START_TIMEOUT}s:\n"
                    f"{self.log_tail()}"
                )
            if self._greets(pending[0], tls=pending[0] == self._tls_port):
                pending.pop(0)
            else:
                time.sleep(0.02)

    def _disable_auth_penalty(self, deadline: float) -> None:
        """Turn off anvil's auth penalty: after a failed login, Dovecot delays every next
        login from the IP by 4 s, doubling up to 15 s, for half a minute (2.3.19 offers no
        setting; ``login_trusted_networks`` no longer exempts an IP). A test that revokes
        a token would then slow down every login after it. The auth process, started on
        the first client connection, finds no ``anvil-auth-penalty`` socket and quietly
        runs without penalties; so the socket is removed before anyone connects.
        """
        assert self._proc is not None and self._run_dir is not None
        socket_path = self._run_dir / "anvil-auth-penalty"
        while not socket_path.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                return  # the greeting loop reports the failure
            time.sleep(0.01)
        socket_path.unlink()

    def _greets(self, port: int, *, tls: bool) -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=2) as raw:
                sock: socket.socket = raw
                if tls:
                    ctx = ssl.create_default_context(cafile=str(self.ca_cert_path))
                    sock = ctx.wrap_socket(raw, server_hostname=HOST)
                data = sock.recv(4096)
                return data.startswith(b"* OK")
        except (OSError, ssl.SSLError):
            return False

    def _terminate(self, sig: signal.Signals, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    # Signal the whole group: children that see SIGTERM themselves exit
                    # at once, which spares the master its ~1 s wait-for-children loop.
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
            # Children share the master's process group; reap stragglers (only ours).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            _live_groups.discard(proc.pid)
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    @contextlib.contextmanager
    def _session(self, user: str) -> Iterator[IMAPClient]:
        """Cached, locked admin connection for ``user``; dropped after a transport error.

        The harness discards all cached connections itself on stop/kill/restart, so no
        liveness probe is needed per call.
        """
        with self._lock:
            if not self.running:
                raise DovecotError("dovecot is not running")
            client = self._clients.get(user)
            if client is None:
                if user not in self._passwords:
                    raise DovecotError(f"unknown user {user!r}; call add_user first")
                client = IMAPClient(HOST, port=self.port, ssl=False, timeout=60)
                client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                client.login(user, self._passwords[user])
                self._clients[user] = client
            try:
                yield client
            except (OSError, imaplib.IMAP4.abort):
                self._clients.pop(user, None)
                with contextlib.suppress(Exception):
                    client.shutdown()
                raise

    def _drop_clients(self, *, logout: bool = True) -> None:
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            with contextlib.suppress(Exception):
                if logout:
                    client.logout()
                else:
                    client.shutdown()


def dovecot_server_factory(
    base_dir: Path,
) -> tuple[Callable[..., DovecotServer], Callable[[], None]]:
    """Return ``(make, cleanup)`` for fixtures: ``make(tls=..., idle=...,
    oauth_introspection_url=...)`` starts servers in numbered sub-directories of
    ``base_dir``; ``cleanup()`` closes all of them."""
    servers: list[DovecotServer] = []

    def make(
        *, tls: bool = False, idle: bool = True, oauth_introspection_url: str | None = None
    ) -> DovecotServer:
        server = DovecotServer.start(
            base_dir / f"dovecot-{len(servers)}",
            tls=tls,
            idle=idle,
            oauth_introspection_url=oauth_introspection_url,
        )
        servers.append(server)
        return server

    def cleanup() -> None:
        for server in servers:
            with contextlib.suppress(Exception):
                server.close()

    return make, cleanup
