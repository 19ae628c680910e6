"""Run one function per tissue: on the active ``dask.distributed`` client if there is one, else in a loop.

Cohort-wide work (synthetic rendering, standardization statistics, tiling) is a map over tissues whose
results are small. :func:`map_tissues` is the one place that decides how that map runs, so that no
module grows its own pool:

- when a :class:`distributed.Client` is active (and we are not already inside a dask task), one task
  per tissue is submitted to it and the results are collected as they complete;
- otherwise the tissues are processed one after the other in this process, which keeps memory at one
  tissue at a time.

Examples
--------
>>> from spora_sd.stats.parallel import map_tissues
>>> map_tissues(abs, [-1, 2, -3])
[1, 2, 3]
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

__all__ = ["active_client", "imap_tissues", "map_tissues"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def active_client() -> Any | None:
    """The active :class:`distributed.Client`, or ``None`` (also when called from inside a dask task).

    Examples
    --------
    >>> active_client() is None  # no client started in this doctest
    True
    """
    try:
        from distributed import get_worker
        from distributed.client import _get_global_client
    except ImportError:  # distributed is an optional dependency
        return None
    try:
        get_worker()
    except ValueError:
        pass
    else:
        # Inside a task: submitting more tasks from here and waiting on them could deadlock the
        # worker, so nested maps run as a plain loop.
        return None
    client = _get_global_client()
    if client is None or getattr(client, "status", "running") not in ("running", "connecting"):
        return None
    return client


@contextlib.contextmanager
def _progress(enabled: bool, total: int, description: str) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callable; a rich progress bar on stderr when ``enabled``."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description or "tissues", total=total)
        yield lambda: bar.advance(task)


def imap_tissues(
    func: Callable[[T], R],
    items: Sequence[T],
    *,
    progress: bool = False,
    description: str = "",
) -> Iterator[tuple[int, R]]:
    """Yield ``(position, func(item))`` for every item, in completion order.

    Use this instead of :func:`map_tissues` when the results should be reduced as they arrive (e.g.
    per-tissue histograms), so that they never all sit in memory together.

    Parameters
    ----------
    func
        A picklable function of one item (a module-level function or a :func:`functools.partial` of one).
    items
        One item per tissue, e.g. a small dataclass of paths and parameters.
    progress
        Show a rich progress bar on stderr.
    description
        Label of the progress bar.

    Examples
    --------
    >>> sorted(imap_tissues(len, ["a", "bcd"]))
    [(0, 1), (1, 3)]
    """
    items = list(items)
    client = active_client()
    with _progress(progress, len(items), description) as advance:
        if client is None:
            for position, item in enumerate(items):
                yield position, func(item)
                advance()
            return
        from distributed import as_completed

        logger.info("running %d %s task(s) on %s", len(items), description or "tissue", client)
        futures = client.map(func, items, pure=False)
        position_of = {future.key: i for i, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                result = future.result()  # re-raises the task's exception here
                future.release()  # the result now lives only in this process
                yield position_of[future.key], result
                advance()
        finally:
            # On an error (or when the caller stops early) nothing keeps running in the background.
            client.cancel([f for f in futures if not f.done()])


def map_tissues(
    func: Callable[[T], R],
    items: Sequence[T],
    *,
    progress: bool = False,
    description: str = "",
) -> list[R]:
    """``[func(item) for item in items]``, on the active dask.distributed client when there is one.

    Parameters
    ----------
    func
        A picklable function of one item.
    items
        One item per tissue.
    progress
        Show a rich progress bar on stderr.
    description
        Label of the progress bar.

    Returns
    -------
    list
        The results in the order of ``items``.

    Examples
    --------
    >>> map_tissues(str.upper, ["a", "b"])
    ['A', 'B']
    """
    items = list(items)
    results: list[Any] = [None] * len(items)
    for position, result in imap_tissues(func, items, progress=progress, description=description):
        results[position] = result
    return results
