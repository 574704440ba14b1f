"""Issue 19's benchmark figures in one run (`make bench-issue19`), about 10 minutes here:

1. `bench/flow.py` on PostgreSQL (2 workers), both channels: the closed loop's maximum and
   server+db CPU a flow, then five open-loop runs at half that maximum, each run's p99;
2. `bench/floor.py`: the stack's floor with the statement shape of `bench/floor_server.py`,
   beside roamsign in the same round;
3. `bench/scaleout.py`: one host against two (network namespaces), and the one-OTP-one-
   signature race across them.

Each script's whole output is printed as it runs and kept in `--out` (one log each, with its
markdown part to paste into bench/RESULTS.md); the summary table at the end sets the figures
beside the issue's targets. Exit status 1 when a script failed or the race found a violation.

    .venv/bin/python bench/issue19.py [--duration 10] [--out DIR] [--skip floor,scaleout]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CPU_TARGET_MS = 7.0  # server + database CPU a flow on PostgreSQL (issue 19)
P99_LIMIT_MS = 100.0
STEPS = ("flow", "floor", "scaleout")


def run(name: str, command: list[str], log: Path) -> int:
    """Run one script, its output both printed and kept in `log`."""
    print(f"\n######## {name}: {' '.join(command)}", flush=True)
    began = time.perf_counter()
    with log.open("w") as kept:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        try:
            for line in process.stdout:
                sys.stdout.write(line)
                kept.write(line)
            code = process.wait()
        except KeyboardInterrupt:
            # From a terminal the script got the same SIGINT; otherwise pass it on. Either way
            # it cleans up (servers, PostgreSQL, namespaces) and stops.
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=120)
            raise
    print(f"######## {name}: exit {code} after {time.perf_counter() - began:.0f} s", flush=True)
    return code


def load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def summary_rows(flow: Any, floor: Any, scaleout: Any) -> list[list[str]]:
    rows: list[list[str]] = []
    for entry in flow or []:
        channel = entry["channel"]
        cpu = entry["closed_cpu_ms_per_flow"]
        rows.append(
            [
                f"server+db CPU ms a flow, {channel}, closed loop (PostgreSQL, 2 workers)",
                f"≤ {CPU_TARGET_MS:.0f}" if channel == "email" else "-",
                fmt(cpu),
                verdict(cpu <= CPU_TARGET_MS if cpu is not None else None)
                if channel == "email"
                else "-",
            ]
        )
        rows.append([f"closed-loop flows/s, {channel}", "-", fmt(entry["closed_flows_s"]), "-"])
        p99s = ", ".join(fmt(p, 0) for p in entry["open_p99_ms"])
        rows.append(
            [
                f"open-loop p99 ms, {channel}, {len(entry['open_p99_ms'])} runs at "
                f"{fmt(entry['open_rate'])}/s (half the maximum)",
                f"all < {P99_LIMIT_MS:.0f}",
                p99s,
                verdict(entry["open_all_under_limit"]),
            ]
        )
    if floor:
        for figure in floor["figures"]:
            rows.append(
                [
                    f"floor round {figure['round']}, `{figure['server']}`: flows/s, CPU ms a flow",
                    "-",
                    f"{fmt(figure['flows_s'])}, {fmt(figure['cpu_ms_per_flow'])}",
                    "-",
                ]
            )
        rows.append(["floor's statement shape", "-", floor["shape"].replace("\n", "; "), "-"])
    if scaleout:
        workers = scaleout.get("workers_per_host")
        if "ratio" in scaleout:
            rows.append(
                [
                    f"flows/s, one host → two ({workers} worker(s) a host)",
                    "shown (≈1 on 2 shared cores)",
                    f"{fmt(scaleout['1_host_flows_s'])} → {fmt(scaleout['2_host_flows_s'])} "
                    f"(ratio {fmt(scaleout['ratio'], 2)})",
                    "-",
                ]
            )
            rows.append(
                [
                    "server+db CPU ms a flow, one host → two",
                    "holds",
                    f"{fmt(scaleout['1_host_cpu_ms'])} → {fmt(scaleout['2_host_cpu_ms'])} "
                    f"(ratio {fmt(scaleout['cpu_ratio'], 2)})",
                    "-",
                ]
            )
            rows.append(
                [
                    "failed flows, one host → two",
                    "0 → 0",
                    f"{scaleout['1_host_errors']} → {scaleout['2_host_errors']}",
                    verdict(scaleout["1_host_errors"] == 0 and scaleout["2_host_errors"] == 0),
                ]
            )
        if "race_otps" in scaleout:
            rows.append(
                [
                    "one OTP, one signature across two hosts",
                    "0 violations",
                    f"{scaleout['race_otps']} OTPs, {scaleout['race_violations']} violations, "
                    f"answers {scaleout['race_answers']}, won by {scaleout['race_winners']}",
                    verdict(scaleout["race_violations"] == 0 and scaleout["race_otps"] > 0),
                ]
            )
    return rows


def markdown(rows: list[list[str]]) -> str:
    lines = ["| figure | issue 19 asks | measured | met |", "|---|---|---|---|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds a measured phase")
    parser.add_argument("--open-runs", type=int, default=5)
    parser.add_argument("--scaleout-rounds", type=int, default=2)
    parser.add_argument("--scaleout-workers", type=int, default=1)
    parser.add_argument("--floor-rounds", type=int, default=1)
    parser.add_argument("--skip", default="", help=f"comma-separated, of {', '.join(STEPS)}")
    parser.add_argument("--out", type=Path, default=None, help="where the logs go")
    args = parser.parse_args(argv)
    args.skip = {step for step in args.skip.split(",") if step}
    if args.skip - set(STEPS):
        parser.error(f"--skip takes {', '.join(STEPS)}")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or PROJECT_ROOT / os.environ.get("ROAMSIGN_VAR_DIR", "var") / f"bench-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    duration = str(args.duration)
    commands = {
        "flow": [
            *(python, "bench/flow.py", "--db", "postgresql", "--workers", "2"),
            *("--channel", "both", "--duration", duration, "--open-runs", str(args.open_runs)),
            *("--p99-limit-ms", str(P99_LIMIT_MS), "--summary-json", str(out / "flow.json")),
        ],
        "floor": [
            *(python, "bench/floor.py", "--rounds", str(args.floor_rounds)),
            *("--summary-json", str(out / "floor.json")),
        ],
        "scaleout": [
            *(python, "bench/scaleout.py", "--mode", "all", "--duration", duration),
            *("--rounds", str(args.scaleout_rounds), "--workers", str(args.scaleout_workers)),
            *("--summary-json", str(out / "scaleout.json")),
        ],
    }
    began = time.perf_counter()
    load_before = os.getloadavg()
    codes: dict[str, int] = {}
    try:
        for step in STEPS:
            if step not in args.skip:
                codes[step] = run(step, commands[step], out / f"{step}.log")
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        return 130
    rows = summary_rows(
        load(out / "flow.json") if "flow" in codes else None,
        load(out / "floor.json") if "floor" in codes else None,
        load(out / "scaleout.json") if "scaleout" in codes else None,
    )
    minutes = (time.perf_counter() - began) / 60
    print(f"\n######## issue 19, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {minutes:.1f} min")
    print(
        f"(1-minute load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"logs and JSON in {out})\n"
    )
    print(markdown(rows))
    failed = {step: code for step, code in codes.items() if code != 0}
    if failed:
        print(f"\nfailed: {failed} (see the logs)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
