"""The LaminDB commands of ``spora-sd``: init (twice), register, search, load, errors without traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from spora_sd.cli.app import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich wraps to the terminal's width (80 columns without a terminal): keep rows on one line."""

    from spora_sd.cli import errors

    monkeypatch.setattr(errors.console, "width", 250)


@pytest.fixture
def cli_instance(lamin, tmp_path_factory: pytest.TempPathFactory):
    """A fresh SQLite instance made by the CLI; the test fixture's instance is reconnected afterwards."""
    yield tmp_path_factory.mktemp("cli") / "spora-cli"
    lamin.connect()


# the CLI makes its own SQLite instance whatever the backend: run it once
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_init_register_search_load(cli_instance: Path, sdata_factory, tmp_path: Path) -> None:
    for _ in range(2):  # the second run finds the instance and only checks the ontologies
        result = runner.invoke(app, ["lamin", "init", str(cli_instance)])
        assert result.exit_code == 0, result.output
        assert "spora-cli" in result.output
        assert "uberon" in result.output

    result = runner.invoke(app, ["register", str(tmp_path / "nothere2024cohort")])
    assert result.exit_code == 1  # no such cohort folder: one line, exit 1, no traceback
    assert "nothere2024cohort" in result.output
    assert "Traceback" not in result.output

    sdata = sdata_factory("cli2024synthetic", tissue="pulmo", disease="NSCLC")

    from spora_sd.lamin import register

    register(sdata)
    result = runner.invoke(app, ["search", "--disease", "lung carcinoma"])
    assert result.exit_code == 0, result.output
    assert "spora/cli2024synthetic.zarr" in result.output
    assert "1 registered cohort" in result.output

    result = runner.invoke(app, ["load", "cli2024synthetic", "--out", str(tmp_path / "out.zarr")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.zarr").is_dir()


def test_bad_term_is_one_line_and_exit_1(lamin) -> None:
    result = runner.invoke(app, ["search", "--tissue", "brest"])
    assert result.exit_code == 1
    assert "tissue 'brest'" in result.output
    assert "'breast'" in result.output
    assert "Traceback" not in result.output


def test_register_cohort_folder_via_cli(lamin, synthetic_paths) -> None:
    result = runner.invoke(
        app,
        [
            "lamin",
            "register",
            str(synthetic_paths["lung"]),
            "--tissue",
            "lung",
            "--disease",
            "NSCLC",
            "--organism",
            "human",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "spora/lung2024synthetic " in result.output  # in place: the folder's key
    assert "non-small cell lung carcinoma" in result.output
    assert str(synthetic_paths["lung"].resolve()) in result.output
