"""``spora_sd.fetch``: partial, verified, resumable and crash-safe copies from a real S3 server (moto).

A synthetic cohort (3 tissues, IMC and H&E, at 1 and 2 mpp) is uploaded once to the session's moto
server; every test fetches from it, or from a copy under its own prefix when it changes objects.
The crash tests kill a fetch running in a subprocess with SIGKILL at the fault points of
:data:`spora_sd.io.fetch.FETCH_FAULT_POINTS`, then fetch again in this process: the destination held
nothing or a complete copy throughout, the rerun completes it, and the server's request log shows
that the rerun downloaded only what the killed fetch had not written.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from servers import HttpServer

import spora_sd
from spora_sd.errors import CohortFormatError, CohortNotFoundError, InvalidArgumentError, TargetLockedError
from spora_sd.io.atomic import FAULT_POINT_ENV, TMP_MARKER, is_temporary, recover, target_lock
from spora_sd.io.fetch import FETCH_FAULT_POINTS, FetchError, fetch
from spora_sd.io.manifest import read_manifest

NAME = "fetch2025remote"
SECRET = "spora-test-secret-do-not-print"
MANIFEST_KEY = f"metadata/{'manifest.json'}"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fetch-source")
    return spora_sd.make_synthetic_cohort(
        root, name=NAME, n_tissues=3, image_size=96, n_cells=12, resolutions=(1.0, 2.0), seed=3
    )


@pytest.fixture(scope="module")
def remote(s3_server, source: Path) -> str:
    return s3_server.upload_folder(source, f"fetch/{NAME}")


def _files(root: Path) -> dict[str, bytes]:
    """Every regular file of a tree (relative path -> bytes), temporary names included."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _expected(source: Path, keep) -> dict[str, bytes]:
    return {rel: data for rel, data in _files(source).items() if rel != MANIFEST_KEY and keep(rel)}


def _assert_valid_partial(dest: Path, source: Path, expected: dict[str, bytes]) -> None:
    got = _files(dest)
    manifest = got.pop(MANIFEST_KEY)
    assert got == expected
    entries = json.loads(manifest)["files"]
    assert entries == {rel: e for rel, e in read_manifest(source)["files"].items() if rel in expected}
    report = spora_sd.validate(dest, allow_partial=True, deep=True)
    assert report.ok, report.problems
    assert not any(is_temporary(p.name) for p in dest.parent.iterdir()), sorted(dest.parent.iterdir())


def _uploaded(s3_server, source: Path, prefix: str, *, manifest: bool = True) -> str:
    """A private copy of the cohort on the server (for tests that change objects)."""
    url = s3_server.upload_folder(source, prefix)
    if not manifest:
        s3_server.delete(f"{prefix}/{MANIFEST_KEY}")
    return url


# -------------------------------------------------------------------------------------------------
# what is copied


def test_one_modality_at_one_resolution(s3_server, remote: str, source: Path, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    result = fetch(remote, dest, modalities=["imc"], resolution=1.0, storage_options=s3_server.storage_options)
    expected = _expected(
        source,
        lambda rel: rel.startswith(
            ("metadata/", "imc/channels", "imc/1_0mpp/", "segmentations/1_0mpp/", "tiling/1_0mpp/")
        ),
    )
    _assert_valid_partial(dest, source, expected)
    assert spora_sd.open_cohort(dest).missing == ["he/"]
    assert result.files == len(expected) and result.bytes_downloaded == sum(map(len, expected.values()))


def test_coarse_resolution_brings_the_cell_masks_from_where_they_live(
    s3_server, remote: str, source: Path, tmp_path: Path
) -> None:
    dest = tmp_path / NAME
    fetch(remote, dest, modalities=["he"], resolution=2.0, storage_options=s3_server.storage_options)
    expected = _expected(
        source,
        lambda rel: (
            rel.startswith(("metadata/", "he/2_0mpp/", "segmentations/2_0mpp/", "tiling/2_0mpp/"))
            or rel.startswith("segmentations/1_0mpp/cell_masks/")
        ),
    )
    assert {k: v for k, v in _files(dest).items() if k != MANIFEST_KEY} == expected
    # the H&E rows of tissues.parquet state mpp_he = 1.0, which this copy does not hold: left out on purpose
    assert spora_sd.open_cohort(dest).missing == ["he/1_0mpp/", "imc/"]
    report = spora_sd.validate(dest, allow_partial=True)
    assert report.ok, report.problems
    assert "image.scale" in {p.rule for p in report.problems if p.severity == "warning"}
    assert "image.scale" in {p.rule for p in spora_sd.validate(dest).problems if p.severity == "error"}


def test_without_instance_masks_is_a_valid_partial_copy(s3_server, remote: str, source: Path, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    fetch(remote, dest, modalities=["imc"], resolution=1.0, masks=["tissue"], storage_options=s3_server.storage_options)
    assert not (dest / "segmentations/1_0mpp/cell_masks").exists()
    assert spora_sd.open_cohort(dest).missing == ["he/", "segmentations/1_0mpp/cell_masks/instances/"]
    report = spora_sd.validate(dest, allow_partial=True)
    assert report.ok, report.problems
    assert "mask.missing" in {p.rule for p in spora_sd.validate(dest).problems if p.severity == "error"}


def test_tissue_subset_and_masks(s3_server, remote: str, source: Path, tmp_path: Path) -> None:
    cohort = spora_sd.open_cohort(source)
    chosen = cohort.tissue_ids("imc")[:2]
    dest = tmp_path / NAME
    fetch(remote, dest, tissues=chosen, masks=["tissue", "instances"], storage_options=s3_server.storage_options)
    left_out = sorted(set(cohort.tissue_ids()) - set(chosen))

    def keep(rel: str) -> bool:
        if "/cell_masks/cell_types/" in rel:
            return False
        name = (
            rel.rsplit("/", 1)[-1]
            if rel.endswith(".npz")
            else next((p for p in rel.split("/") if p.endswith(".ome.zarr")), "")
        )
        return not any(name.startswith(t + ".") for t in left_out)

    expected = _expected(source, keep)
    assert {k: v for k, v in _files(dest).items() if k != MANIFEST_KEY} == expected
    missing = spora_sd.open_cohort(dest).missing
    with_cells = set(cohort.cells(columns=[])["tissue_id"].astype(str))
    assert missing == sorted(
        f"{m}/{r}/images/{t}.ome.zarr"
        for t in left_out
        for m in ("he", "imc")
        if t in cohort.tissue_ids(m)
        for r in ("1_0mpp", "2_0mpp")
    ) + sorted(f"segmentations/1_0mpp/cell_masks/instances/{t}.npz" for t in left_out if t in with_cells)
    assert missing
    report = spora_sd.validate(dest, allow_partial=True, deep=True)
    assert report.ok, report.problems


def test_rerun_downloads_nothing_and_a_refetch_adds_atomically(
    s3_server, remote: str, source: Path, tmp_path: Path
) -> None:
    dest = tmp_path / NAME
    options = s3_server.storage_options
    fetch(remote, dest, modalities=["he"], resolution=1.0, storage_options=options)
    before = _files(dest)
    with s3_server.log.recording() as log:
        again = fetch(remote, dest, modalities=["he"], resolution=1.0, storage_options=options)
    assert again.bytes_downloaded == 0 and again.files_downloaded == 0
    assert log.paths() == [f"/spora/fetch/{NAME}/{MANIFEST_KEY}"]  # the manifest, read again, and nothing else
    assert _files(dest) == before
    with s3_server.log.recording() as log:
        added = fetch(remote, dest, modalities=["imc"], resolution=1.0, storage_options=options)
    imc = _expected(source, lambda rel: rel.startswith(("imc/channels", "imc/1_0mpp/")))
    assert added.bytes_downloaded == sum(map(len, imc.values()))
    assert not any("/he/" in p for p in log.paths())
    expected = _expected(
        source,
        lambda rel: (
            rel.startswith(("metadata/", "he/1_0mpp/", "imc/channels", "imc/1_0mpp/", "segmentations/1_0mpp/"))
            or rel.startswith("tiling/1_0mpp/")
        ),
    )
    _assert_valid_partial(dest, source, expected)


def test_rclone_remote_and_default_destination(
    s3_server, remote: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RCLONE_CONFIG", str(s3_server.rclone_config(tmp_path / "rclone.conf")))
    monkeypatch.setenv("SPORA_DATASETS_DIR", str(tmp_path / "datasets"))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    result = fetch(f"spora:spora/fetch/{NAME}", modalities=["he"], resolution=1.0, masks=["tissue"])
    assert result.path == tmp_path / "datasets" / NAME
    assert spora_sd.validate(result.path, allow_partial=True).ok


def test_s3_is_read_with_obstore_and_otherwise_with_s3fs(s3_server, remote: str, source: Path, tmp_path: Path) -> None:
    from spora_sd.io.fetch.source import _ObstoreRemote, _remote
    from spora_sd.io.location import resolve_location

    assert isinstance(_remote(resolve_location(remote, s3_server.storage_options)), _ObstoreRemote)
    # an s3fs option that obstore has no equivalent for: the fetch goes through s3fs, with the same result
    options = {**s3_server.storage_options, "default_block_size": 5 << 20}
    assert not isinstance(_remote(resolve_location(remote, options)), _ObstoreRemote)
    dest = tmp_path / NAME
    fetch(remote, dest, modalities=["imc"], resolution=1.0, storage_options=options)
    expected = _expected(
        source,
        lambda rel: rel.startswith(
            ("metadata/", "imc/channels", "imc/1_0mpp/", "segmentations/1_0mpp/", "tiling/1_0mpp/")
        ),
    )
    _assert_valid_partial(dest, source, expected)


def test_registry_key_reads_the_hosted_cohort(s3_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "keren2018structured"  # the registry's key of the alias keren2018, hosted at s3://spora/<key>
    hosted = spora_sd.make_synthetic_cohort(tmp_path / "hosted", name=key, n_tissues=1, image_size=64, n_cells=8)
    s3_server.upload_folder(hosted, key)
    monkeypatch.setenv("RCLONE_CONFIG", str(s3_server.rclone_config(tmp_path / "rclone.conf")))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SPORA_DATASETS_DIR", raising=False)
    result = fetch("keren2018", modalities=["imc"], storage_options=s3_server.storage_options)
    assert result.path == tmp_path / key  # ./<key> without $SPORA_DATASETS_DIR
    assert result.source.endswith(f"spora/{key}")
    assert spora_sd.open_cohort(result.path).missing == ["he/"]
    with pytest.raises(CohortNotFoundError, match="nor a cohort of the registry"):
        fetch("nosuch2025cohort", storage_options=s3_server.storage_options)


def test_http_source_reads_the_manifest(source: Path, tmp_path: Path) -> None:
    with HttpServer(source.parent) as http:
        dest = tmp_path / NAME
        fetch(f"{http.url}/{NAME}", dest, modalities=["imc"], resolution=1.0, masks=["tissue", "instances"])
    expected = _expected(
        source,
        lambda rel: (
            rel.startswith(("metadata/", "imc/channels", "imc/1_0mpp/", "segmentations/1_0mpp/", "tiling/1_0mpp/"))
            and "/cell_types/" not in rel
        ),
    )
    _assert_valid_partial(dest, source, expected)


def test_without_a_manifest_the_listing_verifies_and_the_copy_gets_one(s3_server, source: Path, tmp_path: Path) -> None:
    url = _uploaded(s3_server, source, f"nomanifest/{NAME}", manifest=False)
    dest = tmp_path / NAME
    fetch(url, dest, modalities=["imc"], resolution=1.0, storage_options=s3_server.storage_options)
    expected = _expected(
        source,
        lambda rel: rel.startswith(
            ("metadata/", "imc/channels", "imc/1_0mpp/", "segmentations/1_0mpp/", "tiling/1_0mpp/")
        ),
    )
    _assert_valid_partial(dest, source, expected)  # its manifest equals the source's entries


def test_bad_choices_are_named(s3_server, remote: str, tmp_path: Path) -> None:
    options = s3_server.storage_options
    with pytest.raises(InvalidArgumentError, match="no modality 'codex'.*it has: he, imc"):
        fetch(remote, tmp_path / NAME, modalities=["codex"], storage_options=options)
    with pytest.raises(InvalidArgumentError, match=r"no images at 0.5 mpp.*stored: 1.0, 2.0"):
        fetch(remote, tmp_path / NAME, resolution=0.5, storage_options=options)
    with pytest.raises(InvalidArgumentError, match="tissue 'fetch2025remote_zzzzzzzz_0000' is not in"):
        fetch(remote, tmp_path / NAME, tissues=["fetch2025remote_zzzzzzzz_0000"], storage_options=options)
    with pytest.raises(InvalidArgumentError, match="unknown mask 'nuclei'.*cell_types"):
        fetch(remote, tmp_path / NAME, masks=["nuclei"], storage_options=options)
    with pytest.raises(CohortNotFoundError, match="s3://spora/fetch/nothing2025here: no cohort there"):
        fetch("s3://spora/fetch/nothing2025here", tmp_path / "x", storage_options=options)
    assert not (tmp_path / NAME).exists()


# -------------------------------------------------------------------------------------------------
# failures


def test_second_fetch_into_one_destination_fails_fast(s3_server, remote: str, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    with target_lock(dest), s3_server.log.recording() as log:
        with pytest.raises(TargetLockedError, match=f"process {os.getpid()}"):
            fetch(remote, dest, storage_options=s3_server.storage_options)
        assert log.count == 0  # refused before any request
    assert not dest.exists()


def test_object_deleted_mid_copy_is_named(s3_server, source: Path, tmp_path: Path) -> None:
    prefix = f"deleted/{NAME}"
    url = _uploaded(s3_server, source, prefix)
    victim = "imc/1_0mpp/images/" + sorted(p.name for p in (source / "imc/1_0mpp/images").iterdir())[-1] + "/zarr.json"
    deleted = []

    def delete_once(state) -> None:  # called after each block: the copy is under way
        if state.files_done > 3 and not deleted:
            s3_server.delete(f"{prefix}/{victim}")
            deleted.append(victim)

    dest = tmp_path / NAME
    with pytest.raises(CohortNotFoundError) as info:
        fetch(url, dest, modalities=["imc"], storage_options=s3_server.storage_options, workers=1, progress=delete_once)
    assert deleted and str(info.value).startswith(f"{url}/{victim}: ")
    assert "no such object" in str(info.value)
    assert not dest.exists()


def test_bad_credentials_say_what_to_check_and_never_print_a_secret(
    s3_server, remote: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from moto.core.authorization import enable_iam_authentication

    wrong = {**s3_server.storage_options, "key": "AKIAWRONGKEY0000", "secret": "wrong-secret-must-not-show"}
    caplog.set_level(logging.DEBUG, logger="spora_sd")
    # the server checks signatures against the keys it knows (by default moto accepts any)
    with enable_iam_authentication(), pytest.raises(FetchError) as info:
        fetch(remote, tmp_path / NAME, storage_options=wrong)
    message = str(info.value)
    assert message.startswith(f"{remote}/metadata/manifest.json: access denied; check the credentials")
    for text in (message, repr(info.value), caplog.text):
        assert "wrong-secret-must-not-show" not in text and "AKIAWRONGKEY0000" not in text
    assert not (tmp_path / NAME).exists()


def test_tampered_object_is_refused_and_nothing_of_it_is_kept(s3_server, source: Path, tmp_path: Path) -> None:
    prefix = f"tampered/{NAME}"
    url = _uploaded(s3_server, source, prefix)
    victim = (
        "segmentations/1_0mpp/tissue_masks/"
        + sorted(p.name for p in (source / "segmentations/1_0mpp/tissue_masks").iterdir())[0]
    )
    original = (source / victim).read_bytes()
    s3_server.put(f"{prefix}/{victim}", bytes(b ^ 0xFF for b in original))  # same size, other bytes
    dest = tmp_path / NAME
    with pytest.raises(CohortFormatError) as info:
        fetch(url, dest, resolution=1.0, storage_options=s3_server.storage_options)
    assert info.value.rule == "fetch.checksum" and info.value.file == f"{url}/{victim}"
    assert "the object was altered" in str(info.value)
    assert not dest.exists()
    staged = tmp_path / f".{NAME}{TMP_MARKER}fetch" / NAME
    folder = (staged / victim).parent
    assert not [p.name for p in folder.iterdir() if Path(victim).name in p.name]  # nor a part file
    s3_server.put(f"{prefix}/{victim}", original)  # repaired: the rerun completes the copy
    fetch(url, dest, resolution=1.0, storage_options=s3_server.storage_options)
    assert (dest / victim).read_bytes() == original
    assert spora_sd.validate(dest, allow_partial=True, deep=True).ok


def test_unsafe_names_in_a_manifest_are_refused(s3_server, source: Path, tmp_path: Path) -> None:
    prefix = f"unsafe/{NAME}"
    url = _uploaded(s3_server, source, prefix)
    manifest = read_manifest(source)
    manifest["files"]["../../escape.txt"] = {"size": 3, "crc32c": "00000000"}
    s3_server.put(f"{prefix}/{MANIFEST_KEY}", json.dumps(manifest).encode())
    with pytest.raises(CohortFormatError, match=r"'\.\./\.\./escape\.txt'") as info:
        fetch(url, tmp_path / "out" / NAME, storage_options=s3_server.storage_options)
    assert info.value.rule in ("manifest.unreadable", "fetch.unsafe_path")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / NAME).exists()


def test_unsafe_names_in_a_listing_are_refused(s3_server, source: Path, tmp_path: Path) -> None:
    prefix = f"unsafelisting/{NAME}"
    url = _uploaded(s3_server, source, prefix, manifest=False)
    s3_server.put(f"{prefix}/imc/..\\..\\escape.txt", b"bad")  # a key that is a path elsewhere
    with pytest.raises(CohortFormatError, match="fetch.unsafe_path") as info:
        fetch(url, tmp_path / "out" / NAME, storage_options=s3_server.storage_options)
    assert "escape.txt" in info.value.file
    assert not (tmp_path / "out" / NAME).exists()


# -------------------------------------------------------------------------------------------------
# crashes: SIGKILL at every fault point, then a rerun

_KILLED = textwrap.dedent(
    """
    import json, sys
    import spora_sd.io.fetch as fetch_module
    import spora_sd.io.fetch.transfer as transfer

    args = json.loads(sys.argv[1])
    transfer._BLOCK = args.pop("block")  # small blocks: a kill can fall inside a file
    fetch_module.fetch(args.pop("url"), args.pop("dest"), **args)
    """
)

#: (fault point, whether the destination already holds a copy). Every point of FETCH_FAULT_POINTS
#: is hit, the per-file ones at a later hit too (files are already renamed when the kill comes).
_POINTS = [
    ("lock.acquired", False),
    ("fetch.started", False),
    ("fetch.part_written@1", False),
    ("fetch.part_written@9", False),
    ("fetch.verified@4", False),
    ("fetch.file_renamed@1", False),
    ("fetch.file_renamed@6", False),
    ("fetch.manifest_written", False),
    ("fetch.marker_removed", False),
    ("fetch.renamed", False),
    ("fetch.cleaned", False),
    ("fetch.linked", True),
    ("fetch.part_written@5", True),
    ("fetch.file_renamed@3", True),
    ("fetch.marker_removed", True),
    ("fetch.exchanged", True),
    ("fetch.committed", True),
    ("fetch.cleaned", True),
    # without renameat2 (other OSes, some file systems): the three renames of the fallback
    ("fetch.staged", True),
    ("fetch.moved_aside", True),
    ("fetch.moved_in", True),
]
_FALLBACK = {"fetch.staged", "fetch.moved_aside", "fetch.moved_in"}


def _local_bytes(dest: Path) -> dict[str, int]:
    """Bytes already on disk per file, in the destination and in the staging folder (part files too)."""
    out: dict[str, int] = {}
    staged = dest.with_name(f".{dest.name}{TMP_MARKER}fetch") / dest.name
    for root in (dest, staged):
        for path in root.rglob("*") if root.is_dir() else []:
            if not path.is_file():
                continue
            name = path.name
            if is_temporary(name) and name.endswith(f"{TMP_MARKER}part"):
                name = name[1 : -len(f"{TMP_MARKER}part")]
            elif is_temporary(name):
                continue
            rel = path.parent.relative_to(root).as_posix()
            key = f"{rel}/{name}" if rel != "." else name
            out[key] = max(out.get(key, 0), path.stat().st_size)
    return out


def test_fault_points_cover_the_fetch() -> None:
    assert {p.split("@")[0] for p, _ in _POINTS} == set(FETCH_FAULT_POINTS)


@pytest.mark.parametrize(("point", "existing"), _POINTS, ids=[f"{p}{'-refetch' if e else ''}" for p, e in _POINTS])
def test_kill_at_fault_point_then_rerun(
    s3_server, remote: str, source: Path, tmp_path: Path, point: str, existing: bool
) -> None:
    dest = tmp_path / NAME
    options = s3_server.storage_options
    first = {"modalities": ["he"], "resolution": 1.0}
    if existing:
        fetch(remote, dest, **first, storage_options=options)
    old = _files(dest) if existing else None
    args = {"url": remote, "dest": str(dest), "modalities": ["he", "imc"], "resolution": 1.0}
    job = {**args, "storage_options": options, "block": 2048, "workers": 2}
    env = {**os.environ, FAULT_POINT_ENV: point}
    if point in _FALLBACK:
        env["SPORA_SD_ATOMIC_EXCHANGE"] = "0"
    done = subprocess.run([sys.executable, "-c", _KILLED, json.dumps(job)], env=env, capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    # after the kill: nothing, the old copy, or the complete new one, never a half-made copy; the
    # fallback may leave the complete new copy staged for an instant, which open_cohort moves in
    if point == "fetch.moved_aside":
        assert not dest.exists() and recover(dest)
    if dest.exists():
        now = _files(dest)
        if now != old:
            expected = _expected(
                source,
                lambda rel: (
                    rel.startswith(("metadata/", "he/1_0mpp/", "imc/channels", "imc/1_0mpp/"))
                    or rel.startswith(("segmentations/1_0mpp/", "tiling/1_0mpp/"))
                ),
            )
            _assert_valid_partial_files(now, expected)
        assert spora_sd.validate(dest, allow_partial=True).ok
    else:
        assert not existing
    on_disk = _local_bytes(dest)
    with s3_server.log.recording() as log:
        result = fetch(args.pop("url"), args.pop("dest"), **args, storage_options=options)
    expected = _expected(
        source,
        lambda rel: (
            rel.startswith(("metadata/", "he/1_0mpp/", "imc/channels", "imc/1_0mpp/"))
            or rel.startswith(("segmentations/1_0mpp/", "tiling/1_0mpp/"))
        ),
    )
    _assert_valid_partial(dest, source, expected)
    remaining = sum(len(data) - min(on_disk.get(rel, 0), len(data)) for rel, data in expected.items())
    sent = sum(n for _, path, n in log.entries if not path.endswith(MANIFEST_KEY))
    assert result.bytes_downloaded <= remaining * 1.1
    assert sent <= remaining * 1.1, (sent, remaining)


def _assert_valid_partial_files(now: dict[str, bytes], expected: dict[str, bytes]) -> None:
    """A copy found after a kill is the complete new one (plus its manifest)."""
    assert {k: v for k, v in now.items() if k != MANIFEST_KEY} == expected
