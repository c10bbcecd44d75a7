import asyncio

from services.mentoring import handlers
from services.mentoring.app import build_spec
from services.mentoring.config import PeriodCloseRules, load_config


def _config(automatic: bool, interval: float = 3600):
    return load_config().model_copy(update={"period_close": PeriodCloseRules(
        automatic=automatic, check_interval_seconds=interval, window_days=45)})


def _jobs(spec) -> list[str]:
    return [job.__name__ for job in spec.background]


def test_the_automatic_close_is_a_background_job_only_when_configured():
    # the rules job adopts the shipped rules and keeps the rules cache current
    assert _jobs(build_spec(_config(True))) == ["rules_job", "close_due_periods"]
    assert _jobs(build_spec(_config(False))) == ["rules_job"]


async def test_the_automatic_close_checks_at_once_and_stops_when_asked(monkeypatch):
    stop, calls = asyncio.Event(), []

    async def close_due_periods(ctx, config, on):
        calls.append(ctx)
        if len(calls) == 1:
            raise OSError("the database is away")  # logged; the job goes on
        return []

    monkeypatch.setattr(handlers, "close_due_periods", close_due_periods)
    [_, job] = build_spec(_config(True, interval=0.01)).background
    task = asyncio.create_task(job("ctx", stop))
    while len(calls) < 2:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert calls[:2] == ["ctx", "ctx"]
