import logging
import re

from shared.observability import RateLimit, _UtcMillisFormatter, bound, correlation_id_var


def _record(name: str, msg: str, level: int = logging.ERROR, **extra) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, (), None)
    record.__dict__.update(extra)
    return record


def test_a_storm_of_kafka_client_errors_becomes_a_few_lines_with_a_count():
    limit = RateLimit(window_s=60, per_key=2, per_family=6)
    passed = [r for r in (_record("aiokafka.conn", 'Unable connect to "%s"') for _ in range(2300))
              if limit.filter(r)]
    assert len(passed) == 2
    # other messages of the library share one budget per family
    others = [r for i in range(100) if limit.filter(r := _record("aiokafka", f"error {i}"))]
    assert len(others) == 4
    # the window over, the next line says how many were suppressed
    for entry in limit._keys.values():
        entry[0] -= 61
    for entry in limit._families.values():
        entry[0] -= 61
    again = _record("aiokafka.conn", 'Unable connect to "%s"')
    assert limit.filter(again) and again.suppressed == 2298
    assert "2298 similar lines suppressed" in again.msg


def test_our_own_lines_pass_unless_they_ask_to_be_rate_limited():
    limit = RateLimit(per_key=2)
    assert all(limit.filter(_record("tkm.consumer", "dead-lettered %s")) for _ in range(50))
    assert all(limit.filter(_record("aiokafka", "joined", logging.INFO)) for _ in range(50))
    asked = [limit.filter(_record("tkm.service", "retrying", ratelimit=True)) for _ in range(50)]
    assert sum(asked) == 2


def test_timestamps_are_utc_with_milliseconds():
    formatter = _UtcMillisFormatter("%(asctime)s %(message)s")
    record = _record("tkm", "x", logging.INFO)
    record.created, record.msecs = 1764625503.25, 250.0
    assert formatter.formatTime(record) == "2025-12-01T21:45:03.250Z"
    assert re.search(r'"asctime": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"',
                     formatter.format(record))


def test_bound_context_is_reset_when_the_request_ends():
    with bound(correlation_id="a"):
        assert correlation_id_var.get() == "a"
        with bound(correlation_id="b"):
            assert correlation_id_var.get() == "b"
        assert correlation_id_var.get() == "a"
    assert correlation_id_var.get() is None
