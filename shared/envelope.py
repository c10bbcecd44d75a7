"""The event envelope and the registry of event types.

Every event, stored or published, travels in an `Envelope`. Its payload is a versioned pydantic
model registered here under (event_type, schema_version); `decode` turns bytes into a typed event
or raises `ContractError` with the reason, never falling back to a default. Old versions are
upcast step by step to the current one.

Strict where we write, tolerant where we read: constructing an `Envelope` or an `Event` in code
refuses unknown fields (a typo, or personal data slipped into a published payload), while
`decode_envelope`, `parse_payload` and `decode` ignore fields they do not know, at any depth, so
a producer that added an optional field is still understood (and the unknown field never reaches
our stores). A `schema_version` newer than the registered one raises `NewerVersionError`: the
reader is the one behind, and the event is not wrong.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Container
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must carry a time zone (UTC)")
    return value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]


def utcnow() -> datetime:
    return datetime.now(UTC)


def json_text(value: Any) -> str:
    """`value` as compact JSON text, for a jsonb parameter or a stored payload: orjson, several
    times faster than the standard library on the write paths (dict keys that are not strings
    become strings, as `json.dumps` makes them)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


class ContractError(ValueError):
    """An event that does not honour the published contract (unknown type, bad payload)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class NewerVersionError(ContractError):
    """The event is of a version newer than this process knows: upgrade the reader."""


class Event(BaseModel):
    """Base of every event payload. Subclasses set `event_type`, `schema_version` and, when the
    event is published, `topic`. Payloads of published events must carry no personal data."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    topic: ClassVar[str | None] = None


class Envelope(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    event_id: uuid.UUID
    event_type: str = Field(min_length=1)
    schema_version: int = Field(ge=1)
    occurred_at: UtcDateTime
    stream_id: str = Field(min_length=1)
    stream_version: int = Field(ge=1)
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    producer: str = Field(min_length=1)
    actor: str = Field(min_length=1)
    payload: dict[str, Any]


E = TypeVar("E", bound=type[Event])
_REGISTRY: dict[tuple[str, int], type[Event]] = {}
_CURRENT: dict[str, int] = {}
_UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def register(cls: E) -> E:
    """Class decorator: make an event type decodable. Registering the same type and version
    twice with another class raises ValueError."""
    key = (cls.event_type, cls.schema_version)
    if _REGISTRY.get(key, cls) is not cls:
        raise ValueError(f"event {key} is registered twice")
    _REGISTRY[key] = cls
    _CURRENT[cls.event_type] = max(_CURRENT.get(cls.event_type, 0), cls.schema_version)
    return cls


def upcaster(event_type: str, from_version: int):
    """Decorator for a function turning a payload of `from_version` into `from_version + 1`."""

    def wrap(fn: Callable[[dict[str, Any]], dict[str, Any]]):
        _UPCASTERS[(event_type, from_version)] = fn
        return fn

    return wrap


def event_class(event_type: str, version: int | None = None) -> type[Event]:
    version = version or _CURRENT.get(event_type)
    cls = _REGISTRY.get((event_type, version or 0))
    if cls is None:
        raise ContractError(f"unknown event type {event_type!r} version {version}")
    return cls


def current_version(event_type: str) -> int | None:
    """The schema version events of this type are upcast to, or None for an unknown type."""
    return _CURRENT.get(event_type)


def registered_events() -> dict[tuple[str, int], type[Event]]:
    return dict(_REGISTRY)


def parse_payload(envelope: Envelope) -> Event:
    """Validate the payload against its registered model, upcasting old versions first.
    Raises ContractError naming the type and what is wrong."""
    version, payload = envelope.schema_version, dict(envelope.payload)
    current = _CURRENT.get(envelope.event_type)
    if current is None:
        raise ContractError(f"unknown event type {envelope.event_type!r}")
    if version > current:
        raise NewerVersionError(
            f"{envelope.event_type} version {version} is newer than {current}")
    while version < current:
        step = _UPCASTERS.get((envelope.event_type, version))
        if step is None:
            raise ContractError(f"no upcaster for {envelope.event_type} v{version}")
        payload, version = step(payload), version + 1
    cls = event_class(envelope.event_type, version)
    try:
        # through JSON: strict mode then accepts ISO dates and UUID strings, but no "5" for 5;
        # fields a newer producer added are dropped, at every depth
        return cls.model_validate_json(orjson.dumps(payload), extra="ignore")
    except ValidationError as exc:
        raise ContractError(f"{envelope.event_type}: {_first_error(exc)}") from exc


def decode_envelope(raw: bytes | str) -> Envelope:
    """Bytes from a topic -> the envelope alone (the payload stays a dict, unchecked), so a
    reader can decide whether it wants the event before parsing it. Unknown envelope fields are
    ignored. Raises ContractError for what is not an envelope."""
    try:
        return Envelope.model_validate_json(raw, extra="ignore")
    except ValidationError as exc:
        raise ContractError(f"malformed envelope: {_first_error(exc)}") from exc


def decode(raw: bytes | str) -> tuple[Envelope, Event]:
    """Bytes from a topic -> (envelope, typed payload). Raises ContractError (NewerVersionError
    for a version this process does not know yet)."""
    envelope = decode_envelope(raw)
    return envelope, parse_payload(envelope)


# what `decode_wanted` peeks at to choose the model; the model then checks what it peeked
_PEEK_TYPE = re.compile(rb'"event_type"\s*:\s*"([^"\\]+)"')
_PEEK_VERSION = re.compile(rb'"schema_version"\s*:\s*(\d+)')
_TYPED: dict[type[Event], type[Envelope]] = {}


def _typed_envelope(cls: type[Event]) -> type[Envelope]:
    """An Envelope whose `event` field is the payload validated as `cls`, in the same pass that
    keeps `payload` as a dict (both read the document's "payload")."""
    model = _TYPED.get(cls)
    if model is None:
        model = create_model(f"{cls.__name__}Envelope", __base__=Envelope,
                             event=(cls, Field(validation_alias="payload", exclude=True,
                                               repr=False)))
        _TYPED[cls] = model
    return model


def decode_wanted(raw: bytes | None, wanted: Container[str]) -> tuple[Envelope, Event] | None:
    """Bytes from a topic -> (envelope, typed payload) in ONE pass over the document, for an
    event of a `wanted` type at its current version; the same answer, field for field, as
    `decode` (strict JSON, unknown fields ignored at every depth). None for anything else: a
    type not wanted, another version, a record that does not validate; the caller then takes
    the general path (`decode_envelope`, `parse_payload`), which gives the reason."""
    if not raw:
        return None
    peeked_type, peeked_version = _PEEK_TYPE.search(raw), _PEEK_VERSION.search(raw)
    if peeked_type is None or peeked_version is None:
        return None
    event_type, version = peeked_type.group(1).decode(errors="replace"), int(peeked_version.group(1))
    if event_type not in wanted or _CURRENT.get(event_type) != version:
        return None
    cls = _REGISTRY[(event_type, version)]
    try:
        envelope = _typed_envelope(cls).model_validate_json(raw, extra="ignore")
    except ValidationError:
        return None
    # the peek may have read a payload's field: only the envelope's own type and version count
    if envelope.event_type != event_type or envelope.schema_version != version:
        return None
    return envelope, envelope.event  # type: ignore[attr-defined]


def encode(envelope: Envelope) -> bytes:
    return envelope.model_dump_json().encode()


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(root)"
    return f"{where}: {err['msg']}"


def new_id() -> uuid.UUID:
    return uuid.uuid4()
