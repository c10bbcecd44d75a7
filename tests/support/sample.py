"""A minimal service used to test the kernel: it records amounts and totals them."""

from __future__ import annotations

from fastapi import APIRouter

from shared.aggregate import Aggregate, UnitOfWork
from shared.envelope import Envelope, Event, register

SAMPLE_TOPIC = "tkm.kerneltest.v1"


@register
class AmountRecorded(Event):
    event_type = "KernelTestAmountRecorded"
    topic = SAMPLE_TOPIC
    amount: int


class Counter(Aggregate):
    def __init__(self, stream_id: str):
        super().__init__(stream_id)
        self.total = 0

    def apply(self, event: Event) -> None:
        if isinstance(event, AmountRecorded):
            self.total += event.amount

    def add(self, amount: int) -> None:
        self.record(AmountRecorded(amount=amount))


TOTALS_SQL = """CREATE TABLE IF NOT EXISTS sample_totals (
    stream_id text PRIMARY KEY, total bigint NOT NULL, events integer NOT NULL)"""


async def on_amount(uow: UnitOfWork, envelope: Envelope, event: AmountRecorded) -> None:
    if event.amount < 0:
        raise ValueError("a negative amount cannot be totalled")
    await uow.conn.execute(TOTALS_SQL)
    await uow.conn.execute(
        "INSERT INTO sample_totals VALUES ($1, $2, 1) ON CONFLICT (stream_id) DO UPDATE "
        "SET total = sample_totals.total + $2, events = sample_totals.events + 1",
        envelope.stream_id, event.amount)


router = APIRouter()
