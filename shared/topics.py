"""Topic names and their creation by the project (the broker never auto-creates them)."""

from __future__ import annotations

import logging

from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    for_code,
)

log = logging.getLogger("tkm.topics")

RECRUITMENT = "tkm.recruitment.v1"
GROUPS = "tkm.groups.v1"
MENTORING = "tkm.mentoring.v1"
EVALUATION = "tkm.evaluation.v1"
CONTRACT_TOPICS = (RECRUITMENT, GROUPS, MENTORING, EVALUATION)


def dead_letter_topic(service: str) -> str:
    return f"tkm.{service}.dlq.v1"


def is_dead_letter_topic(topic: str) -> bool:
    return topic.startswith("tkm.") and topic.endswith(".dlq.v1")


async def ensure_topics(bootstrap: str, topics: list[str] | tuple[str, ...], *, partitions: int,
                        replication_factor: int, client: dict[str, Any] | None = None) -> list[str]:
    """Create the missing topics with the given partitions and replication; an existing topic is
    left as it is (its partition count is never changed: that would reshuffle keys). The
    contract topics keep their events forever: agencies may replay them from the start; so do
    the dead-letter topics (a letter is replayable until it is replayed, however late), and an
    existing dead-letter topic still on a finite retention is switched to unlimited.
    Returns the topics created now. `client`: the authentication kwargs of the admin client
    (`KafkaSecurity.admin_kwargs()`). On the secured broker a service has no Create right: the
    admin creates every declared topic at `infra up` (shared/kafka_acls.py), so a service only
    lists them, and a missing one is an error naming it. Without `client`, the settings of the
    environment's plain `KAFKA_*` variables (shared.kafka_security)."""
    if client is None:
        from shared.kafka_security import kafka_security

        client = kafka_security().admin_kwargs()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000, **client)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        created = []
        for topic in missing:
            try:
                response = await admin.create_topics([NewTopic(
                    topic, partitions, replication_factor,
                    topic_configs=_config(topic, replication_factor))])
            except TopicAlreadyExistsError:
                continue  # another service created it meanwhile
            codes = [e[1] for e in getattr(response, "topic_errors", ()) if e[1]]
            if TopicAuthorizationFailedError.errno in codes:
                raise TopicAuthorizationFailedError(
                    f"topic {topic} does not exist and this principal may not create it: the "
                    "admin creates the declared topics (python -m scripts.infra up)")
            if codes and codes[0] != TopicAlreadyExistsError.errno:
                raise for_code(codes[0])(f"creating topic {topic}")
            if not codes:
                created.append(topic)
        if created:
            log.info("created topics %s", created)
        await _keep_letters_forever(admin, [t for t in dict.fromkeys(topics)
                                            if t in existing and is_dead_letter_topic(t)],
                                    replication_factor)
        return created
    finally:
        await admin.close()


async def _keep_letters_forever(admin: AIOKafkaAdminClient, topics: list[str],
                                replication_factor: int) -> None:
    """Dead-letter topics created before letters were kept forever: unlimited retention now.
    A broker that refuses (no AlterConfigs right) is logged, not fatal."""
    if not topics:
        return
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t, {"retention.ms": None}) for t in topics])
        finite = [resource[3] for response in described for resource in response.resources
                  if any(entry[0] == "retention.ms" and entry[1] != "-1"
                         for entry in resource[4])]
        if not finite:
            return
        # AlterConfigs replaces a topic's dynamic configuration: give it all of ours
        responses = await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t, _config(t, replication_factor))
             for t in finite])
        refused = [f"{r[3]}: {r[1] or r[0]}" for response in responses
                   for r in response.resources if r[0] != 0]
        if refused:
            log.warning("could not keep dead letters forever: %s", "; ".join(refused))
        else:
            log.info("dead-letter topics now keep their letters forever: %s", finite)
    except KafkaError as exc:
        log.warning("could not check the retention of dead-letter topics %s: %r", topics, exc)


# on a cluster (replication factor 3, docs/cluster.md) a write acknowledged by acks=all is on at
# least two brokers, and the topic stays writable with one broker down
MIN_INSYNC_REPLICAS = 2


def _config(topic: str, replication_factor: int) -> dict[str, str]:
    # contract topics are replayed by agencies, dead letters by operators: both kept for ever
    config = ({"retention.ms": "-1"}
              if topic in CONTRACT_TOPICS or is_dead_letter_topic(topic) else {})
    # a topic of one replica (the tests' own) says 1: on a cluster, whose brokers default to
    # two, acks=all could never write it otherwise
    config["min.insync.replicas"] = str(MIN_INSYNC_REPLICAS if replication_factor > 1 else 1)
    return config
