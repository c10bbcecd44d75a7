"""The fault suite's conservation checks (scripts/faults.py) can fail: each is fed a clean record
(it passes) and a doctored one (an event applied twice, an outbox row never published, a funding
applied twice, a rebuild that differs, ...), and must say so with the figures."""

from __future__ import annotations

from scripts.faults import (
    FUNDING,
    check_applied_once,
    check_commands,
    check_cross_counts,
    check_dlq,
    check_outbox_on_topics,
    check_rebuild,
    check_settled,
    check_workload,
)

G, M = "tkm.groups.v1", "tkm.mentoring.v1"
CONSUMES = {"groups": (), "mentoring": (G,), "evaluation": (G, M)}
ON_TOPIC = {G: ["g1", "g2", "g3"], M: ["m1"]}


def _inbox(**doctor) -> dict[str, list[tuple[str, str, str]]]:
    inbox = {"mentoring": [(e, G, "applied") for e in ON_TOPIC[G]],
             "evaluation": [(e, G, "applied") for e in ON_TOPIC[G]] + [("m1", M, "ignored")]}
    for service, rows in doctor.items():
        inbox[service] = rows(inbox[service])
    return inbox


def test_applied_once_passes_on_a_clean_record():
    check = check_applied_once(CONSUMES, ON_TOPIC, _inbox())
    assert check.passed, check.figures
    assert "mentoring 3/3" in check.figures and "evaluation 4/4" in check.figures


def test_an_event_applied_twice_fails():
    check = check_applied_once(CONSUMES, ON_TOPIC, _inbox(mentoring=lambda r: [*r, r[0]]))
    assert not check.passed
    assert "twice 1" in check.figures


def test_an_event_never_applied_or_dead_lettered_fails():
    missing = check_applied_once(CONSUMES, ON_TOPIC, _inbox(evaluation=lambda r: r[1:]))
    assert not missing.passed and "missing 1" in missing.figures
    dead = check_applied_once(CONSUMES, ON_TOPIC, _inbox(
        evaluation=lambda r: [(e, t, "dead-lettered" if e == "g2" else o) for e, t, o in r]))
    assert not dead.passed and "not applied 1" in dead.figures


def test_an_applied_event_the_topic_does_not_hold_fails():
    unknown = ("x", G, "applied")
    check = check_applied_once(CONSUMES, ON_TOPIC, _inbox(mentoring=lambda r: [*r, unknown]))
    assert not check.passed and "unknown 1" in check.figures


def test_outbox_rows_on_topics():
    outbox = {"groups": [(e, G) for e in ON_TOPIC[G]], "mentoring": [("m1", M)]}
    assert check_outbox_on_topics(outbox, ON_TOPIC).passed
    # a repeat on the topic (the relay is at least once) is shown, not failed
    repeated = check_outbox_on_topics(outbox, {**ON_TOPIC, G: ON_TOPIC[G] + ["g1"]})
    assert repeated.passed and "sent twice (at least once) 1" in repeated.figures
    lost = check_outbox_on_topics({**outbox, "mentoring": [("m1", M), ("m2", M)]}, ON_TOPIC)
    assert not lost.passed and "missing 1" in lost.figures
    stray = check_outbox_on_topics(outbox, {**ON_TOPIC, M: ["m1", "m9"]})
    assert not stray.passed and "on a topic without a row 1" in stray.figures


def test_commands_in_the_read_model():
    expected = {"tks": {"t1"}, "groups": {"a", "b"}, "funded": {"a"}, "reports": 5}
    found = {"tks": {"t1"}, "groups": {"a", "b", "c"}, "tranches": {"a": (1, FUNDING)},
             "reports": 5}
    assert check_commands(expected, found).passed
    doubled = check_commands(expected, {**found, "tranches": {"a": (2, 2 * FUNDING)}})
    assert not doubled.passed and "funded once 0/1" in doubled.figures
    lost = check_commands(expected, {**found, "groups": {"a"}})
    assert not lost.passed and "groups 1/2" in lost.figures
    assert not check_commands(expected, {**found, "reports": 6}).passed


def test_cross_counts_rebuild_dlq_settled_and_workload():
    assert check_cross_counts({"groups funded": {"groups": 3, "mentoring": 3}}).passed
    unequal = check_cross_counts({"groups funded": {"groups": 3, "mentoring": 4}})
    assert not unequal.passed and "3 (groups)=4 (mentoring)" in unequal.figures

    live = {"groups": {"group_registry": [("a", 1)]}}
    assert check_rebuild(live, live).passed
    differ = check_rebuild(live, {"groups": {"group_registry": [("a", 2)]}})
    assert not differ.passed and "groups.group_registry" in differ.figures

    assert check_dlq({"groups": 0}, {"groups": 0}).passed
    assert not check_dlq({"groups": 1}, {"groups": 0}).passed
    assert not check_dlq({"groups": 0}, {"evaluation": 2}).passed

    zero = {"ready": True, "lag": 0, "backlog": 0}
    assert check_settled({"groups": zero}).passed
    assert not check_settled({"groups": {**zero, "lag": 3}}).passed
    assert not check_settled({"groups": {**zero, "ready": False}}).passed

    assert check_workload(None, [], 0).passed
    lost = check_workload(None, [], 2, "stopped after ['recruitment'] by a lost answer")
    assert lost.passed and "lost answer" in lost.figures and "(409, applied once): 2" in lost.figures
    assert not check_workload("SimulationError: refused", [], 0).passed
    assert not check_workload(None, ["POST /groups/fundings -> 422"], 0).passed
