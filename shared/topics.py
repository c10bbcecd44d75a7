"""Topic names and their creation by the project (the broker never auto-creates them)."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger("tkm.topics")

RECRUITMENT = "tkm.recruitment.v1"
GROUPS = "tkm.groups.v1"
MENTORING = "tkm.mentoring.v1"
EVALUATION = "tkm.evaluation.v1"
CONTRACT_TOPICS = (RECRUITMENT, GROUPS, MENTORING, EVALUATION)


def dead_letter_topic(service: str) -> str:
    return f"tkm.{service}.dlq.v1"


async def ensure_topics(bootstrap: str, topics: list[str] | tuple[str, ...], *, partitions: int,
                        replication_factor: int) -> list[str]:
    """Create the missing topics with the given partitions and replication; an existing topic is
    left as it is (its partition count is never changed: that would reshuffle keys). The
    contract topics keep their events forever: agencies may replay them from the start.
    Returns the topics created now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        created = []
        for topic in missing:
            try:
                await admin.create_topics([NewTopic(topic, partitions, replication_factor,
                                                    topic_configs=_config(topic, replication_factor))])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass  # another service created it meanwhile
        if created:
            log.info("created topics %s", created)
        return created
    finally:
        await admin.close()


def _config(topic: str, replication_factor: int) -> dict[str, str]:
    config = {"retention.ms": "-1"} if topic in CONTRACT_TOPICS else {}
    if replication_factor > 1:
        config["min.insync.replicas"] = "2"
    return config
