"""Measuring and reporting: interleaved rounds, medians, targets, the printed table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Target:
    """One target of the performance issue and the measured figure it is checked against."""

    label: str
    value: float
    limit: float
    op: Literal["<=", ">="]
    unit: str = "x"

    @property
    def met(self) -> bool:
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def line(self) -> str:
        verdict = "ok  " if self.met else "MISS"
        return f"  [{verdict}] {self.label}: {_fmt(self.value)}{self.unit} (target {self.op} {_fmt(self.limit)}{self.unit})"


@dataclass
class BenchResult:
    """What one benchmark hands back: a table to print, its targets, and its raw numbers."""

    name: str
    title: str
    params: dict[str, Any]
    header: Sequence[str]
    rows: list[Sequence[Any]]
    targets: list[Target]
    raw: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def met(self) -> bool:
        return all(t.met for t in self.targets)

    def render(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        lines = [f"== {self.title} ({params}; {self.seconds:.0f} s)", *table(self.header, self.rows)]
        lines += [t.line() for t in self.targets]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def interleave(variants: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[Any]]:
    """Run the variants ``rounds`` times, interleaved A B C, C B A, A B C, ... (every other round
    reversed, so that no variant always follows the same one: the one before can leave the
    allocator, the page cache or the CPU caches in its favour); return each one's results in order.
    """
    results: dict[str, list[Any]] = {name: [] for name in variants}
    names = list(variants)
    for round_number in range(rounds):
        for name in names if round_number % 2 == 0 else reversed(names):
            results[name].append(variants[name]())
    return results


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  " + "  ".join([first] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)])

    return [line(cells[0]), "  " + "-" * (sum(widths) + 2 * (len(widths) - 1)), *(line(r) for r in cells[1:])]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        if magnitude >= 0.1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def machine() -> dict[str, Any]:
    """Cores, CPU model, RAM and Python: no host names, no paths."""
    cpu = ""
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for text in Path("/proc/meminfo").read_text().splitlines():
            if text.startswith("MemTotal:"):
                ram_gib = round(int(text.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu or platform.processor() or "unknown",
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def commit() -> str | None:
    """The checked-out commit, read from ``.git`` (no git process: CI clones may lack one). In a linked
    worktree ``.git`` is a file naming the worktree's own git folder, whose ``commondir`` holds the refs."""
    git = RESULTS_DIR.parent.parent / ".git"
    try:
        if git.is_file():
            git = (git.parent / git.read_text().strip().removeprefix("gitdir:").strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        common = git / (git / "commondir").read_text().strip() if (git / "commondir").exists() else git
        loose = common / ref
        if loose.exists():
            return loose.read_text().strip() or None
        for text in (common / "packed-refs").read_text().splitlines():
            if text.endswith(" " + ref):
                return text.split(" ", 1)[0]
    except OSError:
        return None
    return None


def write_json(result: BenchResult, *, smoke: bool) -> Path:
    """``bench/results/<name>.json`` (``<name>.smoke.json`` for a smoke run): every raw number."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{result.name}{'.smoke' if smoke else ''}.json"
    document = {
        "name": result.name,
        "title": result.title,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "smoke": smoke,
        "seconds": round(result.seconds, 2),
        "params": result.params,
        "table": {"header": list(result.header), "rows": [list(r) for r in result.rows]},
        "targets": [{**asdict(t), "met": t.met} for t in result.targets],
        "notes": result.notes,
        "raw": result.raw,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path
