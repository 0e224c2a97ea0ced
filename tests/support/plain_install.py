"""A plain user install of inboxlog: a new virtual environment with `pip install <source tree>` —
no lock, no test extras, no repository on the path — and an empty PostgreSQL database for it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.support.databases import PG_ADMIN_DSN, pg_url

REPO = Path(__file__).resolve().parents[2]

# What a source distribution of inboxlog holds (the same list the Dockerfile copies).
SOURCES = ("pyproject.toml", "README.md", "shared", "gateway", "worker", "inboxlog")

# pip settings a user's own pip may have too (how to reach the index, certificates, the cache).
# Every other PIP_* variable, and this machine's pip configuration files (extra local indexes,
# find-links, constraints), is left out: the install must resolve like a user's, from the index.
_PIP_KEEP = {
    "PIP_CERT",
    "PIP_CLIENT_CERT",
    "PIP_INDEX_URL",
    "PIP_TRUSTED_HOST",
    "PIP_PROXY",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_RETRIES",
    "PIP_CACHE_DIR",
}
# The interpreter must import inboxlog from the environment, never from a checkout.
_PYTHON_DROP = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV"}


@dataclass(frozen=True)
class PlainVenv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def inboxlog(self) -> Path:
        return self.root / "bin" / "inboxlog"

    def env(self, **values: str) -> dict[str, str]:
        """The process environment for this venv's commands: no INBOXLOG_* or PYTHON* leaking
        in from the test run, the venv's bin first on PATH, then ``values``."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("INBOXLOG_") and k not in _PYTHON_DROP
        }
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.update(values)
        return env

    def site_packages(self) -> Path:
        out = self._python_json("import sysconfig, json; print(json.dumps(sysconfig.get_paths()))")
        return Path(out["purelib"]).resolve()

    def import_all(self, *packages: str) -> tuple[dict[str, str], dict[str, str]]:
        """Import each package and every module in it with this venv's interpreter, outside the
        repository: (module -> file it came from, module -> import error)."""
        code = """
            import importlib, json, pkgutil, sys
            files, errors = {}, {}
            for top in sys.argv[1:]:
                pkg = importlib.import_module(top)
                files[top] = pkg.__file__
                for info in pkgutil.walk_packages(pkg.__path__, top + "."):
                    if info.name.endswith(".__main__"):  # runs the command when imported
                        continue
                    try:
                        files[info.name] = importlib.import_module(info.name).__file__
                    except Exception as exc:
                        errors[info.name] = f"{type(exc).__name__}: {exc}"
            print(json.dumps([files, errors]))
        """
        files, errors = self._python_json(textwrap.dedent(code), *packages)
        return files, errors

    def _python_json(self, code: str, *args: str) -> Any:
        done = subprocess.run(
            [str(self.python), "-c", code, *args],
            env=self.env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)


def pip_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith("PIP_") or k in _PIP_KEEP) and k not in _PYTHON_DROP
    }
    env["PIP_CONFIG_FILE"] = os.devnull  # pip reads no configuration file at all
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def copy_sources(dest: Path) -> Path:
    """The files a user would build from, without build/, *.egg-info or caches of the checkout
    (a stale build/lib would put removed modules into the wheel)."""
    dest.mkdir(parents=True)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=junk)
        else:
            shutil.copy2(src, dest / name)
    return dest


def build_plain_venv(workdir: Path, timeout: float = 900) -> PlainVenv:
    """``python -m venv`` with the interpreter running the tests, then ``pip install <sources>``.

    pip uses its default cache (~/.cache/pip), so only the first run downloads the wheels."""
    src = copy_sources(workdir / "src")
    venv = PlainVenv(workdir / "venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv.root)], check=True, timeout=120)
    log = workdir / "pip-install.log"
    with log.open("wb") as out:
        done = subprocess.run(
            [str(venv.python), "-m", "pip", "install", "--progress-bar", "off", str(src)],
            env=pip_env(),
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
        )
    assert done.returncode == 0, f"pip install failed:\n{log.read_text(errors='replace')[-4000:]}"
    return venv


@contextmanager
def empty_postgres() -> Iterator[str]:
    """A new, empty PostgreSQL database (no schema: the command under test migrates it)."""
    name = f"inboxlog_plain_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
