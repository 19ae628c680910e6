"""Fetch a partial, resumable, verified local copy of a remote cohort (``spora-sd fetch``).

:func:`fetch` copies a cohort's metadata, the chosen modalities, resolutions and tissues, and the
masks they need, from S3 (``s3://``, an rclone ``remote:bucket/path``, a registry key), HTTP(S) or a
local folder, into a local folder that opens and validates as a partial copy
(:attr:`spora_sd.Cohort.missing` lists what was left out).

How a copy is made safe (the guarantees of ``docs/guarantees.md`` and ``docs/fetch.md``):

- **One writer.** The destination's lock (:func:`spora_sd.io.atomic.target_lock`) is held for the
  whole fetch; a second fetch (or export) into the same folder fails at once with
  :class:`~spora_sd.errors.TargetLockedError`.
- **All or nothing at the destination.** The copy is built in ``<parent>/.<name>.tmp-fetch/<name>/``
  (which carries an in-progress marker, so it never validates) and moved into place in one step at
  the end, by ``rename`` or, when the destination exists, an atomic exchange. A refetch into an
  existing copy (another modality, more tissues) starts from hard links of its files, so the
  destination holds the old complete copy or the new complete one at every instant.
- **Every file verified.** Each file is downloaded to ``.<file>.tmp-part`` next to its final name,
  checked against its size and checksum (the CRC32C of the cohort's content manifest when it has
  one, else the size and the MD5 ETag of the S3 listing), and only then renamed. A mismatch deletes
  the part file and raises :class:`~spora_sd.errors.CohortFormatError` naming the file.
- **Resumable.** A fetch that dies (or fails) leaves its staging folder; the next fetch of the same
  destination keeps the finished files and continues the part files with range requests, so it
  downloads only what is left (plus the manifest, read again to notice a changed cohort).
- The copy gets its own ``metadata/manifest.json``: the remote manifest's entries of the files
  copied (or, without one, the checksums computed while downloading), so ``validate --deep`` checks
  the copy as it checks an export.

Examples
--------
>>> import spora_sd, tempfile, pathlib
>>> remote = spora_sd.make_synthetic_cohort(tempfile.mkdtemp(), n_tissues=2, image_size=64, n_cells=8)
>>> dest = pathlib.Path(tempfile.mkdtemp()) / remote.name
>>> result = fetch(remote, dest, modalities=["imc"])
>>> sorted(p.name for p in dest.iterdir())
['imc', 'metadata', 'segmentations', 'tiling']
>>> spora_sd.open_cohort(dest).missing
['he/']
>>> fetch(remote, dest, modalities=["imc"]).bytes_downloaded  # a rerun downloads nothing
0

The package, one job per module: :mod:`~spora_sd.io.fetch.source` (reading the source),
:mod:`~spora_sd.io.fetch.plan` (what to copy), :mod:`~spora_sd.io.fetch.transfer` (downloading),
:mod:`~spora_sd.io.fetch.verify` (checking), :mod:`~spora_sd.io.fetch.commit` (staging and moving
the copy into place), :mod:`~spora_sd.io.fetch.run` (:func:`fetch`).
"""

from __future__ import annotations

from spora_sd.io.fetch.run import FetchResult, fetch
from spora_sd.io.fetch.source import FetchError
from spora_sd.io.fetch.transfer import FetchProgress

__all__ = ["FETCH_FAULT_POINTS", "RULES", "FetchError", "FetchProgress", "FetchResult", "fetch"]

#: Rule ids of the errors a fetch raises about what it downloaded (docs: the rules page).
RULES: dict[str, str] = {
    "fetch.unsafe_path": "a file name of the source (listing or manifest) would leave the cohort's folder",
    "fetch.size_mismatch": "a downloaded file has another size than the source lists",
    "fetch.checksum": "a downloaded file's checksum differs from the manifest's (or the ETag)",
}

#: Fault points of a fetch (``SPORA_SD_FAULT_POINT``, see :mod:`spora_sd.io.atomic`), in order.
FETCH_FAULT_POINTS: dict[str, str] = {
    "lock.acquired": "the destination's lock is held; nothing written yet",
    "fetch.started": "the staging folder, its state and the in-progress marker exist",
    "fetch.linked": "the files of an existing destination are hard-linked into the staging folder",
    "fetch.part_written": "one block of a file was appended to its .tmp-part file",
    "fetch.verified": "a file is complete and verified, not yet renamed to its final name",
    "fetch.file_renamed": "a verified file was renamed to its final name (the journal not yet updated)",
    "fetch.manifest_written": "the copy's metadata/manifest.json is written; the marker still there",
    "fetch.marker_removed": "the staged copy is complete, not yet moved into place",
    "fetch.renamed": "moved into place by rename (there was no destination)",
    "fetch.exchanged": "exchanged with the old destination, which sits in the staging folder",
    "fetch.staged": "no renameat2, 1/3: the new copy renamed to .<name>.tmp-fetch.new",
    "fetch.moved_aside": "no renameat2, 2/3: the old copy renamed aside (open_cohort or a fetch moves the new one in)",
    "fetch.moved_in": "no renameat2, 3/3: the new copy renamed to the destination",
    "fetch.committed": "committed; the staging folder (and an old copy) not yet deleted",
    "fetch.cleaned": "the staging folder is deleted, the lock still held",
}
