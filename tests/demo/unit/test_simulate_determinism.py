"""The simulator's choice of mentors depends on the scenario only, never on the ids the services
made up (issue 17: the same seed, the same year)."""

from __future__ import annotations

import uuid

import pytest

from scripts.simulate import SimulationError, balanced_mentors

GROUPS = [(f"g{i}", "3201" if i % 3 else "3202") for i in range(10)]


def _mentors(names: dict[str, str]) -> dict[str, list[str]]:
    """The scenario's TKS (a, b, c in 3201; d in 3202) under the ids a run handed out."""
    return {"3201": [names["a"], names["b"], names["c"]], "3202": [names["d"]]}


def test_the_same_tks_get_the_same_groups_whatever_ids_they_were_given():
    choices = []
    for _ in range(5):  # fresh random ids each run, as recruitment hands them out
        names = {k: str(uuid.uuid4()) for k in "abcd"}
        by_id = {v: k for k, v in names.items()}
        choice = balanced_mentors(GROUPS, _mentors(names), {}, cap=25)
        choices.append({g: by_id[t] for g, t in choice.items()})
    assert all(c == choices[0] for c in choices)
    # the lightest first, ties to the first in the scenario's order
    assert [choices[0][f"g{i}"] for i in (1, 2, 4, 5, 7, 8)] == ["a", "b", "c", "a", "b", "c"]
    assert {choices[0][f"g{i}"] for i in (0, 3, 6, 9)} == {"d"}


def test_ties_go_to_the_scenario_order_not_to_the_smaller_id():
    choice = balanced_mentors([("g1", "3201")], {"3201": ["zzz", "aaa"]}, {}, cap=25)
    assert choice == {"g1": "zzz"}


def test_caseloads_before_count_and_the_cap_holds():
    mentors = {"3201": ["a", "b"]}
    choice = balanced_mentors([("g1", "3201"), ("g2", "3201"), ("g3", "3201")], mentors,
                              {"a": 2, "b": 0}, cap=3)
    assert choice == {"g1": "b", "g2": "b", "g3": "a"}
    with pytest.raises(SimulationError, match="no TKS in regency 3201"):
        balanced_mentors([("g1", "3201"), ("g2", "3201")], mentors, {"a": 3, "b": 2}, cap=3)


def test_a_regency_without_tks_is_an_error():
    with pytest.raises(SimulationError, match="regency 3202"):
        balanced_mentors([("g1", "3202")], {"3201": ["a"]}, {}, cap=25)
