"""Helpers of the recruitment tests: tokens, valid applicants, envelopes."""

from __future__ import annotations

import random
import uuid
from datetime import date, timedelta

from shared.auth import Role, mint_token
from shared.envelope import Envelope, Event, utcnow
from shared.nik import parse_nik, random_valid_nik
from shared.settings import DEV_SIGNING_KEY

_rng = random.Random(uuid.uuid4().int)


def auth(role: Role = Role.ADMIN, *, province: str | None = None,
         tks_id: str | None = None) -> dict[str, str]:
    token = mint_token(DEV_SIGNING_KEY, f"test-{role.value}", role, province_code=province,
                       tks_id=tks_id)
    return {"Authorization": f"Bearer {token}"}


ADMIN = auth()


def applicant(year: int = 2023, regency: str = "3201", *, nik_regency: str | None = None,
              education: str = "S1", age: int | None = None) -> dict:
    """A registration the default eligibility rules accept (age 22-35 on 1 January)."""
    age = age if age is not None else _rng.randint(22, 35)
    born = date(year - age - 1, 1, 2) + timedelta(days=_rng.randrange(364))
    nik = random_valid_nik(_rng, regency_code=nik_regency or regency, birth_date=born)
    info = parse_nik(nik)
    return {"year": year, "nik": nik, "full_name": f"Pelamar {_rng.randrange(10**6)}",
            "sex": info.sex, "birth_date": info.birth_date.isoformat(), "education": education,
            "domicile_regency_code": regency,
            "phone": f"0812{_rng.randrange(10**7, 10**8)}", "email": "pelamar@example.id"}


def envelope(event: Event, stream_id: str) -> Envelope:
    return Envelope(event_id=uuid.uuid4(), event_type=event.event_type,
                    schema_version=event.schema_version, occurred_at=utcnow(),
                    stream_id=stream_id, stream_version=1, correlation_id=uuid.uuid4(),
                    producer="evaluation", actor="test", payload=event.model_dump(mode="json"))
