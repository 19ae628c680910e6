"""Atomic writes: the target is either old and complete, new and complete, or absent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spora_sd.errors import TargetLockedError
from spora_sd.io.atomic import (
    atomic_path,
    clean_leftovers,
    export_workspace,
    is_temporary,
    lock_path,
    recover,
    replace_path,
    target_lock,
)


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


# --------------------------------------------------------------------------------------------------
# the lock, the exchange, the rename fallback and leftovers (kills: tests/io/test_crash_safety.py)


def test_renameat2_exchange_is_used_on_linux(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux only")
    from spora_sd.io.atomic import _RENAME_EXCHANGE, _rename2

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.write_text("b")
    assert _rename2(a, b, _RENAME_EXCHANGE)
    assert a.read_text() == "b" and b.is_dir()


@pytest.mark.parametrize("exchange", ["1", "0"])
def test_folder_over_folder_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: str) -> None:
    monkeypatch.setenv("SPORA_SD_ATOMIC_EXCHANGE", exchange)  # "0": the rename fallback
    target = tmp_path / "t"
    target.write_text("a file")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "x").write_text("1")
    assert (target / "x").read_text() == "1"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "y").write_text("2")
    assert os.listdir(target) == ["y"]
    assert os.listdir(tmp_path) == ["t"]


def test_lock_is_exclusive_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    with target_lock(target) as lock:
        assert lock == lock_path(target) and is_temporary(lock.name) and lock.exists()
        with pytest.raises(TargetLockedError, match=f"process {os.getpid()} on "):
            with atomic_path(target):
                pass  # pragma: no cover
    assert os.listdir(tmp_path) == []
    with target_lock(target), target_lock(tmp_path / "other"):
        pass  # other targets have other locks
    assert os.listdir(tmp_path) == []


def test_a_stale_lock_file_does_not_block(tmp_path: Path) -> None:
    """A crash leaves the lock file, never the lock: flock dies with its process."""
    target = tmp_path / "x.txt"
    lock_path(target).write_text('{"pid": 1}')
    with atomic_path(target) as tmp:
        tmp.write_text("ok")
    assert os.listdir(tmp_path) == ["x.txt"]


def test_leftovers_of_dead_writers_are_removed_first(tmp_path: Path) -> None:
    target = tmp_path / "x.txt"
    (tmp_path / ".x.txt.tmp-0123456789ab").write_text("half")
    (tmp_path / ".x.txt.tmp-aaaaaaaaaaaa").mkdir()
    (tmp_path / ".other.tmp-bbbbbbbbbbbb").write_text("another target's: kept")
    with atomic_path(target) as tmp:
        tmp.write_text("ok")
    assert sorted(os.listdir(tmp_path)) == [".other.tmp-bbbbbbbbbbbb", "x.txt"]


def test_recover_moves_in_a_staged_tree(tmp_path: Path) -> None:
    """The fallback's state between its 2nd and 3rd rename: no target, the complete new tree staged."""
    target = tmp_path / "c"
    staged = tmp_path / ".c.tmp-0123456789ab.new"
    staged.mkdir()
    (staged / "new").write_text("new")
    aside = tmp_path / ".c.tmp-0123456789ab.old"
    aside.mkdir()
    assert recover(target)
    assert os.listdir(target) == ["new"]
    assert not recover(target)  # nothing left to do
    assert clean_leftovers(target) == [aside]
    assert os.listdir(tmp_path) == ["c"]


def test_exception_keeps_the_old_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPORA_SD_ATOMIC_EXCHANGE", "0")
    target = tmp_path / "c"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(RuntimeError), export_workspace(target, overwrite=True) as work:
        (work / "new").write_text("new")
        raise RuntimeError("stop")
    assert os.listdir(target) == ["old"]
    assert os.listdir(tmp_path) == ["c"]
