"""Project-level checks: dependency direction and the compose file's commands."""

from __future__ import annotations

import ast
import ipaddress
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


SCALED = ("api", "gateway", "worker", "poller")


def _host_port(mapping: str) -> str | None:
    """The host side of a compose port mapping ("HOST:CONTAINER" or "IP:HOST:CONTAINER")."""
    parts = str(mapping).split(":")
    return parts[-2] if len(parts) >= 2 else None


def test_compose_scales_every_kind_behind_one_entry_point() -> None:
    """What `docker compose up --scale worker=3 --scale poller=2 --scale gateway=2` needs (no
    Docker engine here: the file's structure is checked): no fixed container names, no host
    port on a scaled service, no host port published twice, start order gated on health, and
    RabbitMQ as an optional broker."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert all("container_name" not in svc for svc in services.values())
    for name in SCALED:
        svc = services[name]
        assert not svc.get("ports"), f"{name} is scaled: a host port would clash"
        assert "ipv4_address" not in str(svc.get("networks")), name
    published = [_host_port(p) for svc in services.values() for p in svc.get("ports", [])]
    assert len(published) == len(set(published)), published

    # Start order: every dependency is waited on by its health (or its completion), and every
    # service waited on for its health has a healthcheck.
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert isinstance(cond, dict), f"{name} -> {dep}: a condition, not a bare name"
            assert cond["condition"] in ("service_healthy", "service_completed_successfully")
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits on {dep}'s health"
    for name in ("api", "gateway", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )

    # The entry point: SMTP and HTTP, spread over the replicas found by DNS; only it may name
    # clients (PROXY header, X-Forwarded-For).
    lb = services["lb"]
    assert {_host_port(p) for p in lb["ports"]} == {"25", "8025"}
    haproxy = compose["configs"]["haproxy"]["content"]
    assert "gateway:2525 send-proxy-v2" in haproxy and "api:8025" in haproxy
    env = compose["x-inboxlog"]["environment"]
    lb_ip = lb["networks"]["backend"]["ipv4_address"]
    assert env["INBOXLOG_SMTP_PROXY_PROTOCOL"] == "true"
    trusted = env["INBOXLOG_SMTP_TRUSTED_PROXIES"]
    assert trusted == env["INBOXLOG_TRUSTED_PROXIES"] == f"{lb_ip}/32,127.0.0.1/32"
    # The gateway's healthcheck speaks the PROXY protocol (from loopback, trusted) and wants 220.
    check = services["gateway"]["healthcheck"]["test"]
    assert "PROXY TCP4" in check[-1] and "220" in check[-1]
    [subnet] = [c["subnet"] for c in compose["networks"]["backend"]["ipam"]["config"]]
    assert ipaddress.ip_address(lb_ip) in ipaddress.ip_network(subnet)

    # Redis by default; RabbitMQ with its profile, waited on only when it is there.
    assert env["INBOXLOG_BROKER_URL"] == "${INBOXLOG_BROKER_URL:-redis://redis:6379/0}"
    rabbit = services["rabbitmq"]
    assert rabbit["profiles"] == ["rabbitmq"] and "healthcheck" in rabbit
    for name in (*SCALED, "flower"):
        assert services[name]["depends_on"]["rabbitmq"] == {
            "condition": "service_healthy",
            "required": False,
        }
    assert services["flower"]["environment"]["CELERY_BROKER_URL"] == env["INBOXLOG_BROKER_URL"]
