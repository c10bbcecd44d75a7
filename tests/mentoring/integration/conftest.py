import pytest

from tests.mentoring.integration.mentoring_helpers import running_mentoring


@pytest.fixture
async def mentoring(infra, database_url):
    """The service in a database and consumer group of its own, automatic closing off."""
    async with running_mentoring(infra.kafka_bootstrap, database_url) as service:
        yield service
