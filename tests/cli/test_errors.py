"""How a command ends: a SporaError is one line and exit code 1, anything else a reported bug (exit code 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import spora_sd.stats.tiling
from spora_sd.cli.app import app
from spora_sd.cli.errors import BUG_EXIT_CODE, ISSUES_URL
from spora_sd.errors import InvalidArgumentError

runner = CliRunner()


def _raise(error: Exception):
    def fake(*args: object, **kwargs: object) -> None:
        raise error

    return fake


def test_unexpected_exception_is_reported_as_a_bug(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(spora_sd.stats.tiling, "compute_tiling", _raise(RuntimeError("boom in the tiler")))
    result = runner.invoke(app, ["tile", str(tmp_path)])
    assert result.exit_code == BUG_EXIT_CODE == 3
    assert "Traceback" in result.output
    assert "RuntimeError" in result.output and "boom in the tiler" in result.output
    assert "This is a bug in spora-sd" in result.output and "Please report it" in result.output
    assert ISSUES_URL in result.output


def test_spora_error_is_one_line_without_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    message = "unknown tiling strategy 'spiral'; expected one of default, grid"
    monkeypatch.setattr(spora_sd.stats.tiling, "compute_tiling", _raise(InvalidArgumentError(message)))
    result = runner.invoke(app, ["tile", str(tmp_path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"Error: {message}"]
    assert "Traceback" not in result.output and "bug" not in result.output


def test_builtin_error_from_a_command_is_a_bug_not_a_user_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The handler is not loosened: a bare ValueError (which spora-sd no longer raises for input) is a bug."""
    monkeypatch.setattr(spora_sd.stats.tiling, "compute_tiling", _raise(ValueError("bare")))
    result = runner.invoke(app, ["tile", str(tmp_path)])
    assert result.exit_code == BUG_EXIT_CODE and "Traceback" in result.output


def test_standardize_without_multiplex_modality_is_a_user_error(tmp_path: Path) -> None:
    import spora_sd

    root = spora_sd.make_synthetic_cohort(
        tmp_path, name="heonly2025x", n_tissues=2, modalities=("he",), image_size=48, n_cells=4, tiling=False
    )
    result = runner.invoke(app, ["standardize", str(root)])
    assert result.exit_code == 1, result.output
    assert "no multiplex modality to standardize" in result.output and "'he'" in result.output
    assert "Traceback" not in result.output
