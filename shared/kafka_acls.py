"""Who may do what on the secured broker: the ONE declaration of principals, topics and ACLs,
and the admin functions that apply it (topics, ACLs, SCRAM credentials).

Principals (SASL/SCRAM-SHA-512 usernames; Kafka principal `User:<name>`):
- `broker`, `admin`: the super users (the broker itself, the operator's tools). Nothing else is.
- one per service (`recruitment`, `groups`, `mentoring`, `evaluation`): Write + Describe on its
  own topic and its dead-letter topic only; Read on the topics it consumes (and Describe, which
  Read implies); DescribeConfigs on its own topics (the kernel checks its dead letters' retention);
  its consumer groups PREFIXED on its name (`evaluation`, `evaluation-rebuild`,
  `evaluation-test-<uuid>`); no Create, no cluster rights: the admin creates the topics.
- an agency (`tkm agency add NAME`): Read + Describe on the four contract topics, consumer
  groups PREFIXED with `NAME.`; no Write anywhere, never a dead-letter or internal topic.

Idempotent producing needs no IdempotentWrite on the cluster since Kafka 2.8 (KIP-679): Write
on a topic is enough for InitProducerId, so none is granted (the tests produce idempotently).

Why the admin operations are written with aiokafka's protocol classes rather than Kafka's Java
`AclCommand`/`ConfigCommand` (kafka-tools): aiokafka 0.14's admin client has no create_acls nor
AlterUserScramCredentials, but its protocol layer has CreateAcls/DescribeAcls/DeleteAcls v1 and
flexible-version (compact, tagged) structs, so the two SCRAM requests are ~40 lines of schema
below. That keeps one client stack (the same SASL_SSL connection code as the services), costs no
JVM start per call (onboarding one agency is one connection, not four 2-second JVMs), needs no
extra jars in the Maven cache that every running broker and test run share, and errors come back
as Kafka error codes we can turn into one clear line. Both request families are stable public
protocol (KIP-554 for SCRAM, KIP-140 for ACLs); the integration tests exercise every one of them
against the real 4.1.1 broker, so a protocol drift would fail loudly there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeAlias

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from aiokafka.protocol.admin import (
    CreateAclsRequest_v1,
    DeleteAclsRequest_v1,
    DescribeAclsRequest_v1,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int8,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

# ---------------------------------------------------------------- the declaration

CONTRACT_TOPICS = ("tkm.recruitment.v1", "tkm.groups.v1", "tkm.mentoring.v1", "tkm.evaluation.v1")


def own_topic(service: str) -> str:
    return f"tkm.{service}.v1"


def dead_letter_topic(service: str) -> str:
    return f"tkm.{service}.dlq.v1"


# service -> the topics it consumes (checked against services/*/app.py `consumes=` by a test)
SERVICES: dict[str, tuple[str, ...]] = {
    "recruitment": ("tkm.evaluation.v1",),
    "groups": (),
    "mentoring": ("tkm.recruitment.v1", "tkm.groups.v1"),
    "evaluation": ("tkm.recruitment.v1", "tkm.groups.v1", "tkm.mentoring.v1"),
}
SUPER_USERS = ("broker", "admin")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def declared_topics(partitions: int | None = None, replication_factor: int = 1) -> list[TopicSpec]:
    """Every topic the project runs on: the four contract topics and the four dead-letter topics,
    all kept for ever (agencies replay contract topics from offset 0; a dead letter stays
    replayable however late). Partitions are chosen once per topic (a change reshuffles keys)."""
    partitions = partitions or int(os.environ.get("TKM_TOPIC_PARTITIONS", "6"))
    config = {"retention.ms": "-1"}
    if replication_factor > 1:
        config["min.insync.replicas"] = "2"
    names = [*CONTRACT_TOPICS, *(dead_letter_topic(s) for s in SERVICES)]
    return [TopicSpec(n, partitions, dict(config)) for n in names]


class ResourceType(IntEnum):
    ANY, TOPIC, GROUP, CLUSTER = 1, 2, 3, 4


class PatternType(IntEnum):
    ANY, MATCH, LITERAL, PREFIXED = 1, 2, 3, 4


class Operation(IntEnum):
    ANY, ALL, READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE = 1, 2, 3, 4, 5, 6, 7, 8
    CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE = 9, 10, 11, 12


ALLOW = 3  # AclPermissionType.ALLOW
ANY_PERMISSION = 1


@dataclass(frozen=True, order=True)
class AclBinding:
    principal: str  # "User:<name>"
    resource_type: ResourceType
    resource_name: str
    pattern: PatternType
    operation: Operation
    host: str = "*"

    def __str__(self) -> str:
        return (f"{self.principal} {self.operation.name} {self.resource_type.name} "
                f"{self.resource_name} ({self.pattern.name})")


def _topic(principal: str, topic: str, *ops: Operation) -> list[AclBinding]:
    return [AclBinding(principal, ResourceType.TOPIC, topic, PatternType.LITERAL, op) for op in ops]


def _group_prefix(principal: str, prefix: str) -> list[AclBinding]:
    return [AclBinding(principal, ResourceType.GROUP, prefix, PatternType.PREFIXED, Operation.READ)]


def service_acls(service: str) -> list[AclBinding]:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}")
    p = f"User:{service}"
    acls: list[AclBinding] = []
    for topic in (own_topic(service), dead_letter_topic(service)):
        acls += _topic(p, topic, Operation.WRITE, Operation.DESCRIBE, Operation.DESCRIBE_CONFIGS)
    for topic in SERVICES[service]:
        acls += _topic(p, topic, Operation.READ, Operation.DESCRIBE)
    return acls + _group_prefix(p, service)


AGENCY_NAME = re.compile(r"^[a-z][a-z0-9-]{1,31}$")


def check_agency_name(name: str) -> str:
    """An agency's name is its username and its consumer group prefix (`name.`): lowercase
    letters, digits and '-', 2-32 characters, starting with a letter; never a reserved principal
    nor beginning with a service's name (whose group prefixes would then cover the agency's)."""
    if not AGENCY_NAME.match(name):
        raise ValueError(f"agency name {name!r} must be 2-32 characters of a-z, 0-9 and '-', "
                         "starting with a letter")
    reserved = (*SUPER_USERS, *SERVICES, "tkm", "kafka")
    if any(name.startswith(r) for r in reserved):
        raise ValueError(f"agency name {name!r} is reserved (it may not begin with "
                         f"{', '.join(reserved)})")
    return name


def agency_group_prefix(agency: str) -> str:
    return f"{agency}."


def agency_acls(agency: str) -> list[AclBinding]:
    p = f"User:{check_agency_name(agency)}"
    acls: list[AclBinding] = []
    for topic in CONTRACT_TOPICS:
        acls += _topic(p, topic, Operation.READ, Operation.DESCRIBE)
    return acls + _group_prefix(p, agency_group_prefix(agency))


def all_service_acls() -> list[AclBinding]:
    return [acl for service in SERVICES for acl in service_acls(service)]


# ---------------------------------------------------------------- SCRAM requests (KIP-554)

SCRAM_SHA_512 = 2  # ScramMechanism code
SCRAM_ITERATIONS = 8192  # Kafka's minimum is 4096
RESOURCE_NOT_FOUND = 91  # Errors.RESOURCE_NOT_FOUND (aiokafka has no class for it)


class DescribeUserScramCredentialsResponse_v0(Response):
    API_KEY = 50
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", CompactString("utf-8")),
        ("results", CompactArray(
            ("user", CompactString("utf-8")),
            ("error_code", Int16),
            ("error_message", CompactString("utf-8")),
            ("credential_infos", CompactArray(
                ("mechanism", Int8), ("iterations", Int32), ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class DescribeUserScramCredentialsRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 50
    API_VERSION = 0
    RESPONSE_TYPE = DescribeUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        ("users", CompactArray(("name", CompactString("utf-8")), ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class DescribeUserScramCredentials(Request[DescribeUserScramCredentialsRequest_v0]):
    API_KEY = 50

    def __init__(self, users: list[str] | None):
        self._users = users

    def build(self, request_struct_class: type[DescribeUserScramCredentialsRequest_v0]
              ) -> DescribeUserScramCredentialsRequest_v0:
        users = None if self._users is None else [(u, {}) for u in self._users]
        return request_struct_class(users, {})


class AlterUserScramCredentialsResponse_v0(Response):
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("results", CompactArray(
            ("user", CompactString("utf-8")),
            ("error_code", Int16),
            ("error_message", CompactString("utf-8")),
            ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentialsRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = AlterUserScramCredentialsResponse_v0
    SCHEMA = Schema(
        ("deletions", CompactArray(
            ("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields))),
        ("upsertions", CompactArray(
            ("name", CompactString("utf-8")),
            ("mechanism", Int8),
            ("iterations", Int32),
            ("salt", CompactBytes),
            ("salted_password", CompactBytes),
            ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )


class AlterUserScramCredentials(Request[AlterUserScramCredentialsRequest_v0]):
    API_KEY = 51

    def __init__(self, deletions: list[str], upsertions: dict[str, str]):
        self._deletions = deletions
        self._upsertions = upsertions

    def build(self, request_struct_class: type[AlterUserScramCredentialsRequest_v0]
              ) -> AlterUserScramCredentialsRequest_v0:
        upserts = []
        for name, password in self._upsertions.items():
            salt = secrets.token_bytes(32)
            # what Kafka's own admin client sends: Hi(password, salt, i) of RFC 5802 (PBKDF2);
            # the broker derives the stored and server keys from it, the password never travels
            salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, SCRAM_ITERATIONS)
            upserts.append((name, SCRAM_SHA_512, SCRAM_ITERATIONS, salt, salted, {}))
        deletions = [(name, SCRAM_SHA_512, {}) for name in self._deletions]
        return request_struct_class(deletions, upserts, {})


# ---------------------------------------------------------------- ACL requests (KIP-140)


class _CreateAcls(Request[CreateAclsRequest_v1]):
    API_KEY = 30

    def __init__(self, acls: Iterable[AclBinding]):
        self._acls = list(acls)

    def build(self, request_struct_class: type[CreateAclsRequest_v1]) -> CreateAclsRequest_v1:
        return request_struct_class([
            (a.resource_type, a.resource_name, a.pattern, a.principal, a.host, a.operation, ALLOW)
            for a in self._acls])


class _DescribeAcls(Request[DescribeAclsRequest_v1]):
    API_KEY = 29

    def __init__(self, principal: str | None):
        self._principal = principal

    def build(self, request_struct_class: type[DescribeAclsRequest_v1]) -> DescribeAclsRequest_v1:
        return request_struct_class(ResourceType.ANY, None, PatternType.ANY, self._principal,
                                    None, Operation.ANY, ANY_PERMISSION)


class _DeleteAcls(Request[DeleteAclsRequest_v1]):
    API_KEY = 31

    def __init__(self, principal: str):
        self._principal = principal

    def build(self, request_struct_class: type[DeleteAclsRequest_v1]) -> DeleteAclsRequest_v1:
        return request_struct_class([(ResourceType.ANY, None, PatternType.ANY, self._principal,
                                      None, Operation.ANY, ANY_PERMISSION)])


class KafkaAdminError(RuntimeError):
    """The broker refused an admin request; the message is one line."""


def _raise_for(code: int, message: str | None, what: str) -> None:
    if code:
        name = for_code(code).__name__
        raise KafkaAdminError(f"{what}: {name}" + (f" ({message})" if message else ""))


Admin: TypeAlias = AIOKafkaAdminClient


async def _send(admin: Admin, request: Request[Any]) -> Any:
    return await admin._send_request(request)


async def create_acls(admin: Admin, acls: Iterable[AclBinding]) -> None:
    """Create the bindings (creating an existing one again is a no-op on the broker)."""
    acls = list(acls)
    if not acls:
        return
    response = await _send(admin, _CreateAcls(acls))
    for acl, (code, message) in zip(acls, response.creation_responses, strict=True):
        _raise_for(code, message, f"creating ACL {acl}")
    # the controller has committed them; the broker's authorizer applies them a moment later
    # (metadata propagation): return only once it answers with them, so they are in force
    await _until(admin, lambda found: set(acls) <= found, "the new ACLs to take effect")


async def _until(admin: Admin, done, what: str, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = {dataclasses.replace(a, host="*") for a in await describe_acls(admin)}
        if done(found):
            return
        if loop.time() > deadline:
            raise KafkaAdminError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def describe_acls(admin: Admin, principal: str | None = None) -> list[AclBinding]:
    response = await _send(admin, _DescribeAcls(principal))
    _raise_for(response.error_code, response.error_message, "describing ACLs")
    found = []
    for rtype, name, pattern, acls in response.resources:
        for who, host, op, permission in acls:
            if permission == ALLOW:
                found.append(AclBinding(who, ResourceType(rtype), name, PatternType(pattern),
                                        Operation(op), host))
    return sorted(found)


async def delete_acls(admin: Admin, principal: str) -> int:
    """Delete every ACL of `principal`; returns how many were deleted."""
    response = await _send(admin, _DeleteAcls(principal))
    deleted = 0
    for code, message, matching in response.filter_responses:
        _raise_for(code, message, f"deleting the ACLs of {principal}")
        deleted += len(matching)
    await _until(admin, lambda found: not any(a.principal == principal for a in found),
                 f"the deletion of {principal}'s ACLs to take effect")
    return deleted


async def scram_users(admin: Admin) -> list[str]:
    """Every user with SCRAM credentials on the cluster."""
    response = await _send(admin, DescribeUserScramCredentials(None))
    _raise_for(response.error_code, response.error_message, "describing SCRAM users")
    return sorted(user for user, code, _msg, _infos, _tags in response.results if not code)


async def upsert_scram(admin: Admin, users: dict[str, str]) -> None:
    """Create or replace the SCRAM-SHA-512 credentials of `users` (name -> password)."""
    response = await _send(admin, AlterUserScramCredentials([], users))
    for user, code, message, _tags in response.results:
        _raise_for(code, message, f"setting the SCRAM credentials of {user}")


async def delete_scram(admin: Admin, user: str) -> bool:
    """Delete `user`'s SCRAM-SHA-512 credentials; False when it had none."""
    response = await _send(admin, AlterUserScramCredentials([user], {}))
    for _user, code, message, _tags in response.results:
        if code == RESOURCE_NOT_FOUND:
            return False
        _raise_for(code, message, f"deleting the SCRAM credentials of {user}")
    return True


async def ensure_declared_topics(admin: Admin, replication_factor: int = 1) -> list[str]:
    """Create the declared topics that are missing; existing ones are left as they are."""
    existing = set(await admin.list_topics())
    created = []
    for spec in declared_topics(replication_factor=replication_factor):
        if spec.name in existing:
            continue
        try:
            response = await admin.create_topics(
                [NewTopic(spec.name, spec.partitions, replication_factor,
                          topic_configs=spec.config)])
        except TopicAlreadyExistsError:
            continue
        for topic_error in getattr(response, "topic_errors", []):
            code = topic_error[1]
            if code and for_code(code).__name__ != "TopicAlreadyExistsError":
                _raise_for(code, topic_error[2] if len(topic_error) > 2 else None,
                           f"creating topic {spec.name}")
        created.append(spec.name)
    return created


async def apply_declarations(bootstrap: str, client: dict[str, Any],
                             replication_factor: int = 1) -> None:
    """With the admin principal (`client`: aiokafka security kwargs): create the declared
    topics and the services' ACLs. Idempotent; agencies' ACLs are left untouched."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000, **client)
    await admin.start()
    try:
        await ensure_declared_topics(admin, replication_factor)
        await create_acls(admin, all_service_acls())
    finally:
        await admin.close()
