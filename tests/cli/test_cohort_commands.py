"""The CLI: exit codes (0 ok, 1 problems or known errors, 2 usage) and no tracebacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spora_sd.cli.app import app

runner = CliRunner()


def test_validate_ok(small_cohort: Path) -> None:
    result = runner.invoke(app, ["validate", str(small_cohort)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_validate_json(small_cohort: Path) -> None:
    result = runner.invoke(app, ["validate", str(small_cohort), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["ok"] is True


def test_validate_problems_exit_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "missing2025x")])
    assert result.exit_code == 1
    assert "layout.root" in result.output and "Traceback" not in result.output


def test_usage_error_exit_2() -> None:
    assert runner.invoke(app, ["validate"]).exit_code == 2
    assert runner.invoke(app, ["validate", "a", "--no-such-option"]).exit_code == 2


def test_info(small_cohort: Path) -> None:
    result = runner.invoke(app, ["info", str(small_cohort)])
    assert result.exit_code == 0, result.output
    assert "small2025cohort" in result.output and "imc" in result.output
    data = json.loads(runner.invoke(app, ["info", str(small_cohort), "--json"]).stdout)
    assert data["n_tissues"] == 4 and data["modalities"]["imc"]["n_channels"] > 0


def test_info_unknown_cohort_is_a_clean_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SPORA_DATASETS_DIR", str(tmp_path))
    result = runner.invoke(app, ["info", "jackson2020"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "rclone" in result.output


def test_make_synthetic(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "make-synthetic",
            str(tmp_path),
            "--name",
            "cli2025x",
            "--n-tissues",
            "2",
            "--image-size",
            "96",
            "--n-cells",
            "10",
        ],
    )
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["validate", str(tmp_path / "cli2025x")]).exit_code == 0
    again = runner.invoke(app, ["make-synthetic", str(tmp_path), "--name", "cli2025x", "--n-tissues", "2"])
    assert again.exit_code == 1 and "Traceback" not in again.output


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("validate", "info", "make-synthetic", "demo"):
        assert command in result.output


# --------------------------------------------------------------------------------------------------
# the report never cuts a file name


@pytest.fixture(scope="module")
def broken_cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A cohort whose problem lies deep in the tree: an instance mask that is not a readable .npz."""
    import spora_sd

    root = spora_sd.make_synthetic_cohort(
        tmp_path_factory.mktemp("a_rather_long_folder_name_for_the_report") / "deep",
        name="reportwidth2025deepcohort",
        n_tissues=2,
        image_size=64,
        n_cells=10,
    )
    mask = sorted((root / "segmentations" / "1_0mpp" / "cell_masks" / "instances").glob("*.npz"))[0]
    mask.write_bytes(b"not a zip file")
    return root, mask.relative_to(root).as_posix()


def test_validate_in_a_pipe_prints_whole_paths_one_problem_a_line(broken_cohort: tuple[Path, str]) -> None:
    root, rel = broken_cohort
    result = runner.invoke(app, ["validate", str(root)])  # CliRunner's stdout is not a terminal
    assert result.exit_code == 1, result.output
    assert "…" not in result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{root}: INVALID (checked ")  # the cohort's path is whole too
    problems = [line.split("\t") for line in lines[1:]]
    assert problems and all(len(fields) == 4 for fields in problems), lines
    assert ["error", rel, "mask.unreadable"] in [fields[:3] for fields in problems]
    assert sum(rel in line for line in lines) >= 1 and len(rel) > 80  # longer than a default terminal


def _column(output: str, index: int) -> list[str]:
    """The cells of one column of a rich table, each row's folded pieces joined back together."""
    rows: list[str] = []
    for line in output.splitlines():
        parts = line.split("│")
        if len(parts) < 6:
            continue  # a border, the header or the title
        if parts[1].strip():  # the severity starts a new row
            rows.append("")
        rows[-1] += parts[index + 1].strip()
    return rows


def test_print_report_on_a_terminal_folds_never_truncates(broken_cohort: tuple[Path, str]) -> None:
    import io

    from rich.console import Console

    from spora_sd.cli.cohort import print_report
    from spora_sd.validation.validator import validate

    root, rel = broken_cohort
    report = validate(root)
    buffer = io.StringIO()
    print_report(report, Console(file=buffer, width=60, force_terminal=True, color_system=None))
    output = buffer.getvalue()
    assert "…" not in output
    assert max(len(line) for line in output.splitlines()) <= 60
    assert rel not in output  # too long for a 60-column table: folded onto several lines...
    files = _column(output, 1)
    assert files == [p.file for p in report.problems]  # ...every character kept, in order
    assert rel in files
    assert _column(output, 2) == [p.rule for p in report.problems]


def test_consolidate(small_cohort: Path, tmp_path: Path) -> None:
    root = shutil.copytree(small_cohort, tmp_path / small_cohort.name)
    groups = sorted(root.rglob("*.ome.zarr/zarr.json"))
    for group in groups:
        meta = json.loads(group.read_text())
        del meta["consolidated_metadata"]
        group.write_text(json.dumps(meta))
    result = runner.invoke(app, ["consolidate", str(root)])
    assert result.exit_code == 0, result.output
    assert f"consolidated {len(groups)} image groups" in result.stdout
    assert all("consolidated_metadata" in json.loads(g.read_text()) for g in groups)
    assert "consolidated 0 image groups" in runner.invoke(app, ["consolidate", str(root)]).stdout
