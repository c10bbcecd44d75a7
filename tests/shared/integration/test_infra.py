import asyncio

import asyncpg
import pytest

from scripts import infra as local_infra

pytestmark = pytest.mark.integration


async def test_up_is_idempotent_completes_a_half_started_state_and_down_twice_is_harmless(
        tmp_path):
    state = tmp_path / "infra"
    first, started = await asyncio.to_thread(local_infra.up, state)
    try:
        assert started
        again, started_again = await asyncio.to_thread(local_infra.up, state)
        assert (again, started_again) == (first, False)

        # Kafka died (or never came up) while Postgres runs on: the next `up` restarts Kafka
        # on the same address and keeps the same Postgres
        assert await asyncio.to_thread(local_infra.stop_kafka, state)
        healed, started = await asyncio.to_thread(local_infra.up, state)
        assert started and healed == first
        conn = await asyncpg.connect(healed.database_url("groups"))
        await conn.close()
    finally:
        stopped = await asyncio.to_thread(local_infra.down, state)
    assert stopped == ["kafka", "postgres"]
    assert await asyncio.to_thread(local_infra.down, state) == []
    assert local_infra.status(state) is None


async def test_a_cluster_id_beginning_with_a_dash_formats_and_starts(tmp_path):
    # base64 ids begin with "-" one time in 64; the storage tool once took it for an option
    state, port = tmp_path / "kafka", local_infra.free_port()
    await asyncio.to_thread(local_infra.start_kafka, state, port, "-AbCdEfGhIjKlMnOpQrStU")
    try:
        assert "cluster.id=-AbCdEfGhIjKlMnOpQrStU" in (
            state / "kafka-data" / "meta.properties").read_text()
    finally:
        assert await asyncio.to_thread(local_infra.stop_kafka, state)


def test_a_stale_pid_file_naming_another_process_is_not_taken_for_a_server(tmp_path):
    import subprocess

    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        for server in ("kafka", "postgres"):
            (tmp_path / f"{server}.pid").write_text(str(bystander.pid))
        assert local_infra.status(tmp_path) is None
        assert local_infra.down(tmp_path) == []
        assert bystander.poll() is None, "an unrelated process was signalled"
    finally:
        bystander.kill()
        bystander.wait()
