"""What every benchmark prints: measurements, targets with PASS/FAIL, notes — one layout."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field


@dataclass
class Figures:
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # measurement, value, note
    targets: list[tuple[str, str, str, bool | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fmt_rate(r: float | None) -> str:
    return "n/a" if r is None else f"{r:,.0f} msg/s"


def machine() -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cores} cores ({usable} usable), Python {sys.version.split()[0]}, "
        f"load average {load} (1/5/15 min) as this was printed"
    )


def print_figures(fig: Figures, wall: float) -> None:
    w = max(len(r[0]) for r in fig.rows)
    v = max(len(r[1]) for r in fig.rows)
    print(f"  {'measurement':<{w}}  {'value':>{v}}  detail")
    print(f"  {'-' * w}  {'-' * v}  {'-' * 40}")
    for name, value, note in fig.rows:
        print(f"  {name:<{w}}  {value:>{v}}  {note}")
    print()
    w = max(len(t[0]) for t in fig.targets)
    v = max(len(t[1]) for t in fig.targets)
    print(f"  {'target':<{w}}  {'measured':>{v}}  result  detail")
    print(f"  {'-' * w}  {'-' * v}  ------  {'-' * 20}")
    for name, value, note, ok in fig.targets:
        print(f"  {name:<{w}}  {value:>{v}}  {'PASS' if ok else 'FAIL':<6}  {note}")
    print()
    for note in fig.notes:
        print(f"  note: {note}")
    print(f"  wall time {wall:.0f} s")
