"""`make bench` (`python -m bench`): every path of issue 16's table beside its ceiling and the
`eventsourcing` peer, in one run against one Kafka and one Postgres of its own (started fresh
under $TKM_INFRA_DIR/bench, default .infra/bench, and stopped at the end). Each figure is
measured `--repeats` times (median and spread). Writes bench/results/<UTC date>.json and .md
and prints the table. bench/README.md says what each path measures."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import audit_path, command_path, http_statements, messaging, rebuild_path, services_path
from bench.common import BenchEnv, summary
from bench.report import markdown, ratios
from scripts import infra

ROOT = Path(__file__).resolve().parent.parent


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The run's options as the results record them: a path relative to the repository (the
    results are committed, and must not name a directory of the machine that ran them), or
    only its last part when it lies outside."""

    def shown(value: Any) -> Any:
        if isinstance(value, tuple):
            return list(value)
        if isinstance(value, Path):
            try:
                return str(value.resolve().relative_to(ROOT))
            except ValueError:
                return value.name
        return value

    return {k: shown(v) for k, v in vars(args).items()}


PATHS = ("command", "http", "e2e", "relay", "consumer", "rebuild", "audit")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one run each (the test)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each figure (default 3)")
    p.add_argument("--only", default=",".join(PATHS), help=f"paths to run: {','.join(PATHS)} (none: the year alone)")
    p.add_argument("--concurrency", type=_ints, default=(1, 8, 32),
                   help="command path writers (default 1,8,32)")
    p.add_argument("--commands", type=int, default=1000,
                   help="commands per in-process run (twice that at c>1; default 1000)")
    p.add_argument("--http-concurrency", type=_ints, default=(8, 32),
                   help="wrk connections (default 8,32)")
    p.add_argument("--http-seconds", type=float, default=5, help="per wrk run (default 5)")
    p.add_argument("--http-groups", type=int, default=8000,
                   help="groups the HTTP runs may register, approve and fund (3 tranches each, "
                        "each asked and granted), "
                        "as each run needs them (default at most 8000)")
    p.add_argument("--e2e-rate", type=float, default=200,
                   help="commands/s offered: a funding is two, its ask and its grant (default 200)")
    p.add_argument("--e2e-seconds", type=float, default=5, help="per run (default 5)")
    p.add_argument("--relay-rows", type=int, default=20_000, help="outbox rows (default 20000)")
    p.add_argument("--consumer-events", type=int, default=40_000,
                   help="events consumed per run (default 40000: at 10000 a run lasted under a "
                        "second and its ceiling swung from 12k to 21k events/s between runs)")
    p.add_argument("--size", type=_ints, default=(20_000, 100_000),
                   help="rebuild sizes in events, comma-separated (default 20000,100000; the "
                        "issue's memory check: 100000,1000000)")
    p.add_argument("--audit-groups", type=int, default=25_000,
                   help="groups of four events each for the audit questions (default 25000)")
    p.add_argument("--year", action="store_true",
                   help="also the programme year by phase (`tkm simulate`: minutes)")
    p.add_argument("--year-groups", type=int, default=None,
                   help="scale the year to N groups (default: the 2023 intake)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results",
                   help="where the results go (default bench/results)")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats = 1
        args.concurrency, args.commands = (1, 8), 40
        args.http_concurrency, args.http_seconds, args.http_groups = (8,), 2, 600
        args.e2e_rate, args.e2e_seconds = 20, 2
        args.relay_rows, args.consumer_events = 500, 1000
        args.size = (500, 1000)
        args.audit_groups = 500
        args.year_groups = args.year_groups or 40
    args.paths = [x.strip() for x in args.only.split(",") if x.strip() not in ("", "none")]
    unknown = set(args.paths) - set(PATHS)
    if unknown:
        p.error(f"unknown paths {sorted(unknown)}: use {','.join(PATHS)}")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


async def measure(env: BenchEnv, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "command" in args.paths:
        rows += await command_path.run(env, concurrencies=args.concurrency,
                                       commands=args.commands, repeats=args.repeats)
    if "http" in args.paths:
        counted = await http_statements.measure(env, messaging.security(env),
                                                commands=5 if args.smoke else 20)
        env.log(f"statements per keyed HTTP fund-group: {counted['statements']:.1f}")
        raw = next((r["ceiling"] for r in rows if r["path"] == "statements per command"), None)
        rows.append({"path": "statements per HTTP fund-group (Idempotency-Key)",
                     "unit": "statements", "value": summary([counted["statements"]]),
                     "lower_is_better": True, "statements": {"HTTP fund-group": counted["one"]},
                     **({"ceiling_name": "raw BEGIN/INSERT/COMMIT", "ceiling": raw} if raw
                        else {})})
    if "http" in args.paths or "e2e" in args.paths:
        async with services_path.Services(env) as services:
            need_e2e = services_path.e2e_fundings(args.e2e_rate, args.e2e_seconds) \
                * args.repeats if "e2e" in args.paths else 0
            need_http = args.http_groups if "http" in args.paths else 0
            await asyncio.to_thread(services.plan, need_http + need_e2e)
            services.reserve(need_e2e)
            if "http" in args.paths:
                rows += await services_path.http(
                    env, services, concurrencies=args.http_concurrency,
                    seconds=args.http_seconds, repeats=args.repeats)
            if "e2e" in args.paths:
                rows += await services_path.end_to_end(
                    env, services, rate=args.e2e_rate, seconds=args.e2e_seconds,
                    repeats=args.repeats)
    if "relay" in args.paths or "consumer" in args.paths:
        rows += await messaging.run(env, relay_rows=args.relay_rows,
                                    consumer_events=args.consumer_events, repeats=args.repeats,
                                    paths=args.paths)
    if "rebuild" in args.paths:
        built = await rebuild_path.run(env, sizes=args.size, repeats=args.repeats)
        rows += built
        peaks = [r for r in built if r["path"].startswith("rebuild peak memory")]
        if len(peaks) >= 2:
            rows.append({"path": "rebuild peak memory, largest vs smallest size",
                         "unit": "MB", "value": peaks[-1]["value"],
                         "ceiling_name": "peak at the smallest size (flat: 1.0)",
                         "ceiling": peaks[0]["value"], "lower_is_better": True})
    if "audit" in args.paths:
        rows += await audit_path.run(env, groups=args.audit_groups, repeats=args.repeats)
    return rows


def run_year(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    """`tkm simulate` (its own Kafka and Postgres, under `state`/demo): the phase timings."""
    out = state / "year.json"
    cmd = [sys.executable, "-m", "scripts.cli", "simulate", "--json", str(out)]
    if args.year_groups:
        cmd += ["--groups", str(args.year_groups)]
    env = {**os.environ, "TKM_INFRA_DIR": str(state)}
    for name in ("TKM_KAFKA_PORT", "TKM_POSTGRES_PORT"):
        env.pop(name, None)
    began = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"tkm simulate exited {done.returncode}: {done.stdout[-1500:]}"
                           f"{done.stderr[-1500:]}")
    data = json.loads(out.read_text())
    return {"groups": args.year_groups, "timings": data["timings"],
            "wall_s": round(time.perf_counter() - began, 1)}


def _state() -> Path:
    base = os.environ.get("TKM_INFRA_DIR")
    return (Path(base) if base else ROOT / ".infra") / "bench"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("aiokafka", "faststream", "tkm"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    state = _state()
    infra.down(state)
    shutil.rmtree(state, ignore_errors=True)
    rows = _measure_paths(args, state) if args.paths else []
    year = None
    if args.year:
        print("the programme year (tkm simulate) ...", flush=True)
        year = run_year(args, state)
    now = datetime.now(UTC)
    results = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python "
                   f"{platform.python_version()}, load average {load_before:.1f} at the "
                   f"start, {os.getloadavg()[0]:.1f} at the end",
        "options": options(args),
        "rows": [ratios(r) for r in rows],
        "year": year,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = now.strftime("%Y-%m-%d") + ("-smoke" if args.smoke else "")
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out / f"{stem}.md").write_text(table)
    print(table)
    print(f"written: {args.out / stem}.json and .md ({results['seconds']:.0f}s)")
    return 0


def _measure_paths(args: argparse.Namespace, state: Path) -> list[dict[str, Any]]:
    print(f"starting Kafka and PostgreSQL under {state} ...", flush=True)
    endpoints, _ = infra.up(state, _port("TKM_KAFKA_PORT"), _port("TKM_POSTGRES_PORT"))
    env = BenchEnv(endpoints, state, infra.kafka_client_env(state), smoke=args.smoke,
                   log=lambda line: print(line, flush=True))
    # every client of this process (consumer, relay, topics) runs as the bench's admin
    saved = dict(os.environ)
    os.environ.update(env.kafka_env)
    # services and in-process apps on loopback with the repository's dev signing key
    os.environ.setdefault("TKM_ENV", "dev")
    try:
        return asyncio.run(_measure_all(env, args))
    finally:
        os.environ.clear()
        os.environ.update(saved)
        infra.down(state)


async def _measure_all(env: BenchEnv, args: argparse.Namespace) -> list[dict[str, Any]]:
    try:
        return await measure(env, args)
    finally:
        await env.drop_databases()


def _port(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


__all__ = ["main", "parse", "summary"]
