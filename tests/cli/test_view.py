"""``spora-sd view``: serves a cohort on loopback and prints the URL; bad input is one line, exit code 1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from typer.testing import CliRunner

from spora_sd.cli.app import app

runner = CliRunner()


def test_view_serves_the_cohort_until_stopped(small_cohort: Path) -> None:
    import spora_sd

    tissue = spora_sd.open_cohort(small_cohort).image_tissue_ids("imc")[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "spora_sd.cli.app", "view", str(small_cohort), "--tissue", tissue, "--no-open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith(f"/?tissue={tissue}"), process.stderr.read()
        base = url.split("?", 1)[0]
        deadline = time.monotonic() + 120
        while True:
            try:
                summary = json.loads(urllib.request.urlopen(f"{base}api/tissues.json", timeout=30).read())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert summary["cohort"] == small_cohort.name and tissue in summary["tissues"]
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        assert "vitessce-bundle.js" in page
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_view_without_a_cohort_or_with_both_is_exit_1() -> None:
    result = runner.invoke(app, ["view"])
    assert result.exit_code == 1 and "give a COHORT or --artifact UID" in result.output
    result = runner.invoke(app, ["view", "x", "--artifact", "abc"])
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_view_of_a_missing_cohort_or_tissue_is_one_line(small_cohort: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["view", str(tmp_path / "nope2025cohort"), "--no-open"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    result = runner.invoke(app, ["view", str(small_cohort), "--tissue", "small2025cohort_00000000_0042", "--no-open"])
    assert result.exit_code == 1 and "has no imc image" in result.output
