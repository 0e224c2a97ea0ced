"""Project-level checks: dependency direction and the compose file's commands."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_shared_imports_neither_gateway_nor_worker() -> None:
    offenders = []
    for path in (REPO / "shared").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path}: {n}"
                for n in names
                if n.split(".")[0] in ("gateway", "worker", "inboxlog")
            ]
    assert offenders == []


def test_every_compose_service_runs_a_real_inboxlog_command() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    help_text = subprocess.run(
        [sys.executable, "-m", "inboxlog", "--help"], capture_output=True, text=True, check=True
    ).stdout
    commands = {
        line.split()[0] for line in help_text.split("Commands:")[1].splitlines() if line.strip()
    }
    ours = {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("image", "").startswith("inboxlog")
    }
    assert {"migrate", "api", "gateway", "worker", "poller"} <= set(ours)
    assert "flower" in compose["services"]
    for name, svc in ours.items():
        cmd = svc["command"]
        assert cmd[0] in commands, (name, cmd)
        res = subprocess.run(
            [sys.executable, "-m", "inboxlog", *cmd, "--help"], capture_output=True, text=True
        )
        assert res.returncode == 0, (name, res.stderr)
    for name in ("postgres", "redis"):
        assert "healthcheck" in compose["services"][name]
    env = compose["x-inboxlog"]["environment"]
    for key in ("INBOXLOG_SECRET_KEY", "INBOXLOG_ADMIN_TOKEN"):
        assert ":?" in env[key], f"{key} must be required"


def test_no_module_or_package_is_named_like_a_standard_library_one() -> None:
    """``threading.py`` beside code that imports the stdlib's ``threading`` confuses readers and
    tools; no module of ours takes a standard library name."""
    stdlib = set(sys.stdlib_module_names)
    clashes = []
    for top in ("shared", "gateway", "worker", "inboxlog"):
        for path in (REPO / top).rglob("*.py"):
            name = path.parent.name if path.name == "__init__.py" else path.stem
            if name in stdlib:
                clashes.append(str(path.relative_to(REPO)))
    assert clashes == []
