"""In-place registration: the cohort folder where it is, idempotent, versioned by its fingerprint."""

from __future__ import annotations

import os

import pytest

from spora_sd.errors import ArtifactNotFoundError, InvalidArgumentError
from spora_sd.lamin import get_artifact, load, register, search
from spora_sd.lamin.fingerprint import cohort_fingerprint

LABELS = {"tissue": "lung", "disease": "NSCLC", "organism": "human"}


def _files(folder) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs}


def test_registers_the_folder_without_a_copy(lamin, cohort_factory) -> None:
    import lamindb as ln

    cohort = cohort_factory(f"inplace{lamin.name}2024synthetic")
    before = _files(cohort)
    instance_files = _files(lamin.storage)
    artifact = register(cohort, **LABELS)
    assert artifact.key == f"spora/{cohort.name}"
    assert artifact.path.as_posix() == cohort.resolve().as_posix()
    assert artifact.storage.root == cohort.parent.resolve().as_posix()  # the parent became a location
    assert artifact.n_files == len(before)
    assert artifact.size == sum(os.path.getsize(cohort / f) for f in before)
    assert artifact._hash_type == "spora-manifest-crc32c"
    assert artifact.hash == cohort_fingerprint(cohort).hash
    # nothing was written: not into the cohort, not next to it, not into the instance's storage
    assert _files(cohort) == before
    # next to it at most the empty .lamindb folder that LaminDB makes in every storage root it touches
    assert set(os.listdir(cohort.parent)) <= {cohort.name, ".lamindb"}
    assert not _files(cohort.parent / ".lamindb") if (cohort.parent / ".lamindb").exists() else True
    assert not {f for f in _files(lamin.storage) - instance_files if not f.startswith(".lamindb/lamin.db")}
    assert ln.Storage.filter(root=cohort.parent.resolve().as_posix()).count() == 1
    # found like a copy, loaded lazily from the folder with the registered labels
    assert artifact.key in set(search(tissue="lung", disease="lung carcinoma")["key"])
    assert get_artifact(cohort.name).uid == artifact.uid
    sdata = load(cohort.name)
    assert sdata.attrs["bio"]["disease_ontology_id"] == "MONDO:0005233"
    assert sdata.attrs["dataset"] == cohort.name
    assert len(sdata.images) == 2


def test_unchanged_or_touched_content_returns_the_same_artifact(lamin, cohort_factory) -> None:
    import lamindb as ln

    cohort = cohort_factory(f"touch{lamin.name}2024synthetic")
    first = register(cohort, **LABELS)
    counts = (ln.Artifact.filter().count(), ln.Run.filter().count())
    assert register(cohort).uid == first.uid  # touching nothing
    # touching a file (a newer modification time, the same bytes): its checksum is read, the same
    cells = cohort / "metadata" / "cells.parquet"
    os.utime(cells, ns=(cells.stat().st_atime_ns, cells.stat().st_mtime_ns + 5_000_000_000))
    assert cohort_fingerprint(cohort).files_read == 1
    assert register(cohort).uid == first.uid
    assert (ln.Artifact.filter().count(), ln.Run.filter().count()) == counts


def test_changed_file_is_a_new_version_with_the_same_labels(lamin, cohort_factory) -> None:
    import lamindb as ln

    cohort = cohort_factory(f"changed{lamin.name}2024synthetic")
    first = register(cohort, **LABELS)
    tissues = cohort / "metadata" / "tissues.parquet"
    tissues.write_bytes(tissues.read_bytes())  # same bytes: still the same content
    assert register(cohort).uid == first.uid
    mask = next((cohort / "segmentations").rglob("*.npz"))
    data = bytearray(mask.read_bytes())
    data[-1] ^= 0xFF  # one byte of one file, same size
    mask.write_bytes(bytes(data))
    second = register(cohort)  # no labels given: those of the previous version
    assert second.uid != first.uid
    assert second.uid[:16] == first.uid[:16]
    assert second.key == first.key
    assert [d.ontology_id for d in second.diseases.all()] == ["MONDO:0005233"]
    assert ln.Artifact.filter(key=first.key).count() == 2
    assert get_artifact(cohort.name).uid == second.uid
    assert first.uid not in set(search(tissue="lung")["uid"])
    assert first.uid in set(search(tissue="lung", all_versions=True)["uid"])
    with pytest.raises(ArtifactNotFoundError, match="folder has changed"):
        load(first.uid)
    assert load(second.uid).attrs["dataset"] == cohort.name


def test_modes(lamin, sdata_factory, cohort_factory) -> None:
    with pytest.raises(InvalidArgumentError, match="can only be copied"):
        register(sdata_factory("mode2024synthetic"), mode="cohort")
    with pytest.raises(InvalidArgumentError, match="mode='somewhere'"):
        register(cohort_factory("mode2024synthetic"), mode="somewhere")


def test_copy_of_a_folder_and_in_place_coexist(lamin, cohort_factory) -> None:
    cohort = cohort_factory(f"both{lamin.name}2024synthetic")
    in_place = register(cohort, **LABELS)
    copy = register(cohort, mode="spatialdata", **LABELS)
    assert (in_place.key, copy.key) == (f"spora/{cohort.name}", f"spora/{cohort.name}.zarr")
    assert copy.otype == "SpatialData"
    found = search(disease="NSCLC").set_index("key")
    assert found.loc[in_place.key, "stored_as"] == "cohort"
    assert found.loc[copy.key, "stored_as"] == "spatialdata"
    assert get_artifact(cohort.name).uid == copy.uid  # the newer of the two
    if lamin.shared is not None:  # a shared instance: copies go to its bucket
        assert copy.storage.root.startswith(lamin.shared)
    else:
        assert copy.storage.root == lamin.storage.resolve().as_posix()


def test_cohort_in_a_bucket_is_registered_in_place(lamin, lamin_s3, cohort_factory) -> None:
    """An s3:// cohort: its tables are read, no image chunk and no mask; unchanged costs one listing."""
    cohort = cohort_factory(f"bucket{lamin.name}2024synthetic")
    url = lamin_s3.upload_folder(cohort, f"inplace/{cohort.name}")
    options = lamin_s3.storage_options
    with lamin_s3.log.recording() as log:
        artifact = register(url, storage_options=options, **LABELS)
    read = log.paths()
    assert read
    assert not [p for p in read if ".zarr" in p or ".npz" in p]  # no image chunk or metadata, no mask
    assert log.bytes_sent < sum(p.stat().st_size for p in cohort.rglob("*") if p.is_file())
    assert artifact.path.as_posix() == url
    assert artifact.key == f"spora/{cohort.name}"
    assert artifact._hash_type == "spora-s3-etag"
    assert artifact.storage.root == f"s3://{lamin_s3.bucket}/inplace?endpoint_url={lamin_s3.endpoint_url}"
    assert artifact.n_files == sum(1 for p in cohort.rglob("*") if p.is_file())
    assert [t.ontology_id for t in artifact.tissues.all()] == ["UBERON:0002048"]
    with lamin_s3.log.recording() as log:
        assert register(url, storage_options=options).uid == artifact.uid
    assert all("list-type=2" in p for p in log.paths())  # the listing only
    assert artifact.key in set(search(tissue="lung")["key"])
    sdata = load(artifact)  # lazily from the bucket
    assert len(sdata.images) == 2
    assert sdata.attrs["bio"]["tissue"] == "lung"
    lamin_s3.client().put_object(
        Bucket=lamin_s3.bucket, Key=f"inplace/{cohort.name}/metadata/notes.txt", Body=b"a new file"
    )
    changed = register(url, storage_options=options)
    assert changed.uid[:16] == artifact.uid[:16] and changed.uid != artifact.uid
