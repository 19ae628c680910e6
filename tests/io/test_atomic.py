"""Atomic writes: the target is either old and complete, new and complete, or absent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spora_sd.io.atomic import atomic_path, is_temporary, replace_path


def test_file_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "a" / "x.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and is_temporary(tmp.name)
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["x.txt"]


def test_failure_leaves_old_target_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.txt"]


def test_folder_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "img.ome.zarr"
    target.mkdir()
    (target / "old").write_text("1")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("2")
    assert sorted(os.listdir(target)) == ["new"]
    assert os.listdir(tmp_path) == ["img.ome.zarr"]


def test_no_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "x"
    target.write_text("keep")
    with pytest.raises(FileExistsError), atomic_path(target, overwrite=False):
        pass
    src = tmp_path / "y"
    src.write_text("other")
    with pytest.raises(FileExistsError):
        replace_path(src, target, overwrite=False)
    assert target.read_text() == "keep"


def test_killed_writer_leaves_only_a_temporary(tmp_path: Path) -> None:
    """SIGKILL in the middle of a write: the final name never appears."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from spora_sd.io.atomic import atomic_path
        with atomic_path(Path({str(tmp_path)!r}) / "big.bin") as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"x" * 1000)
                fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False)
    assert proc.returncode != 0
    names = os.listdir(tmp_path)
    assert "big.bin" not in names
    assert names and all(is_temporary(n) for n in names)
