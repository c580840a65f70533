"""tools/bench/snapshot.py says "met" only for samples that really were restores."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "tools" / "bench" / "snapshot.py"
_spec = importlib.util.spec_from_file_location("snapshot_bench", _PATH)
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_restores_logged_for_every_sample_and_four_containers_per_x4_run_can_be_met() -> None:
    problems = bench.sample_problems(runs=3, restores_1=3, restores_4=12, distinct=[4, 4, 4], fallbacks=0)
    assert problems == []
    assert bench.verdict(True, problems) == "met"
    assert bench.verdict(False, problems) == "NOT met"


def test_no_logged_restore_is_never_met() -> None:
    problems = bench.sample_problems(runs=3, restores_1=0, restores_4=0, distinct=[4, 4, 4], fallbacks=0)
    assert len(problems) == 2
    assert bench.verdict(True, problems).startswith("NOT met")


def test_cold_fallbacks_and_too_few_containers_are_not_met() -> None:
    problems = bench.sample_problems(runs=2, restores_1=2, restores_4=8, distinct=[4, 3], fallbacks=1)
    assert any("fell back to a cold start" in p for p in problems)
    assert any("[4, 3]" in p for p in problems)
    assert bench.verdict(True, problems).startswith("NOT met")
