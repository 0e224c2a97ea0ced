"""The realistic mailbox the benchmarks share, and the worker's own account of where its time went.

``realistic_mailbox(n, seed)`` runs the project's deterministic generator
(``../shared/tools/gen_mailbox.py``: 34 KB average, 5 % with a 100 KB-1 MB attachment, 35 %
replies in threads, 2,000 correspondents, repeated subjects, Japanese) once per (n, seed) into a
cache directory beside the system temp dir and returns the .eml paths in order; a later run
reuses the files when the generator's manifest says they are the same (n, seed).

``stage_breakdown(log_text)`` reads the worker's JSON log lines ("processed", one per message,
with ``stages_ms`` and ``stages_cpu_ms``) and returns the mean wall and CPU milliseconds per
message per stage — the pipeline's own timing, batch stages shared by their batch's messages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENERATOR = Path("tools") / "gen_mailbox.py"


def generator() -> Path:
    """``shared/tools/gen_mailbox.py`` beside the repository (or INBOXLOG_GEN_MAILBOX)."""
    env = os.environ.get("INBOXLOG_GEN_MAILBOX")
    candidates = [Path(env)] if env else []
    candidates += [p / "shared" / GENERATOR for p in (REPO.parent, REPO.parent.parent)]
    for path in candidates:
        if path.is_file():
            return path
    raise SystemExit(
        "the realistic mailbox generator was not found (looked for "
        + ", ".join(map(str, candidates))
        + "); set INBOXLOG_GEN_MAILBOX or use --mailbox synthetic"
    )


def realistic_mailbox(n: int, seed: int, say=print) -> tuple[list[Path], dict]:  # type: ignore[no-untyped-def]
    """The generated .eml files (in order) and the generator's manifest."""
    out = Path(tempfile.gettempdir()) / f"inboxlog-gen-mailbox-{n}-{seed}"
    manifest = out / "manifest.json"
    if manifest.exists():
        man = json.loads(manifest.read_text())
        files = sorted(out.glob("*.eml"))
        if man.get("n") == n and man.get("seed") == seed and len(files) == n:
            return files, man
    say(f"generating the realistic mailbox (n={n}, seed={seed}) into {out}")
    subprocess.run(
        [sys.executable, str(generator()), "--n", str(n), "--seed", str(seed), "--out", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return sorted(out.glob("*.eml")), json.loads(manifest.read_text())


def describe(man: dict) -> str:
    return (
        f"realistic mailbox (gen_mailbox.py v{man.get('generator_version')}, n={man['n']}, "
        f"seed={man['seed']}, sha256 {man['sha256'][:12]}…): {man['total_bytes'] / 1e6:.0f} MB, "
        f"mean {man['mean_bytes'] / 1000:.1f} KB, {man['with_attachment']} with an attachment, "
        f"{man['replies']} replies, {man['japanese_iso2022jp']} ISO-2022-JP, "
        f"{man['contacts']} correspondents"
    )


def stage_breakdown(log_text: str) -> tuple[int, dict[str, tuple[float, float]]]:
    """(messages, stage -> (mean wall ms, mean CPU ms) per message) from JSON log lines."""
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    n = 0
    for line in log_text.splitlines():
        if '"stages_ms"' not in line:
            continue
        try:
            rec = json.loads(line[line.index("{") :])
        except ValueError:
            continue
        n += 1
        for k, v in rec.get("stages_ms", {}).items():
            wall[k] = wall.get(k, 0.0) + v
        for k, v in rec.get("stages_cpu_ms", {}).items():
            cpu[k] = cpu.get(k, 0.0) + v
    return n, {k: (wall[k] / max(n, 1), cpu.get(k, 0.0) / max(n, 1)) for k in wall}


def breakdown_note(label: str, log_text: str) -> str:
    n, stages = stage_breakdown(log_text)
    if not n:
        return f"{label}: no per-stage timings in the worker's log"
    tw = sum(w for w, _ in stages.values())
    tc = sum(c for _, c in stages.values())
    return (
        f"{label}: worker CPU (wall) per message by stage, over {n:,} messages: "
        + ", ".join(f"{k} {c:.2f} ({w:.2f})" for k, (w, c) in stages.items())
        + f"; total {tc:.2f} ms CPU ({tw:.2f} ms wall) in the worker process — the database's "
        "own CPU is in the per-process line"
    )
