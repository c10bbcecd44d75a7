"""`make bench`: each hot path beside its ceiling and the `eventsourcing` peer (bench/README.md)."""
