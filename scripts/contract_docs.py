"""Writes the published event contract as an AsyncAPI 3.0 document for subscribing agencies:
`docs/contracts/asyncapi.json`. `python -m scripts.contract_docs` regenerates it; a test fails
when the committed document no longer matches the pydantic models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import shared.contracts  # noqa: F401 - registers the published events
from shared.envelope import Envelope, registered_events
from shared.topics import CONTRACT_TOPICS

OUT = Path(__file__).resolve().parent.parent / "docs" / "contracts" / "asyncapi.json"
KEYS = {
    "tkm.recruitment.v1": "stream id: tks-<id>, round-<id>, vacancy-<id>",
    "tkm.groups.v1": "group stream id (group-<id>)",
    "tkm.mentoring.v1": "group stream id; PeriodClosed: period-<YYYY-MM>",
    "tkm.evaluation.v1": "TKS stream id (tks-<id>); cycle events: evaluation-<year>",
}


def build() -> dict:
    channels, operations, messages, schemas = {}, {}, {}, {}
    envelope = Envelope.model_json_schema()
    envelope["properties"]["payload"] = {"description": "the event's payload, see event_type"}
    schemas["Envelope"] = envelope
    for (event_type, version), cls in sorted(registered_events().items()):
        if cls.topic not in CONTRACT_TOPICS:
            continue
        name = f"{event_type}.v{version}"
        payload = cls.model_json_schema(ref_template="#/components/schemas/{model}")
        for sub_name, sub in payload.pop("$defs", {}).items():
            schemas[sub_name] = sub
        schemas[name] = payload
        messages[name] = {
            "name": event_type, "title": f"{event_type} (schema_version {version})",
            "contentType": "application/json",
            "summary": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else event_type,
            "payload": {"allOf": [{"$ref": "#/components/schemas/Envelope"}, {
                "type": "object", "properties": {
                    "event_type": {"const": event_type},
                    "schema_version": {"const": version},
                    "payload": {"$ref": f"#/components/schemas/{name}"}}}]},
        }
        channel = channels.setdefault(cls.topic, {
            "address": cls.topic, "messages": {},
            "description": f"Kafka topic {cls.topic}; message key: {KEYS[cls.topic]}. "
                           "At-least-once: drop duplicates by event_id."})
        channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
    for topic in CONTRACT_TOPICS:
        if topic in channels:
            operations[f"receive-{topic}"] = {
                "action": "receive", "channel": {"$ref": f"#/channels/{topic}"}}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Kemnaker TKS/TKM programme events", "version": "1.0.0",
                 "description": "Events the programme publishes for other agencies. No topic "
                                "carries personal data (NIK, names, phones, birth dates)."},
        "defaultContentType": "application/json",
        "channels": channels, "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True, default=str) + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT.relative_to(OUT.parent.parent.parent)}", file=sys.stderr)
