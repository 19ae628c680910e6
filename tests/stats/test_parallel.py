"""map_tissues: a loop without a client, one task per item on an active dask.distributed client."""

from __future__ import annotations

import pytest
from distributed import Client, LocalCluster, get_task_stream

from spora_sd.stats.parallel import active_client, imap_tissues, map_tissues


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise RuntimeError(f"tissue {x} is broken")
    return x


def test_loop_without_client(capsys: pytest.CaptureFixture[str]) -> None:
    assert active_client() is None
    assert map_tissues(_square, [3, 1, 2]) == [9, 1, 4]
    assert list(imap_tissues(_square, [3, 1])) == [(0, 9), (1, 1)]
    assert map_tissues(_square, []) == []
    assert map_tissues(_square, [1, 2], progress=True, description="squares") == [1, 4]
    assert "squares" in capsys.readouterr().err  # the progress bar goes to stderr
    with pytest.raises(RuntimeError, match="tissue 3"):
        map_tissues(_fail_on_three, [1, 3])


def test_on_a_client_results_keep_their_order() -> None:
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            assert active_client() is client
            with get_task_stream(client) as tasks:
                assert map_tissues(_square, list(range(6))) == [x * x for x in range(6)]
            assert len([t for t in tasks.data if t["key"].startswith("_square")]) == 6
            assert sorted(imap_tissues(_square, [2, 3])) == [(0, 4), (1, 9)]
            with pytest.raises(RuntimeError, match="tissue 3"):
                map_tissues(_fail_on_three, [1, 2, 3, 4])
            # inside a task, nested maps run as a plain loop instead of waiting on the same workers
            assert client.submit(map_tissues, _square, [1, 2], pure=False).result() == [1, 4]
    assert active_client() is None
