"""LaminDB test setup: a throw-away instance per backend and session, no network but loopback.

- ``LAMIN_SETTINGS_DIR`` (and lamindb's cache folder) point to a temporary folder,
  set here before lamindb is imported, so the user's ``~/.lamin`` is never read or written.
- Every test in this folder may only connect to loopback addresses: pytest-socket's ``allow_hosts``
  mark is added to each of them, and the session fixtures that create instances apply the same
  guard while they run. lamindb needs no setting for this: with a local storage folder and a
  local database it never contacts LaminHub (checked: init, setup_ontologies, register, search and
  load with every connect() and DNS look-up recorded made none but loopback).
- The backend fixture is parametrized over SQLite and PostgreSQL. The PostgreSQL server comes from
  ``SPORA_SD_TEST_PG_URL`` (``make test`` starts one with ``.ci/postgres.sh``); each session creates
  its own database on it and drops it at the end. Without the variable the postgres tests fail
  (never skip) with a message saying how to run them.
- The PostgreSQL instance is a *shared* one: its SpatialData copies go to an S3 bucket served by
  moto's standalone server on loopback (the session's ``s3_server``, tests/servers.py), with its
  test credentials set in the environment for the session (:func:`lamin_s3`; subprocesses of the
  tests inherit them).
- All tests here share one xdist group, so under ``pytest -n 2 --dist loadgroup`` one worker creates
  the instances once (PostgreSQL migrations alone take 35-90 s, minutes on a loaded machine). With
  pytest 9.2 the group only takes effect through tests/xdist_groups.py; without it both workers
  made their own instances. The group is the largest, so xdist hands it out first.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

LOOPBACK = ["127.0.0.1", "localhost", "::1"]
PG_ENV = "SPORA_SD_TEST_PG_URL"

if "lamindb_setup" in sys.modules and "LAMIN_SETTINGS_DIR" not in os.environ:
    raise pytest.UsageError("lamindb was imported before tests/lamin/conftest.py could isolate its settings")
_SETTINGS_ROOT = Path(tempfile.mkdtemp(prefix="spora-sd-lamin-"))
os.environ["LAMIN_SETTINGS_DIR"] = str(_SETTINGS_ROOT)
os.environ["LAMIN_CACHE_DIR"] = str(_SETTINGS_ROOT / "cache")


def pytest_configure(config: pytest.Config) -> None:
    # spatialdata.testing imports anndata's and dask's test modules, which use these marks at import
    # time; under --strict-markers they must be known
    config.addinivalue_line("markers", "gpu: GPU tests of anndata/dask (imported by spatialdata.testing)")
    config.addinivalue_line("markers", "skip_with_pyarrow_strings: dask test mark (imported by spatialdata.testing)")
    config.addinivalue_line("markers", "array_api: anndata test mark on Python 3.12 (imported by spatialdata.testing)")


def pytest_unconfigure(config: pytest.Config) -> None:
    # the settings folder also holds lamindb's cache (a copy of every artifact written)
    shutil.rmtree(_SETTINGS_ROOT, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.allow_hosts(LOOPBACK))
            item.add_marker(pytest.mark.xdist_group("lamin"))


def _guard_network() -> None:
    from pytest_socket import socket_allow_hosts

    socket_allow_hosts(LOOPBACK, allow_unix_socket=True)


def _create_database(url: str) -> tuple[str, str]:
    """A fresh database on the test server: (its URL, its name)."""
    import psycopg2
    from psycopg2 import sql

    name = f"spora_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conn.close()
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}", name


def _drop_database(url: str, name: str) -> None:
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    conn.close()


class Backend:
    """One test instance: its backend name, slug and storage folder (and database URL, shared bucket)."""

    def __init__(
        self,
        name: str,
        slug: str,
        storage: Path,
        drop: Callable[[], None] | None = None,
        db: str | None = None,
        shared: str | None = None,
        s3: Any = None,
    ) -> None:
        self.name = name
        self.slug = slug
        self.storage = storage
        self.drop = drop  # removes the backend's database at the end of the session
        self.db = db
        self.shared = shared  # s3://bucket/prefix of a shared instance
        self.s3 = s3  # its server (tests/servers.py S3Server)
        self.endpoint_url = s3.endpoint_url if s3 is not None else None

    def connect(self) -> None:
        import lamindb as ln

        if ln.setup.settings.instance.slug != self.slug:
            ln.connect(self.slug)


_INSTANCES: dict[str, Backend] = {}


@pytest.fixture(scope="session")
def _lamin_instances() -> Iterator[dict[str, Backend]]:
    yield _INSTANCES
    for backend in _INSTANCES.values():
        if backend.drop is not None:
            backend.drop()


@pytest.fixture(scope="session")
def lamin_s3(s3_server: Any) -> Iterator[Any]:
    """The session's S3 server (tests/servers.py, moto on loopback), its credentials in the environment.

    lamindb's S3 storage reads credentials the standard way (botocore: the environment), and so do
    the client processes that tests start; the variables are restored at the end of the session.
    """
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: v for k, v in s3_server.env().items() if k in names})
    yield s3_server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _make_backend(name: str, root: Path, s3: Any = None) -> Backend:
    from spora_sd.lamin import init_instance

    _guard_network()
    storage = root / f"storage-{name}"
    if name == "sqlite":
        slug = init_instance(storage, name="spora-test-sqlite")
        return Backend(name, slug, storage)
    server = os.environ.get(PG_ENV)
    if not server:
        pytest.fail(
            f"{PG_ENV} is not set: the PostgreSQL tests need a running server. Run them through `make test` "
            f"(it starts one with .ci/postgres.sh), or: export {PG_ENV}=$(bash .ci/postgres.sh start)",
            pytrace=False,
        )
    url, db_name = _create_database(server)
    shared = f"s3://{s3.bucket}/lamin"
    slug = init_instance(storage, db=url, name="spora-test-pg", shared_storage=shared, endpoint_url=s3.endpoint_url)
    return Backend(
        name,
        slug,
        storage,
        drop=lambda: _drop_database(server, db_name),
        db=url,
        shared=shared,
        s3=s3,
    )


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def backend(
    request: pytest.FixtureRequest, _lamin_instances: dict[str, Backend], tmp_path_factory: pytest.TempPathFactory
) -> Backend:
    """The instance of one backend, created on first use in this session."""
    name = request.param
    if name not in _lamin_instances:
        s3 = request.getfixturevalue("lamin_s3") if name == "postgres" else None
        _lamin_instances[name] = _make_backend(name, tmp_path_factory.mktemp("lamin"), s3)
    return _lamin_instances[name]


@pytest.fixture
def lamin(backend: Backend) -> Backend:
    """Connect this process to the backend's instance (tests of both backends interleave)."""
    _guard_network()
    backend.connect()
    return backend


@pytest.fixture(scope="session")
def synthetic_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two small synthetic cohorts (IMC only), written once per session."""
    import spora_sd

    root = tmp_path_factory.mktemp("cohorts")
    small = {"image_size": 64, "n_cells": 12, "modalities": ("imc",), "standardization": False, "tiling": False}
    return {
        "lung": spora_sd.make_synthetic_cohort(root, name="lung2024synthetic", n_tissues=2, seed=1, **small),
        "tnbc": spora_sd.make_synthetic_cohort(root, name="tnbc2024synthetic", n_tissues=3, seed=2, **small),
    }


@pytest.fixture
def cohort_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Make a small synthetic cohort (IMC only) in a fresh folder: ``cohort_factory(name, n_tissues=2)``."""
    import spora_sd

    def make(name: str, n_tissues: int = 2, seed: int = 3) -> Path:
        root = tmp_path_factory.mktemp("cohort")
        small = {"image_size": 64, "n_cells": 12, "modalities": ("imc",), "standardization": False, "tiling": False}
        return spora_sd.make_synthetic_cohort(root, name=name, n_tissues=n_tissues, seed=seed, **small)

    return make


@pytest.fixture(scope="session")
def sdata_factory() -> Any:
    """:func:`make_sdata`, for tests (conftest modules are not importable under importlib mode)."""
    return make_sdata


def make_sdata(
    dataset: str,
    *,
    tissue: Any = "lung",
    disease: Any = "non-small cell lung carcinoma",
    organism: Any = "human",
    assay: Any = "imaging mass cytometry",
    n_tissues: int = 2,
    seed: int = 0,
    cell_types: tuple[str, ...] = ("T cell", "B cell", "tumor"),
) -> Any:
    """A small SpatialData with the conventions of ``to_spatialdata`` (design.md), built by hand.

    One coordinate system per tissue, an IMC image and a cell-instance mask per tissue, and the cell
    table ``cells`` annotating the masks (region / region_key / instance_key ``cell_id``).
    """
    import anndata as ad
    import numpy as np
    import pandas as pd
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, Labels2DModel, TableModel
    from spatialdata.transformations import Scale

    rng = np.random.default_rng(seed)
    markers = ["CD3E", "MS4A1", "KRT5"]
    images, labels, rows = {}, {}, []
    for i in range(n_tissues):
        tissue_id = f"{dataset}_{i:08x}_0000"
        scale = Scale([1.0, 1.0], axes=("y", "x"))
        pixels = rng.integers(0, 255, size=(len(markers), 32, 32), dtype=np.uint8)
        images[f"{tissue_id}__imc"] = Image2DModel.parse(
            pixels, dims=("c", "y", "x"), c_coords=markers, transformations={tissue_id: scale}
        )
        mask = np.zeros((32, 32), dtype=np.int32)
        for label, (y, x) in enumerate([(2, 2), (10, 10), (20, 20)], start=1):
            mask[y : y + 6, x : x + 6] = label
        labels[f"{tissue_id}__cells"] = Labels2DModel.parse(mask, dims=("y", "x"), transformations={tissue_id: scale})
        for label in (1, 2, 3):
            rows.append(
                {
                    "region": f"{tissue_id}__cells",
                    "tissue_id": tissue_id,
                    "cell_id": label,
                    "cell_type": cell_types[(label - 1) % len(cell_types)],
                }
            )
    obs = pd.DataFrame(rows)
    for column in ("region", "tissue_id", "cell_type"):
        obs[column] = obs[column].astype("category")
    obs.index = obs.index.astype(str)
    var = pd.DataFrame(
        {"qc_pass": True, "uniprot_id": ["P07766", "P11836", "P13647"], "is_nuclear_marker": False}, index=markers
    )
    table = TableModel.parse(
        ad.AnnData(X=rng.random((len(obs), len(markers))).astype("float32"), obs=obs, var=var),
        region=sorted(labels),
        region_key="region",
        instance_key="cell_id",
    )
    sdata = SpatialData(images=images, labels=labels, tables={"cells": table})
    sdata.attrs.update(
        {
            "dataset": dataset,
            "bio": {"tissue": tissue, "disease": disease, "organism": organism},
            "tech": {"assay": assay},
        }
    )
    return sdata
