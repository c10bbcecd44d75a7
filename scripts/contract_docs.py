"""The published event contract, as documents for subscribing agencies and as a compatibility gate.

`python -m scripts.contract_docs` writes, from the pydantic models in `shared/contracts/`:
- `docs/contracts/schemas/<EventType>.v<N>.json`: one JSON Schema per registered version of every
  published event (every version still on a retained topic, superseded ones included);
- `docs/contracts/asyncapi.json`: the AsyncAPI 3.0 document listing all of them.

It refuses to write when the models break the committed schemas (`breaking_changes`, the rules of
docs/contracts/COMPATIBILITY.md), so regenerating cannot launder a breaking change; the tests in
tests/shared/unit/test_contract_docs.py apply the same gate in the normal suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import shared.contracts  # noqa: F401 - registers the published events
from shared.contracts.common import UPCASTS
from shared.envelope import Envelope, current_version, registered_events
from shared.kafka_acls import agency_group_prefix
from shared.settings import ServiceSettings
from shared.topics import CONTRACT_TOPICS

DOCS = Path(__file__).resolve().parent.parent / "docs" / "contracts"
OUT = DOCS / "asyncapi.json"
SCHEMAS = DOCS / "schemas"
POLICY = "docs/contracts/COMPATIBILITY.md"
KEYS = {
    "tkm.recruitment.v1": "stream id: tks-<id>, round-<id>, vacancy-<id>",
    "tkm.groups.v1": "group stream id (group-<id>)",
    "tkm.mentoring.v1": "group stream id; PeriodClosed: period-<YYYY-MM>",
    "tkm.evaluation.v1": "TKS stream id (tks-<id>); cycle events: evaluation-<year>",
}
# the message key (= the aggregate's stream id, so one stream keeps its order): its prefixes
KEY_PREFIXES = {
    "tkm.recruitment.v1": ("tks", "round", "vacancy"),
    "tkm.groups.v1": ("group",),
    "tkm.mentoring.v1": ("group", "period"),
    "tkm.evaluation.v1": ("tks", "evaluation"),
}
KAFKA_BINDING = "0.5.0"  # AsyncAPI Kafka bindings
LOCAL_BROKER = "127.0.0.1:19092"  # docker-compose's EXTERNAL listener (TKM_KAFKA_EXTERNAL_*)
SECURITY = "scramSha512"
# keywords that document without constraining: changing them breaks no subscriber
_ANNOTATIONS = {"title", "description", "examples", "$comment", "$schema", "$id", "deprecated"}

Schema = dict[str, Any]


def _tolerant(node: Any) -> Any:
    """Drop `additionalProperties: false` (the models forbid extras when producing): subscribers
    must accept optional properties added within a version, so the published schemas do too."""
    if isinstance(node, dict):
        return {k: _tolerant(v) for k, v in node.items()
                if not (k == "additionalProperties" and v is False)}
    if isinstance(node, list):
        return [_tolerant(v) for v in node]
    return node


def message_name(event_type: str, version: int) -> str:
    return f"{event_type}.v{version}"


def snapshot() -> dict[str, Schema]:
    """Every registered version of every published event -> its JSON Schema (self-contained,
    `$defs` local), tagged with `x-topic`, `x-event-type` and `x-schema-version`."""
    out: dict[str, Schema] = {}
    for (event_type, version), cls in sorted(registered_events().items()):
        if cls.topic not in CONTRACT_TOPICS:
            continue
        schema = _tolerant(cls.model_json_schema())
        schema["title"] = event_type
        out[message_name(event_type, version)] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "x-topic": cls.topic, "x-event-type": event_type, "x-schema-version": version,
            "x-current-version": current_version(event_type), **schema}
    return out


def load_committed(directory: Path | None = None) -> dict[str, Schema]:
    return {p.name.removesuffix(".json"): json.loads(p.read_text())
            for p in sorted((directory or SCHEMAS).glob("*.json"))}


def first_published(root: Path = DOCS.parent.parent) -> dict[str, Schema] | None:
    """Each committed schema as git first recorded it: the version subscribers were first given,
    which a regenerated file cannot rewrite. None outside a git checkout."""
    where = SCHEMAS.relative_to(root).as_posix()
    try:
        log = subprocess.run(["git", "-C", str(root), "log", "--diff-filter=A", "--format=@%H",
                              "--name-only", "--", where], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    added: dict[str, str] = {}  # path -> commit; git lists newest first, so the oldest wins
    commit = ""
    for line in log.splitlines():
        if line.startswith("@"):
            commit = line[1:]
        elif line.endswith(".json"):
            added[line] = commit
    out: dict[str, Schema] = {}
    for path, commit in sorted(added.items()):
        text = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{path}"],
                              capture_output=True, text=True, check=True).stdout
        out[Path(path).name.removesuffix(".json")] = json.loads(text)
    return out


# --- the gate -----------------------------------------------------------------------------------

def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _relevant(schema: Schema) -> Schema:
    return {k: v for k, v in schema.items()
            if k not in _ANNOTATIONS and not k.startswith("x-")}


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in _relevant(node).items()}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _diff(old: Any, new: Any, where: str) -> list[str]:
    """What changed from `old` to `new` other than added optional properties and annotations."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if _strip(old) == _strip(new) else [
            f"{where} changed from {_show(old)} to {_show(new)}"]
    o, n = _relevant(_tolerant(old)), _relevant(_tolerant(new))
    prefix = f"{where}." if where else ""
    problems: list[str] = []
    old_props, new_props = o.pop("properties", {}), n.pop("properties", {})
    old_req, new_req = set(o.pop("required", [])), set(n.pop("required", []))
    for name, old_prop in old_props.items():
        if name not in new_props:
            problems.append(f"property '{prefix}{name}' was removed")
        else:
            problems += _diff(old_prop, new_props[name], f"property '{prefix}{name}'")
    for name in new_props.keys() - old_props.keys():
        if name in new_req:
            problems.append(f"new property '{prefix}{name}' is required (old messages lack it)")
    for name in sorted((old_req - new_req) & new_props.keys()):
        problems.append(f"property '{prefix}{name}' is no longer required")
    for name in sorted((new_req - old_req) & old_props.keys()):
        problems.append(f"property '{prefix}{name}' became required")
    old_defs, new_defs = o.pop("$defs", {}), n.pop("$defs", {})
    for name, old_def in old_defs.items():
        if name not in new_defs:
            problems.append(f"definition '{name}' was removed")
        else:
            problems += _diff(old_def, new_defs[name], name)
    label = where or "the payload"
    for key in sorted(o.keys() | n.keys()):
        if key not in n:
            problems.append(f"{label}: '{key}' {_show(o[key])} was removed")
        elif key not in o:
            problems.append(f"{label}: '{key}' {_show(n[key])} was added")
        elif _strip(o[key]) != _strip(n[key]):
            problems.append(f"{label}: '{key}' changed from {_show(o[key])} to {_show(n[key])}")
    return problems


def breaking_changes(old: dict[str, Schema], new: dict[str, Schema],
                     upcasts: set[tuple[str, int]] | frozenset[tuple[str, int]]) -> list[str]:
    """The changes from the published schemas `old` to `new` (both: message name, e.g.
    `GroupRejected.v2` -> JSON Schema from `snapshot`) that the compatibility policy calls
    breaking, one sentence each; [] when `new` only adds (optional properties, versions with
    their upcaster in `upcasts` = {(event_type, from_version)}, event types, topics)."""
    problems: list[str] = []
    remedy = (f"a change other than an added optional property needs a new schema_version with "
              f"an upcaster from this one, or a new topic ({POLICY})")
    gone_by_type: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name in sorted(old.keys() - new.keys()):
        gone_by_type[(old[name]["x-topic"], old[name]["x-event-type"])].append(name)
    for (topic, event_type), names in sorted(gone_by_type.items()):
        if not any(s["x-event-type"] == event_type and s["x-topic"] == topic
                   for s in new.values()):
            problems.append(f"event type {event_type} was removed from {topic}: its messages stay "
                            f"on the retained topic; keep every version registered and stop "
                            f"producing it, or move it to a new topic ({POLICY})")
        else:
            problems += [f"{name} ({topic}) was removed: messages of this version stay on the "
                         f"retained topic, so its model stays registered ({POLICY})"
                         for name in names]
    for name in sorted(old.keys() & new.keys()):
        was, now = old[name], new[name]
        if was["x-topic"] != now["x-topic"]:
            problems.append(f"{name} moved from {was['x-topic']} to {now['x-topic']}: its messages "
                            f"stay on {was['x-topic']}; a new topic gets new versions ({POLICY})")
            continue
        problems += [f"{name} ({now['x-topic']}): {p}; {remedy}" for p in _diff(was, now, "")]
    for name, schema in sorted(new.items()):
        event_type, version = schema["x-event-type"], schema["x-schema-version"]
        if version == 1:
            continue
        previous = new.get(message_name(event_type, version - 1))
        if previous is None:
            problems.append(f"{name}: version {version - 1} of {event_type} is not registered: "
                            f"every version still on a topic stays registered ({POLICY})")
        elif previous["x-topic"] == schema["x-topic"] and (event_type, version - 1) not in upcasts:
            problems.append(f"{name}: no upcaster from {message_name(event_type, version - 1)} "
                            f"(shared.contracts.common.contract_upcaster): subscribers could not "
                            f"read the older messages as the new version ({POLICY})")
    return problems


# --- AsyncAPI -----------------------------------------------------------------------------------

def key_schema(topic: str) -> Schema:
    """The Kafka message key of `topic`: the stream id of the aggregate the event belongs to."""
    prefixes = KEY_PREFIXES[topic]
    return {"type": "string", "pattern": f"^({'|'.join(prefixes)})-",
            "description": f"the stream id (UTF-8): {KEYS[topic]}. Events of one stream keep "
                           "their order within its partition.",
            "examples": [f"{prefixes[0]}-3f1c2a9e-7b41-4d0e-9a55-2c8e6f1d0b7a"]}


def _topic_binding(topic: str) -> dict:
    fields = ServiceSettings.model_fields
    return {"topic": topic, "partitions": fields["topic_partitions"].default,
            "replicas": fields["topic_replication_factor"].default,
            # kept for ever: subscribers may replay from offset 0 (shared.kafka_acls)
            "topicConfiguration": {"cleanup.policy": ["delete"], "retention.ms": -1},
            "bindingVersion": KAFKA_BINDING}


def _operation_binding() -> dict:
    prefix = agency_group_prefix("<agency>")
    return {"groupId": {
        "type": "string", "pattern": "^[a-z][a-z0-9-]{1,31}\\.",
        "description": f"For receivers: an agency's consumer group id must begin with {prefix} "
                       "(its username and a dot, e.g. `bps.dashboard`); its ACLs allow no "
                       "other group. See docs/agencies.md."},
        "clientId": {"type": "string", "description": "free; naming the agency helps the "
                                                      "operators read the broker's logs"},
        "bindingVersion": KAFKA_BINDING}


def _security_scheme() -> dict:
    return {"type": SECURITY, "description": (
        "SASL/SCRAM-SHA-512 over TLS (Kafka security.protocol SASL_SSL): the username and "
        "password the operator issues with `tkm agency add <agency>`. TLS: the broker's "
        "certificate is signed by the programme's CA; trust its ca.pem (the operator hands it "
        "over with the credentials; KAFKA_CA_FILE for the project's own clients). No PLAINTEXT "
        "listener and no anonymous access; every principal is deny-by-default with ACLs.")}


def _servers() -> dict:
    security = [{"$ref": f"#/components/securitySchemes/{SECURITY}"}]
    return {
        "local": {
            "host": LOCAL_BROKER, "protocol": "kafka-secure", "security": security,
            "description": "Local development: docker-compose's EXTERNAL SASL_SSL listener "
                           "(published on 127.0.0.1:19092 by default; TKM_KAFKA_EXTERNAL_HOST/"
                           "_PORT change what it advertises)."},
        "production": {
            "host": "{host}:{port}", "protocol": "kafka-secure", "security": security,
            "description": "The programme's broker: host and port are given to each agency "
                           "with its credentials and the CA certificate.",
            "variables": {
                "host": {"description": "the broker's public host name (placeholder: the "
                                        "operator supplies it)",
                         "examples": ["kafka.tkm.example.go.id"]},
                "port": {"description": "the EXTERNAL SASL_SSL listener's port",
                         "default": "19092"}}},
    }


def build() -> dict:
    channels, operations, messages, schemas = {}, {}, {}, {}
    envelope = _tolerant(Envelope.model_json_schema())
    envelope["properties"]["payload"] = {"description": "the event's payload, see event_type"}
    schemas["Envelope"] = envelope
    registry = registered_events()
    for name, published in snapshot().items():
        event_type, version = published["x-event-type"], published["x-schema-version"]
        current, topic = published["x-current-version"], published["x-topic"]
        cls = registry[(event_type, version)]
        payload = _tolerant(cls.model_json_schema(ref_template="#/components/schemas/{model}"))
        payload["title"] = event_type
        for sub_name, sub in payload.pop("$defs", {}).items():
            schemas[sub_name] = sub
        schemas[name] = payload
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else event_type
        message = {
            "name": name, "title": f"{event_type} (schema_version {version})",
            "contentType": "application/json", "summary": summary,
            "payload": {"allOf": [{"$ref": "#/components/schemas/Envelope"}, {
                "type": "object", "properties": {
                    "event_type": {"const": event_type},
                    "schema_version": {"const": version},
                    "payload": {"$ref": f"#/components/schemas/{name}"}}}]},
        }
        message["bindings"] = {"kafka": {"key": key_schema(topic),
                                         "bindingVersion": KAFKA_BINDING}}
        if version < current:
            message["description"] = (
                f"No longer produced, still on the retained topic: read it as "
                f"{message_name(event_type, current)} through the upcasters of shared.contracts "
                f"(see {POLICY}).")
            message["x-superseded-by"] = message_name(event_type, current)
        messages[name] = message
        channel = channels.setdefault(topic, {
            "address": topic, "messages": {},
            "description": f"Kafka topic {topic}; message key: {KEYS[topic]}. At-least-once: "
                           "drop duplicates by event_id. Retained for ever: every version of "
                           "every message ever published on it is listed."})
        channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
    for topic in CONTRACT_TOPICS:
        if topic in channels:
            channels[topic]["bindings"] = {"kafka": _topic_binding(topic)}
            # the document describes the programme, which produces these messages: `send`
            # (AsyncAPI 3: an application that sends messages to a channel); subscribers read
            # it from the other side (their operations are `receive`)
            operations[f"send-{topic}"] = {
                "action": "send", "channel": {"$ref": f"#/channels/{topic}"},
                "summary": f"The programme publishes its events on {topic}; agencies receive "
                           "them with their own consumer group.",
                "messages": [{"$ref": f"#/channels/{topic}/messages/{name}"}
                             for name in sorted(channels[topic]["messages"])],
                "bindings": {"kafka": _operation_binding()}}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Kemnaker TKS/TKM programme events", "version": "1.0.0",
                 "description": "Events the programme publishes for other agencies. No topic "
                                "carries personal data (NIK, names, phones, birth dates) or "
                                "free text: only ids and codes. Compatibility policy and "
                                f"changelog: {POLICY}. Subscribers drop duplicates by event_id, "
                                "ignore unknown event types and properties, and pause on a "
                                "schema_version newer than they know."},
        "defaultContentType": "application/json",
        "servers": _servers(),
        "channels": channels, "operations": operations,
        "components": {"messages": messages, "schemas": schemas,
                       "securitySchemes": {SECURITY: _security_scheme()}},
    }


def _dump(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"


def render() -> str:
    return _dump(build())


def render_schemas() -> dict[str, str]:
    """File name -> content of every per-version JSON Schema."""
    return {f"{name}.json": _dump(schema) for name, schema in snapshot().items()}


def main() -> int:
    new = snapshot()
    problems = breaking_changes(load_committed(), new, UPCASTS)
    problems += [p for p in breaking_changes(first_published() or {}, new, UPCASTS)
                 if p not in problems]
    if problems:
        print("the event contract would break its subscribers; nothing written:", file=sys.stderr)
        for problem in problems:
            print(f"- {problem}", file=sys.stderr)
        return 1
    SCHEMAS.mkdir(parents=True, exist_ok=True)
    for file_name, text in render_schemas().items():
        (SCHEMAS / file_name).write_text(text)
    OUT.write_text(render())
    print(f"wrote {OUT} and {len(new)} schemas in {SCHEMAS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
