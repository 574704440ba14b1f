"""Figures as text: plain and markdown tables, the load columns a phase fills, the machine."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

from bench.harness.measure import ConfigResult, PhaseStats


def fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


# A phase's figures after its latencies, in this table and in bench/floor.py's (`load_cells`).
LOAD_COLUMNS = (
    "errors",
    "generator CPU %",
    "server CPU %",
    "database CPU %",
    "other CPU %",
    "server+db CPU ms/flow",
    "healthz req/s",
    "flows/s ÷ (healthz/3)",
)


def cpu_ms_per_unit(cpu: dict[str, float | None], rate: float) -> float | None:
    """Server (and database) CPU ms per flow or request: CPU % of one core x 10 / rate."""
    server = cpu.get("server")
    if server is None or not rate:
        return None
    return (server + (cpu.get("database") or 0.0)) * 10 / rate


def load_cells(phase: PhaseStats, result: ConfigResult, ms_digits: int = 0) -> list[str]:
    """The `LOAD_COLUMNS` of one phase."""
    ratio = phase.rate / (result.healthz_rps / 3) if result.healthz_rps else None
    return [
        str(phase.errors),
        fmt(phase.cpu.get("generator")),
        fmt(phase.cpu.get("server")),
        fmt(phase.cpu.get("database")),
        fmt(phase.cpu.get("other")),
        fmt(phase.cpu_ms_per_flow, ms_digits),
        fmt(result.healthz_rps),
        fmt(ratio, 3),
    ]


def plain_table(rows: list[list[str]], columns: tuple[str, ...], text_columns: int) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        cells = [
            cell.ljust(w) if i < text_columns else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def markdown_table(rows: list[list[str]], columns: tuple[str, ...], text_columns: int) -> str:
    lines = ["| " + " | ".join(columns) + " |"]
    lines.append(
        "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(columns))) + "|"
    )
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def machine() -> str:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )
