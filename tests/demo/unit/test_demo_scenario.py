from collections import Counter

from scripts.scenario import TARGETS_2023, build
from shared.nik import parse_nik
from shared.regions import province_of


def test_the_default_scenario_has_the_2023_figures():
    scenario = build(seed=7)
    for plan, target in zip(scenario.stages, TARGETS_2023, strict=True):
        assert plan.tks_count == target.tks
        assert len(plan.regencies) == target.regencies
        assert plan.group_count == target.groups
        assert all(len(r.tks) >= 1 for r in plan.regencies)
    codes = [r.code for s in scenario.stages for r in s.regencies]
    assert len(codes) == len(set(codes)), "a regency belongs to one stage only"


def test_the_west_gets_more_than_the_east():
    scenario = build(seed=7)
    tks = Counter()
    for stage in scenario.stages:
        for r in stage.regencies:
            tks[r.province_code[0]] += len(r.tks)
    java = sum(tks[d] for d in "3")
    papua_maluku = sum(tks[d] for d in "89")
    assert java > 4 * papua_maluku


def test_people_are_valid_and_unique_and_live_where_they_register():
    scenario = build(seed=11, groups=300)
    niks = []
    for stage in scenario.stages:
        for r in stage.regencies:
            for person in r.tks + [m for g in r.groups for m in g.members]:
                info = parse_nik(person.nik)
                assert info.regency_code == r.code and info.sex == person.sex
                assert province_of(r.code) == r.province_code
                niks.append(person.nik)
    assert len(niks) == len(set(niks))


def test_the_same_seed_gives_the_same_year():
    a, b = build(seed=5, groups=200), build(seed=5, groups=200)
    def flat(s):
        return [(g.ref, [m.nik for m in g.members]) for st in s.stages
                for r in st.regencies for g in r.groups]

    assert flat(a) == flat(b)
    assert flat(a) != flat(build(seed=6, groups=200))
