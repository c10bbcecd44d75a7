"""The published event contract: one module per topic. Importing this package registers every
published event type. Payloads carry ids and region codes, never personal data."""

from shared.contracts import evaluation, groups, mentoring, recruitment  # noqa: F401
