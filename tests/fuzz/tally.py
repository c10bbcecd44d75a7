"""What the property-based run did, printed at the end of the session."""

from __future__ import annotations

import collections
import os

# `make test` runs a few examples per operation; `make fuzz` sets TKM_FUZZ_EXAMPLES higher
EXAMPLES = int(os.environ.get("TKM_FUZZ_EXAMPLES", "3"))
THOROUGH = EXAMPLES > 10


class Tally:
    def __init__(self) -> None:
        self.operations: set[str] = set()
        self.examples = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.failures: list[str] = []

    def summary(self) -> str:
        server_errors = sum(n for s, n in self.statuses.items() if s >= 500)
        by_class = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (f"schemathesis: {len(self.operations)} operations, {self.examples} requests "
                f"({EXAMPLES} examples per operation and token), 5xx: {server_errors}, "
                f"check failures: {len(self.failures)}; statuses {by_class}")


TALLY = Tally()
