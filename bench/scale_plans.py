"""The query plans of the statements a flow runs, as bench/scale.py records them: PostgreSQL's
auto_explain log, or SQLite's statements replayed under EXPLAIN QUERY PLAN; full scans of the
tables that grow."""

from __future__ import annotations

import json
import pickle
import re
import sqlite3
from pathlib import Path
from typing import Any

ROWS_READ = 1000  # a hot-path statement reading more rows than this in one execution is flagged
BIG_TABLES = {
    "users",
    "credentials",
    "signing_requests",
    "signatures",
    "outbox_messages",
    "audit_events",
}
TRACE_HOOK = '''\
"""Loaded by bench/scale.py into the server processes: records each distinct SQL statement."""
import os, pickle
from sqlalchemy import event
from sqlalchemy.engine import Engine

_seen = set()
_path = os.path.join(os.environ["ROAMSIGN_BENCH_TRACE_DIR"], f"{os.getpid()}.pickle")


def _plain(value):
    return bytes(value) if isinstance(value, memoryview) else value


@event.listens_for(Engine, "before_cursor_execute")
def _record(conn, cursor, statement, parameters, context, executemany):
    if statement in _seen:
        return
    _seen.add(statement)
    try:  # never in the way of the statement itself
        params = parameters[0] if executemany and parameters else parameters
        if isinstance(params, dict):
            params = {key: _plain(value) for key, value in params.items()}
        elif isinstance(params, (list, tuple)):
            params = tuple(_plain(value) for value in params)
        with open(_path, "ab") as out:
            pickle.dump((conn.dialect.name, statement, params), out)
    except Exception as exc:  # noqa: BLE001
        with open(_path + ".errors", "a") as out:
            out.write(f"{type(exc).__name__}: {exc}: {statement[:200]}\\n")
'''


def postgres_plans(log_text: str) -> dict[str, dict[str, Any]]:
    """Distinct statements in an auto_explain (JSON) log: their plans' scans and timings."""
    found: dict[str, dict[str, Any]] = {}
    entries = re.split(r"\n(?=\d{4}-\d\d-\d\d )", log_text)
    for entry in entries:
        marker = entry.find("plan:")
        if "duration:" not in entry or marker < 0:
            continue
        body = "\n".join(line.removeprefix("\t") for line in entry[marker + 5 :].splitlines())
        try:
            plan = json.loads(body)
        except ValueError:
            continue
        text = " ".join(str(plan.get("Query Text", "")).split())
        duration = float(re.search(r"duration: ([0-9.]+) ms", entry).group(1))  # type: ignore[union-attr]
        scans: set[str] = set()
        generic = False
        rows_read = 0
        stack = [plan.get("Plan", {})]
        while stack:
            node = stack.pop()
            stack.extend(node.get("Plans", []))
            kind, relation = node.get("Node Type", ""), node.get("Relation Name")
            if relation:
                index = node.get("Index Name")
                scans.add(f"{kind} on {relation}" + (f" using {index}" if index else ""))
                if relation in BIG_TABLES and "Scan" in kind:
                    loops = int(node.get("Actual Loops", 1) or 1)
                    read = sum(
                        int(node.get(key, 0) or 0)
                        for key in (
                            "Actual Rows",
                            "Rows Removed by Filter",
                            "Rows Removed by Index Recheck",
                        )
                    )
                    rows_read = max(rows_read, read * loops)
            for key in ("Index Cond", "Filter", "Recheck Cond"):
                if "$" in str(node.get(key, "")):
                    generic = True
        seen = found.setdefault(
            text, {"count": 0, "max_ms": 0.0, "scans": set(), "generic": False, "rows_read": 0}
        )
        seen["rows_read"] = max(seen["rows_read"], rows_read)
        seen["count"] += 1
        seen["max_ms"] = max(seen["max_ms"], duration)
        seen["scans"] |= scans
        seen["generic"] |= generic
    return found


def sqlite_plans(trace_dir: Path, database: Path) -> dict[str, dict[str, Any]]:
    """`EXPLAIN QUERY PLAN` of every distinct statement the server processes sent."""
    statements: dict[str, Any] = {}
    for path in sorted(trace_dir.glob("*.pickle")):
        with path.open("rb") as source:
            while True:
                try:
                    dialect, statement, params = pickle.load(source)
                except EOFError:
                    break
                if dialect == "sqlite":
                    statements.setdefault(statement, params)
    found: dict[str, dict[str, Any]] = {}
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        for statement, params in statements.items():
            if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE")):
                continue
            try:
                rows = connection.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
            except sqlite3.Error as exc:
                rows = [(0, 0, 0, f"(not explained: {exc})")]
            found[" ".join(statement.split())] = {
                "count": 1,
                "max_ms": 0.0,
                "scans": {str(row[3]) for row in rows},
                "generic": False,
                "rows_read": 0,
            }
    finally:
        connection.close()
    return found


def full_scans(plans: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(statement, scan) for every full scan of a table that grows with people or history."""
    flagged = []
    for text, plan in plans.items():
        for scan in sorted(plan["scans"]):
            table = None
            if scan.startswith("Seq Scan on "):
                table = scan.split()[3]
            elif scan.startswith("SCAN ") and "USING" not in scan:
                table = scan.split()[1]
            if table in BIG_TABLES:
                flagged.append((text, scan))
    return flagged
