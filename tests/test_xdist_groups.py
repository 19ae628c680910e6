"""tests/xdist_groups.py: under ``-n 2 --dist loadgroup`` the tests of one xdist_group share a worker.

A real pytest-xdist run of a small test folder whose conftest uses the hook, as tests/conftest.py does.
Without the hook (pytest 9.2 with pytest-xdist 3.8) the grouped tests spread over both workers.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).parent

_TESTS = textwrap.dedent(
    """
    import time
    import pytest

    @pytest.mark.parametrize("i", range(6))
    @pytest.mark.xdist_group("together")
    def test_grouped(i):
        time.sleep(0.05)

    @pytest.mark.parametrize("i", range(6))
    def test_free(i):
        time.sleep(0.05)
    """
)


def test_grouped_tests_run_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text("from xdist_groups import pytest_collection_modifyitems  # noqa: F401\n")
    (tmp_path / "test_a.py").write_text(_TESTS)
    (tmp_path / "test_b.py").write_text(_TESTS)
    args = ["-p", "xdist", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args, str(tmp_path)],
        cwd=tmp_path,
        # only xdist: the venv's other plugins (zarr's, hypothesis...) would only slow the start
        env={"PYTHONPATH": str(HERE), "PATH": "/usr/bin:/bin", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = re.findall(r"\[(gw\d)\] \[\s*\d+%\] PASSED (\S+)", done.stdout)
    grouped = {worker for worker, test in ran if "test_grouped" in test}
    assert len(ran) == 24, done.stdout[-3000:]
    assert len(grouped) == 1, f"the group ran on {sorted(grouped)}"
    assert all(test.endswith("@together") for _, test in ran if "test_grouped" in test)
    assert not any("@" in test for _, test in ran if "test_free" in test)
