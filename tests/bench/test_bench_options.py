"""The options a bench run records in its committed results name no directory of the machine
that ran it: a path inside the repository relative to it, one outside by its last part only."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.run import ROOT, options


def test_recorded_paths_name_no_directory_of_the_machine(tmp_path: Path) -> None:
    recorded = options(argparse.Namespace(
        out=ROOT / "bench" / "results", elsewhere=tmp_path / "results", size=(500, 1000),
        repeats=3, year=False))
    assert recorded == {"out": "bench/results", "elsewhere": "results", "size": [500, 1000],
                        "repeats": 3, "year": False}
    assert str(ROOT) not in str(recorded) and str(tmp_path) not in str(recorded)
