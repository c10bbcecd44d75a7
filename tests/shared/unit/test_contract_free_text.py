"""No free text on the topics: every published string is an id, a code or a pattern, and the
versions that carried free text upcast to codes without carrying the text on."""

import json
import uuid
from datetime import UTC, date, datetime

import pytest

from scripts.contract_docs import snapshot
from scripts.simulate import UNITS
from shared.contracts.groups import GroupShowcasedAtExpo
from shared.contracts.mentoring import PRODUCTION_UNITS, ReportAmended, ReportFiled
from shared.envelope import current_version, decode

TYPED = "Pameran rumah Siti Aminah 3201014506990001 HP 081234567890 siti@example.id"
# string fields without a pattern or an enum, each reviewed: ids the services generate, or
# codes the producer checks against its catalogue or configuration (see COMPATIBILITY.md)
REVIEWED_IDS = {
    "group_id", "tks_id", "report_id", "round_id", "vacancy_id", "replaces_tks_id",
    "business_type",  # checked against the groups service's business-type catalogue
    "policy_version",  # the evaluation policy file's version
    "Indicator.name",  # the evaluation policy's indicator keys
}


def _raw(event_type: str, version: int, payload: dict) -> bytes:
    return json.dumps({
        "event_id": str(uuid.uuid4()), "event_type": event_type, "schema_version": version,
        "occurred_at": datetime.now(UTC).isoformat(), "stream_id": "group-g1",
        "stream_version": 3, "correlation_id": str(uuid.uuid4()), "producer": "test",
        "actor": "ministry_admin:x", "payload": payload}).encode()


def _strings(schema: dict, prefix: str = ""):
    for name, prop in schema.get("properties", {}).items():
        for option in prop.get("anyOf", [prop]):
            if option.get("type") == "string":
                yield f"{prefix}{name}", option
            items = option.get("items", {})
            if items.get("type") == "string":
                yield f"{prefix}{name}[]", items
    for def_name, sub in schema.get("$defs", {}).items():
        yield from _strings(sub, f"{def_name}.")


def test_no_current_published_field_is_free_text():
    unreviewed = []
    for name, schema in snapshot().items():
        if schema["x-schema-version"] != current_version(schema["x-event-type"]):
            continue  # superseded versions are history: they are upcast away on read
        for field, option in _strings(schema):
            constrained = {"pattern", "enum", "const", "format"} & option.keys()
            if not constrained and field not in REVIEWED_IDS:
                unreviewed.append(f"{name}.{field}")
    assert unreviewed == [], (
        "a published string that is neither an id nor a code: make it a catalogue code, or "
        f"keep it in the owning service: {unreviewed}")
    assert all(len(json.dumps(s)) < 4000 for s in snapshot().values())


def test_a_v1_expo_upcasts_to_codes_and_drops_the_text():
    _, event = decode(_raw("GroupShowcasedAtExpo", 1, {
        "group_id": "g1", "expo": TYPED, "place": TYPED, "held_on": "2019-11-20"}))
    assert event == GroupShowcasedAtExpo(group_id="g1", expo_code="other", regency_code=None,
                                         held_on=date(2019, 11, 20))
    assert "Siti" not in event.model_dump_json() and "expo\"" not in event.model_dump_json()


@pytest.mark.parametrize(("typed", "code"), [
    ("kg", "kg"), (" Porsi ", "porsi"), ("ekor", "ekor"), ("karung", "lainnya"),
    (TYPED, "lainnya"), ("081234567890", "lainnya")])
@pytest.mark.parametrize("cls", [ReportFiled, ReportAmended])
def test_a_v1_report_keeps_a_unit_typed_as_a_code_and_drops_any_other_text(cls, typed, code):
    _, event = decode(_raw(cls.event_type, 1, {
        "group_id": "g1", "tks_id": "t1", "period": "2023-05", "revenue": 1_000,
        "production_units": 5, "production_unit": typed, "members_active": 10,
        "new_workers": 0, "support": [], "lpj_help": False, "on_time": True}))
    assert type(event) is cls and event.production_unit == code
    assert typed.strip() not in event.model_dump_json() or typed.strip().lower() == code


def test_the_simulator_reports_in_contract_units():
    assert set(UNITS.values()) <= set(PRODUCTION_UNITS)
