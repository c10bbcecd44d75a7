"""The published contract documents, and the gate that keeps them compatible
(docs/contracts/COMPATIBILITY.md)."""

import copy
import json
import re
from pathlib import Path

import pytest

from scripts import contract_docs
from scripts.contract_docs import breaking_changes, snapshot
from shared.contracts.common import UPCASTS
from shared.envelope import current_version, registered_events
from shared.topics import CONTRACT_TOPICS

REGENERATE = "the event contract changed: run `python -m scripts.contract_docs` and commit the result"


def test_the_committed_documents_match_the_models():
    assert contract_docs.OUT.read_text() == contract_docs.render(), REGENERATE
    committed = {p.name: p.read_text() for p in contract_docs.SCHEMAS.glob("*.json")}
    assert committed == contract_docs.render_schemas(), REGENERATE


def test_the_models_break_no_committed_schema():
    problems = breaking_changes(contract_docs.load_committed(), snapshot(), UPCASTS)
    assert problems == [], "\n".join(problems)


def test_the_models_break_no_schema_as_git_first_published_it():
    # a regenerated, committed file cannot launder a breaking change: git remembers the original
    baseline = contract_docs.first_published()
    if baseline is None:
        pytest.skip("not a git checkout")
    problems = breaking_changes(baseline, snapshot(), UPCASTS)
    assert problems == [], "\n".join(problems)


def test_every_version_of_every_published_message_is_documented():
    doc = json.loads(contract_docs.render())
    assert set(doc["channels"]) == set(CONTRACT_TOPICS)
    published = {(t, v) for (t, v), cls in registered_events().items()
                 if cls.topic in CONTRACT_TOPICS}
    assert {(m["payload"]["allOf"][1]["properties"]["event_type"]["const"],
             m["payload"]["allOf"][1]["properties"]["schema_version"]["const"])
            for m in doc["components"]["messages"].values()} == published
    for old in ("GroupRejected", "AccountabilityReportReturned", "GroupDissolved",
                "GroupShowcasedAtExpo", "ReportFiled", "ReportAmended"):
        v1, v2 = doc["components"]["messages"][f"{old}.v1"], f"{old}.v2"
        assert v1["name"] == f"{old}.v1" and v1["x-superseded-by"] == v2
        topic = registered_events()[(old, 1)].topic
        assert {f"{old}.v1", v2} <= set(doc["channels"][topic]["messages"])
    assert "reason" in doc["components"]["schemas"]["GroupRejected.v1"]["required"]
    assert "reason_code" in doc["components"]["schemas"]["GroupRejected.v2"]["required"]
    funded = doc["components"]["schemas"]["GroupFunded.v1"]
    assert funded["properties"]["amount"]["type"] == "integer"


def test_published_schemas_let_subscribers_meet_added_optional_properties():
    text = contract_docs.render() + "".join(contract_docs.render_schemas().values())
    assert '"additionalProperties": false' not in text


def test_producers_never_emit_a_superseded_version():
    superseded = {cls.__name__ for (t, v), cls in registered_events().items()
                  if cls.topic in CONTRACT_TOPICS and v < current_version(t)}
    assert {"GroupRejectedV1", "ReportFiledV1", "GroupShowcasedAtExpoV1"} <= superseded
    root = Path(contract_docs.__file__).resolve().parent.parent
    for source in [*(root / "services").rglob("*.py"), *(root / "scripts").glob("*.py")]:
        used = superseded & set(re.findall(r"\b\w+V1\b", source.read_text()))
        assert not used, f"{source.relative_to(root)} uses {used}: produce the current version"


# --- the gate, on deliberate changes to the real contract ---------------------------------------

def current() -> dict:
    return copy.deepcopy(snapshot())


def test_an_unchanged_contract_passes_the_gate():
    assert breaking_changes(snapshot(), current(), UPCASTS) == []


def test_an_added_optional_field_passes_the_gate():
    new = current()
    funded = new["GroupFunded.v1"]
    funded["properties"]["note_code"] = {"anyOf": [{"type": "string"}, {"type": "null"}],
                                         "default": None}
    funded["description"] = "annotations may change too"
    quota = new["RecruitmentRoundOpened.v1"]["$defs"]["Quota"]
    quota["properties"]["district_code"] = {"type": "string", "pattern": r"^\d{6}$"}
    assert breaking_changes(snapshot(), new, UPCASTS) == []


def test_a_removed_field_fails_the_gate():
    new = current()
    del new["GroupFunded.v1"]["properties"]["lpj_due_on"]
    new["GroupFunded.v1"]["required"].remove("lpj_due_on")
    [problem] = breaking_changes(snapshot(), new, UPCASTS)
    assert problem.startswith("GroupFunded.v1 (tkm.groups.v1): property 'lpj_due_on' was removed")
    assert "new schema_version" in problem and "COMPATIBILITY.md" in problem


def test_a_type_change_fails_the_gate():
    new = current()
    new["GroupFunded.v1"]["properties"]["amount"] = {"type": "string"}
    problems = breaking_changes(snapshot(), new, UPCASTS)
    assert any("property 'amount': 'type' changed from \"integer\" to \"string\"" in p
               for p in problems), problems


def test_a_tightened_or_widened_constraint_fails_the_gate():
    new = current()
    new["ReportFiled.v2"]["properties"]["production_unit"]["enum"].append("ton")
    new["TksRecruited.v1"]["properties"]["tks_id"]["maxLength"] = 32
    problems = breaking_changes(snapshot(), new, UPCASTS)
    assert len(problems) == 2
    assert "ReportFiled.v2 (tkm.mentoring.v1): property 'production_unit': 'enum' changed" \
        in problems[0]
    assert "'maxLength' changed from 64 to 32" in problems[1]


def test_a_new_required_field_fails_the_gate():
    new = current()
    new["MentorAssigned.v1"]["properties"]["district_code"] = {"type": "string"}
    new["MentorAssigned.v1"]["required"].append("district_code")
    assert breaking_changes(snapshot(), new, UPCASTS) == [
        "MentorAssigned.v1 (tkm.mentoring.v1): new property 'district_code' is required (old "
        "messages lack it); a change other than an added optional property needs a new "
        "schema_version with an upcaster from this one, or a new topic "
        "(docs/contracts/COMPATIBILITY.md)"]


def test_a_removed_version_fails_the_gate():
    new = current()
    del new["GroupRejected.v1"]
    problems = breaking_changes(snapshot(), new, UPCASTS)
    assert problems[0].startswith("GroupRejected.v1 (tkm.groups.v1) was removed: messages of "
                                  "this version stay on the retained topic")
    # and v2 now lacks the version it upcasts from
    assert problems[1].startswith("GroupRejected.v2: version 1 of GroupRejected is not registered")


def test_a_removed_event_type_fails_the_gate():
    new = current()
    del new["ReportOverdue.v1"]
    assert breaking_changes(snapshot(), new, UPCASTS) == [
        "event type ReportOverdue was removed from tkm.mentoring.v1: its messages stay on the "
        "retained topic; keep every version registered and stop producing it, or move it to a "
        "new topic (docs/contracts/COMPATIBILITY.md)"]


def test_a_new_version_needs_an_upcaster_from_the_previous_one():
    new = current()
    v3 = copy.deepcopy(new["GroupDissolved.v2"])
    v3["x-schema-version"] = 3
    new["GroupDissolved.v3"] = v3
    [problem] = breaking_changes(snapshot(), new, UPCASTS)
    assert problem.startswith("GroupDissolved.v3: no upcaster from GroupDissolved.v2")
    assert breaking_changes(snapshot(), new, {*UPCASTS, ("GroupDissolved", 2)}) == []


def test_a_breaking_change_is_fine_as_a_new_version_with_its_upcaster():
    old, new = current(), current()
    del old["GroupShowcasedAtExpo.v2"]  # as before this change: only v1 was published
    assert breaking_changes(old, new, UPCASTS) == []
    assert breaking_changes(old, new, UPCASTS - {("GroupShowcasedAtExpo", 1)}) != []


def test_moving_a_message_to_another_topic_fails_the_gate():
    new = current()
    new["GroupApproved.v1"]["x-topic"] = "tkm.groups.v2"
    [problem] = breaking_changes(snapshot(), new, UPCASTS)
    assert problem.startswith("GroupApproved.v1 moved from tkm.groups.v1 to tkm.groups.v2")


def test_regenerating_refuses_to_write_a_breaking_change(tmp_path, monkeypatch, capsys):
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for name, text in contract_docs.render_schemas().items():
        (schemas / name).write_text(text)
    changed = current()
    changed["GroupApproved.v1"]["properties"]["group_id"]["type"] = "integer"
    (schemas / "GroupApproved.v1.json").write_text(json.dumps(changed["GroupApproved.v1"]))
    monkeypatch.setattr(contract_docs, "SCHEMAS", schemas)
    monkeypatch.setattr(contract_docs, "OUT", tmp_path / "asyncapi.json")
    monkeypatch.setattr(contract_docs, "first_published", lambda: None)
    assert contract_docs.main() == 1
    assert not (tmp_path / "asyncapi.json").exists()
    assert "GroupApproved.v1 (tkm.groups.v1): property 'group_id': 'type' changed" \
        in capsys.readouterr().err


# --- how subscribers connect (issue 12) ---------------------------------------------------------

def test_the_servers_are_secured_with_scram_over_tls():
    doc = json.loads(contract_docs.render())
    servers = doc["servers"]
    assert servers["local"]["host"] == "127.0.0.1:19092"
    production = servers["production"]
    assert "{host}" in production["host"] and "host" in production["variables"]
    schemes = doc["components"]["securitySchemes"]
    for server in servers.values():
        assert server["protocol"] == "kafka-secure"  # TLS: SASL_SSL, never plaintext
        assert server["security"], server
        for ref in server["security"]:
            scheme = schemes[ref["$ref"].rsplit("/", 1)[1]]
            assert scheme["type"] == "scramSha512"
            assert "SASL_SSL" in scheme["description"] and "CA" in scheme["description"]


def test_channels_and_messages_carry_kafka_bindings_with_the_key_schema():
    doc = json.loads(contract_docs.render())
    for topic, channel in doc["channels"].items():
        binding = channel["bindings"]["kafka"]
        assert binding["topic"] == topic and binding["bindingVersion"] == "0.5.0"
        assert binding["partitions"] == 6 and binding["replicas"] >= 1
        assert binding["topicConfiguration"] == {"cleanup.policy": ["delete"], "retention.ms": -1}
    for name, message in doc["components"]["messages"].items():
        key = message["bindings"]["kafka"]["key"]
        assert key["type"] == "string", name
        assert all(re.match(key["pattern"], example) for example in key["examples"])
    groups_key = doc["components"]["messages"]["GroupFunded.v1"]["bindings"]["kafka"]["key"]
    assert re.match(groups_key["pattern"], "group-3f1c2a9e-7b41-4d0e-9a55-2c8e6f1d0b7a")
    assert not re.match(groups_key["pattern"], "tks-3f1c2a9e")


def test_operations_are_the_programme_sending_on_every_contract_topic():
    doc = json.loads(contract_docs.render())
    operations = doc["operations"]
    assert {op["channel"]["$ref"] for op in operations.values()} == {
        f"#/channels/{topic}" for topic in CONTRACT_TOPICS}
    for op in operations.values():
        assert op["action"] == "send"  # AsyncAPI 3: the application described sends
        topic = op["channel"]["$ref"].rsplit("/", 1)[1]
        assert {m["$ref"].rsplit("/", 1)[1] for m in op["messages"]} == set(
            doc["channels"][topic]["messages"])
        group = op["bindings"]["kafka"]["groupId"]
        assert re.match(group["pattern"], "bps.dashboard")
        assert not re.match(group["pattern"], "dashboard")
