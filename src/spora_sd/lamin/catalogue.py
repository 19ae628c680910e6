"""A catalogue of the registry's cohorts in LaminDB: each one registered in place, from wherever it is.

:func:`register_catalogue` goes through the cohorts of the registry (:mod:`spora_sd.datasets.registry`)
and registers each one that has a reachable copy, in place (:func:`spora_sd.lamin.register`):

- the local copy ``$SPORA_DATASETS_DIR/<key>`` when there is one, else the hosted copy in the bucket
  (the registry's ``location``, read with ``storage_options``, the AWS variables or the rclone remote
  ``spora``), as :func:`spora_sd.datasets.registry.resolve_cohort` finds it;
- only the cohort's tables are read (the cell table's label columns, the panel, the tissue table),
  plus one listing of its files for the fingerprint: no image and no mask, so a catalogue of the
  whole collection costs no pixel download;
- a cohort that cannot be reached (no copy and no credentials, nothing under its bucket prefix, a
  server that does not answer) is reported with a one-line reason, and the others go on; so does a
  cohort whose registration fails (e.g. labels that name no term);
- running it again is a look-up per cohort: unchanged content keeps its artifact (the in-place
  fingerprint), changed content becomes a new version.

The artifacts are then found by biology with :func:`spora_sd.lamin.search`.

Examples
--------
Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`) and cohorts to reach::

    import spora_sd.lamin as sl
    catalogue = sl.register_catalogue()
    print(catalogue.summary())
    # 3 registered, 0 unchanged, 2 unreachable, 0 failed
    catalogue.to_frame()[["key", "status", "reason"]]
    sl.search(tissue="breast", disease="breast cancer")["key"].tolist()
    # ['spora/jackson2020single', 'spora/keren2018structured']
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spora_sd.errors import SporaError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["STATUSES", "Catalogue", "CatalogueEntry", "register_catalogue"]

logger = logging.getLogger(__name__)

#: What happened to a cohort: a new artifact (or version), the existing one, no copy reached, an error.
REGISTERED, UNCHANGED, UNREACHABLE, FAILED = "registered", "unchanged", "unreachable", "failed"
STATUSES = (REGISTERED, UNCHANGED, UNREACHABLE, FAILED)


@dataclass(frozen=True)
class CatalogueEntry:
    """What :func:`register_catalogue` did with one cohort.

    Attributes
    ----------
    key
        The registry's dataset key.
    status
        One of :data:`STATUSES`.
    location
        Where the cohort was read (a folder or a URL, without credentials); empty when unreachable
        before a location was found.
    uid
        The artifact's uid (registered or unchanged).
    reason
        One line: why the cohort was not registered, or ``"new version of <uid>"``.
    seconds
        Time spent on the cohort.
    """

    key: str
    status: str
    location: str = ""
    uid: str | None = None
    reason: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class Catalogue:
    """The outcome of :func:`register_catalogue`: one :class:`CatalogueEntry` per cohort, in order.

    Examples
    --------
    >>> c = Catalogue((CatalogueEntry("a2020x", "registered"), CatalogueEntry("b2021y", "unreachable", reason="no copy")))
    >>> c.summary()
    '1 registered, 0 unchanged, 1 unreachable, 0 failed'
    >>> [e.key for e in c.with_status("unreachable")]
    ['b2021y']
    """

    entries: tuple[CatalogueEntry, ...]

    def with_status(self, status: str) -> list[CatalogueEntry]:
        """The entries of one status (see :data:`STATUSES`)."""
        return [e for e in self.entries if e.status == status]

    def counts(self) -> dict[str, int]:
        """Number of cohorts per status, every status present."""
        return {status: len(self.with_status(status)) for status in STATUSES}

    def summary(self) -> str:
        """One line: how many cohorts ended in each status."""
        return ", ".join(f"{n} {status}" for status, n in self.counts().items())

    def to_frame(self) -> pd.DataFrame:
        """One row per cohort: key, status, location, uid, reason, seconds."""
        import pandas as pd

        columns = ["key", "status", "location", "uid", "reason", "seconds"]
        return pd.DataFrame([asdict(e) for e in self.entries], columns=columns)


def one_line(exc: BaseException) -> str:
    """The first line of an error's message, without credentials (what a summary row shows).

    >>> one_line(FileNotFoundError("s3://spora/x: no such cohort\\nTo copy it, run: ..."))
    's3://spora/x: no such cohort'
    """
    from spora_sd.io.location import redact

    text = str(exc).strip() or type(exc).__name__
    return redact(text.splitlines()[0].strip())


def _keys(keys: Sequence[str] | None) -> list[str]:
    """Registry keys (aliases resolved, duplicates dropped); an unknown name fails before anything runs."""
    from spora_sd.datasets.registry import cohort_info, cohorts

    if keys is None:
        return list(cohorts)
    return list(dict.fromkeys(cohort_info(k).key for k in keys))


def _latest_uid(key: str) -> str | None:
    import lamindb as ln

    from spora_sd.lamin.registration import cohort_key

    latest = ln.Artifact.filter(key=cohort_key(key), is_latest=True).one_or_none()
    return None if latest is None else latest.uid


def _one(key: str, datasets_dir: str | Path | None, storage_options: Mapping[str, Any] | None) -> CatalogueEntry:
    from spora_sd.datasets.registry import resolve_cohort
    from spora_sd.io.location import display_location
    from spora_sd.lamin.registration import register

    started = time.perf_counter()

    def entry(status: str, where: str = "", uid: str | None = None, reason: str = "") -> CatalogueEntry:
        return CatalogueEntry(key, status, where, uid, reason, time.perf_counter() - started)

    try:
        location = resolve_cohort(key, datasets_dir=datasets_dir, storage_options=storage_options)
    except (SporaError, OSError) as exc:  # no copy here and no way to reach the hosted one
        return entry(UNREACHABLE, reason=one_line(exc))
    where = display_location(location)
    before = _latest_uid(key)
    try:
        artifact = register(location)  # a remote location carries its filesystem options
    except (SporaError, OSError) as exc:
        # nothing under the location, access refused, a server that does not answer: "unreachable";
        # a cohort that was read but refused (labels that name no term, a broken table): "failed"
        return entry(UNREACHABLE if isinstance(exc, OSError) else FAILED, where, reason=one_line(exc))
    if artifact.uid == before:
        return entry(UNCHANGED, where, artifact.uid)
    return entry(REGISTERED, where, artifact.uid, f"new version of {before}" if before else "")


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[str], None]]:
    """Yield ``show(key)``, which names the cohort being registered and advances the bar after it."""
    if not enabled:
        yield lambda key: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("catalogue {task.fields[key]:<24}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("catalogue", total=total, key="")
        started = [False]

        def show(key: str) -> None:
            if started[0]:
                bar.advance(task)
            started[0] = True
            bar.update(task, key=key)

        yield show
        if started[0]:
            bar.advance(task)
        bar.update(task, key="done")


def register_catalogue(
    keys: Sequence[str] | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    datasets_dir: str | Path | None = None,
    progress: bool = False,
) -> Catalogue:
    """Register every registry cohort that has a reachable copy, in place, reading tables only.

    Parameters
    ----------
    keys
        Dataset keys or aliases of the registry; default: every cohort of the registry. An unknown
        name fails at once (the message lists the known ones).
    storage_options
        Credentials and endpoint for the hosted copies (as for :func:`spora_sd.open_cohort`); without
        them, the AWS variables or the rclone remote ``spora`` are used, if set up.
    datasets_dir
        Folder (or URL) holding local copies, instead of ``$SPORA_DATASETS_DIR``. A local copy wins
        over the hosted one.
    progress
        Show a progress bar on stderr.

    Returns
    -------
    Catalogue
        One entry per cohort: ``registered`` (a new artifact, or a new version), ``unchanged`` (the
        existing artifact), ``unreachable`` (no copy reached, with the reason) or ``failed`` (read but
        refused, with the reason).

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        catalogue = register_catalogue(["jackson2020", "cords2024"], storage_options={"anon": True})
        [(e.key, e.status) for e in catalogue.entries]
        # [('jackson2020single', 'registered'), ('cords2024cancer', 'registered')]
        register_catalogue(["jackson2020", "cords2024"], storage_options={"anon": True}).summary()
        # '0 registered, 2 unchanged, 0 unreachable, 0 failed'
    """
    todo = _keys(keys)
    entries = []
    started = time.perf_counter()
    with _progress(progress, len(todo)) as show:
        for key in todo:
            show(key)
            entry = _one(key, datasets_dir, storage_options)
            level = logging.WARNING if entry.status == FAILED else logging.INFO  # unreachable: expected, summed up
            logger.log(level, "catalogue: %s %s %s", key, entry.status, entry.reason or entry.location)
            entries.append(entry)
    catalogue = Catalogue(tuple(entries))
    logger.info(
        "catalogue of %d cohort(s) in %.1f s: %s", len(todo), time.perf_counter() - started, catalogue.summary()
    )
    return catalogue
