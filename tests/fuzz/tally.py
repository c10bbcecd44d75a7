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
        self.cases = 0  # generated requests (each sent once per token)
        self.examples = 0  # requests sent
        self.statuses: collections.Counter[int] = collections.Counter()
        self.failures: list[str] = []

    def summary(self) -> str:
        server_errors = sum(n for s, n in self.statuses.items() if s >= 500)
        by_class = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (f"schemathesis: {len(self.operations)} operations, {self.cases} generated cases "
                f"(max_examples={EXAMPLES}{', with the coverage phase' if THOROUGH else ''}), "
                f"{self.examples} requests, 5xx: {server_errors}, check failures: "
                f"{len(self.failures)}; statuses {by_class}")


TALLY = Tally()
