"""An agency's subscriber to the TKM programme's `tkm.groups.v1` topic: funded TKM groups and
rupiah disbursed per province, kept in a small SQLite file.

Copy this file; it needs only `aiokafka` (pip install "aiokafka>=0.12") and Python 3.10+.
It reads JSON envelopes, so it imports nothing from the programme's code.

What it shows (see docs/agencies.md):
- SASL_SSL with SCRAM-SHA-512 and the programme's CA certificate;
- a consumer group that begins with your agency's name and a dot (`bps.funding-table`): the only
  groups your credentials may use;
- reading from offset 0 (the topics keep every event for ever) on the first run;
- at-least-once delivery: each event is applied in the same SQLite transaction that records its
  `event_id`, a redelivered event is skipped, and the Kafka offset is committed only after that
  transaction;
- tolerance: other event types are ignored; a `schema_version` newer than this code knows stops
  the subscriber (upgrade it) instead of guessing or skipping.

Configuration (environment):
    KAFKA_BOOTSTRAP_SERVERS   host:port[,host:port]
    KAFKA_USERNAME            your agency's name, e.g. bps
    KAFKA_PASSWORD            or KAFKA_PASSWORD_FILE (a file holding it)
    KAFKA_CA_FILE             the CA certificate (PEM) you were given
    AGENCY_GROUP_ID           default "<username>.funding-table"
    AGENCY_DB                 default funding.sqlite3

    python subscriber.py            # follow the topic, print the table on Ctrl-C
    python subscriber.py --once     # read what is there now, print the table, exit
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

TOPIC = "tkm.groups.v1"
HANDLED = {("GroupFunded", 1)}  # (event_type, schema_version) this code understands


@dataclass
class Settings:
    bootstrap: str
    username: str
    password: str
    ca_file: str | None
    group_id: str
    db_path: str

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        password = env.get("KAFKA_PASSWORD")
        if password is None and env.get("KAFKA_PASSWORD_FILE"):
            password = Path(env["KAFKA_PASSWORD_FILE"]).read_text().strip()
        if not password:
            raise SystemExit("set KAFKA_PASSWORD or KAFKA_PASSWORD_FILE")
        username = env["KAFKA_USERNAME"]
        return cls(bootstrap=env["KAFKA_BOOTSTRAP_SERVERS"], username=username, password=password,
                   ca_file=env.get("KAFKA_CA_FILE"),
                   group_id=env.get("AGENCY_GROUP_ID", f"{username}.funding-table"),
                   db_path=env.get("AGENCY_DB", "funding.sqlite3"))

    def ssl_context(self) -> ssl.SSLContext:
        return create_ssl_context(cafile=self.ca_file)


class NewerVersion(RuntimeError):
    """An event of a version this code does not know yet: upgrade before going on."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS processed_events (event_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS fundings (
    group_id TEXT NOT NULL, tranche INTEGER NOT NULL, province_code TEXT NOT NULL,
    amount INTEGER NOT NULL, disbursed_on TEXT NOT NULL, PRIMARY KEY (group_id, tranche));
"""


def open_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)  # explicit BEGIN/COMMIT below
    db.executescript(SCHEMA)
    return db


def apply_batch(db: sqlite3.Connection, values: list[bytes]) -> int:
    """Apply a batch of messages in one transaction; returns how many were new GroupFunded."""
    applied = 0
    db.execute("BEGIN")
    try:
        for value in values:
            try:
                envelope = json.loads(value)
                kind = (envelope["event_type"], envelope["schema_version"])
            except (ValueError, TypeError, KeyError):
                # not an envelope at all: nothing this subscriber follows; note it, go on
                print(f"skipped a message that is not an event envelope: {value[:80]!r}",
                      file=sys.stderr)
                continue
            if kind not in HANDLED:
                if envelope["event_type"] == "GroupFunded":
                    raise NewerVersion(f"GroupFunded v{envelope['schema_version']}: upgrade")
                continue  # a type we do not follow
            seen = db.execute("INSERT OR IGNORE INTO processed_events VALUES (?)",
                              (envelope["event_id"],))
            if seen.rowcount == 0:
                continue  # delivered again: already counted
            p = envelope["payload"]
            db.execute("INSERT OR IGNORE INTO fundings VALUES (?, ?, ?, ?, ?)",
                       (p["group_id"], p["tranche"], p["province_code"], p["amount"],
                        p["disbursed_on"]))
            applied += 1
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return applied


def province_table(db: sqlite3.Connection) -> list[tuple[str, int, int]]:
    """(province code, funded groups, rupiah disbursed), by province."""
    return db.execute("SELECT province_code, COUNT(DISTINCT group_id), SUM(amount) FROM fundings "
                      "GROUP BY province_code ORDER BY province_code").fetchall()


def print_table(rows: list[tuple[str, int, int]]) -> None:
    print(f"{'province':>8} {'groups':>8} {'rupiah':>20}")
    for province, groups, rupiah in rows:
        print(f"{province:>8} {groups:>8} {rupiah:>20,}")
    print(f"{'total':>8} {sum(r[1] for r in rows):>8} {sum(r[2] for r in rows):>20,}")


async def run(settings: Settings, *, once: bool = False, idle_s: float = 5.0) -> None:
    db = open_db(settings.db_path)
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=settings.bootstrap, group_id=settings.group_id,
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=settings.username, sasl_plain_password=settings.password,
        ssl_context=settings.ssl_context(),
        auto_offset_reset="earliest",  # a new group starts at offset 0
        enable_auto_commit=False)      # commit only what SQLite has committed
    try:
        await consumer.start()
        idle = 0.0
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            if not batches:
                idle += 1.0
                if once and idle >= idle_s:
                    return
                continue
            idle = 0.0
            values = [m.value for records in batches.values() for m in records]
            apply_batch(db, values)
            await consumer.commit()
    finally:
        await consumer.stop()
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="read what is there, then exit")
    args = parser.parse_args()
    settings = Settings.from_env()
    try:
        asyncio.run(run(settings, once=args.once))
    except KeyboardInterrupt:
        pass
    except (KafkaError, NewerVersion) as exc:
        # a wrong password shows as "Unable to bootstrap" (the broker's reason is logged above)
        raise SystemExit(f"stopped: {type(exc).__name__}: {exc}") from None
    with sqlite3.connect(settings.db_path) as db:
        print_table(province_table(db))


if __name__ == "__main__":
    main()
