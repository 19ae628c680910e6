"""The validator on valid cohorts; the broken ones are in test_bad_input.py."""

from __future__ import annotations

from pathlib import Path

import spora_sd
from spora_sd.layout.schemas import RULES as TABLE_RULES
from spora_sd.validation.validator import RULES


def test_synthetic_cohort_is_valid(small_cohort: Path) -> None:
    report = spora_sd.validate(small_cohort)
    assert report.ok, str(report)
    assert report.problems == []
    assert report.checked["images"] >= 6 and report.checked["masks"] >= 12 and report.checked["tables"] >= 8


def test_deep_validation_decodes_everything(small_cohort: Path) -> None:
    assert spora_sd.validate(small_cohort, deep=True).ok


def test_missing_root(tmp_path: Path) -> None:
    report = spora_sd.validate(tmp_path / "nothing")
    assert not report.ok and report.problems[0].rule == "layout.root"


def test_rule_ids_are_documented_and_distinct() -> None:
    assert not set(RULES) & set(TABLE_RULES)
    for rule in {*RULES, *TABLE_RULES}:
        assert rule.count(".") >= 1 and rule == rule.lower()


def test_report_serialises(small_cohort: Path) -> None:
    report = spora_sd.validate(small_cohort)
    payload = report.to_dict()
    assert payload["ok"] is True and payload["root"].endswith("small2025cohort")
    assert "valid" in str(report)


def test_every_rule_id_the_code_uses_is_documented() -> None:
    """A CohortFormatError or Problem names a rule of the docs' rules page, never an ad-hoc id."""
    import ast
    import importlib

    documented = {*RULES, *TABLE_RULES}
    for extra in (
        "spora_sd.validation.manifest",
        "spora_sd.importers",
        "spora_sd.io.fetch",
    ):  # rule tables of optional checks, where present
        try:
            documented |= set(getattr(importlib.import_module(extra), "RULES", {}))
        except ImportError:
            pass
    src = Path(spora_sd.__file__).parent
    used: dict[str, str] = {}
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and len(node.args) >= 2:
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                rule = node.args[1]
                if name in ("CohortFormatError", "Problem", "add") and isinstance(rule, ast.Constant):
                    used[str(rule.value)] = f"{path.relative_to(src)}:{node.lineno}"
    undocumented = {rule: where for rule, where in used.items() if rule not in documented}
    assert not undocumented, undocumented
