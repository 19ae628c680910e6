"""The cohort fingerprint: content-based through the manifest, reading only files that changed."""

from __future__ import annotations

import os
import shutil

import pytest

from spora_sd.lamin.fingerprint import cohort_fingerprint


@pytest.fixture
def cohort(synthetic_paths, tmp_path):
    """A private copy of the session's lung cohort (tests here change files)."""
    return shutil.copytree(synthetic_paths["lung"], tmp_path / "lung2024synthetic", copy_function=shutil.copy2)


def _later(path, seconds: int = 5) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def test_unchanged_reads_nothing_and_copies_agree(cohort, synthetic_paths) -> None:
    fp = cohort_fingerprint(cohort)
    assert fp.hash_type == "spora-manifest-crc32c"
    assert fp.files_read == 0
    assert fp.n_files == sum(len(files) for _, _, files in os.walk(cohort))  # the manifest included
    assert fp.size == sum(p.stat().st_size for p in cohort.rglob("*") if p.is_file())
    assert cohort_fingerprint(synthetic_paths["lung"]).hash == fp.hash  # a byte-identical copy elsewhere
    assert len(fp.hash) == 22


def test_touched_file_is_read_and_changes_nothing(cohort) -> None:
    before = cohort_fingerprint(cohort)
    _later(cohort / "metadata" / "cells.parquet")
    after = cohort_fingerprint(cohort)
    assert after.files_read == 1
    assert after.hash == before.hash


def test_same_size_change_is_found(cohort) -> None:
    before = cohort_fingerprint(cohort)
    mask = next((cohort / "segmentations").rglob("*.npz"))
    data = bytearray(mask.read_bytes())
    data[len(data) // 2] ^= 0x01
    mask.write_bytes(bytes(data))
    _later(mask)
    assert cohort_fingerprint(cohort).hash != before.hash


def test_added_removed_and_renamed_files_change_it(cohort) -> None:
    base = cohort_fingerprint(cohort).hash
    extra = cohort / "metadata" / "notes.txt"
    extra.write_text("a note")
    added = cohort_fingerprint(cohort)
    assert (added.hash != base, added.files_read) == (True, 1)
    extra.unlink()
    assert cohort_fingerprint(cohort).hash == base
    channels = cohort / "imc" / "channels.parquet"
    channels.rename(cohort / "imc" / "channels2.parquet")
    assert cohort_fingerprint(cohort).hash != base


def test_without_manifest_sizes_and_times(cohort) -> None:
    (cohort / "metadata" / "manifest.json").unlink()
    fp = cohort_fingerprint(cohort)
    assert fp.hash_type == "spora-stat"
    assert fp.files_read == 0
    assert cohort_fingerprint(cohort).hash == fp.hash
    _later(cohort / "metadata" / "cells.parquet")  # no content to compare with: a touch is a change
    assert cohort_fingerprint(cohort).hash != fp.hash
