"""Create or connect a LaminDB instance with bionty and the offline ontologies.

An instance is a database (SQLite file inside the storage folder by default, or a PostgreSQL
database) plus a storage folder for artifacts. Both work offline; a PostgreSQL server on this machine
(``localhost``/``127.0.0.1``) counts as local. LaminDB keeps its own settings under
``$LAMIN_SETTINGS_DIR/.lamin`` (default: the home folder).

Examples
--------
Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

    import spora_sd.lamin as sl
    sl.init_instance("~/spora-lamin")                            # SQLite
    sl.init_instance("/data/spora-lamin", db="postgresql://lab@127.0.0.1:5432/spora")
    # a shared instance: PostgreSQL + an S3 bucket (endpoint_url for an S3-compatible server)
    sl.init_instance("/data/spora-lamin", db="postgresql://lab@db.lab:5432/spora",
                     shared_storage="s3://lab-bucket/lamin", endpoint_url="https://minio.lab:9000")
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from spora_sd.errors import InvalidArgumentError, SporaError
from spora_sd.lamin.ontologies import setup_ontologies

if TYPE_CHECKING:
    import lamindb as ln

__all__ = [
    "SHARED_STORAGE",
    "current_instance",
    "init_instance",
    "offline_hub_state",
    "quiet",
    "shared_storage",
    "storage_root",
]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@contextlib.contextmanager
def quiet(level: str = "error") -> Iterator[None]:
    """Lower lamindb's console verbosity for a block (its tips and "returning existing" notes).

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        with quiet():
            spora_schema()
    """
    import lamindb as ln

    previous = ln.settings.verbosity
    ln.settings.verbosity = level
    try:
        yield
    finally:
        ln.settings.verbosity = previous


def offline_hub_state() -> None:
    """Tell lamindb that an anonymous user's instance is not on LaminHub, so it does not ask the hub.

    lamindb asks LaminHub whether the instance is registered there before it adds a storage
    location or registers a path outside the default storage (``InstanceSettings.is_on_hub``), a
    network call that fails offline. An anonymous user cannot register an instance on the hub (that
    needs ``lamin login``), and an instance connected *from* the hub already knows it is there, so
    for an anonymous user an unknown answer is "no", which is also what the hub would answer.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        offline_hub_state()
    """
    import lamindb_setup

    instance = lamindb_setup.settings.instance
    if instance._is_on_hub is None and lamindb_setup.settings.user.handle == "anonymous":
        instance._is_on_hub = False


def storage_root(storage: str | Path, endpoint_url: str | None = None) -> str:
    """The storage root as lamindb takes it: a resolved local folder, or ``s3://...[?endpoint_url=...]``.

    Examples
    --------
    >>> storage_root("s3://lab/lamin/", endpoint_url="http://127.0.0.1:9000")
    's3://lab/lamin?endpoint_url=http://127.0.0.1:9000'
    >>> storage_root("/data/x/../lamin")
    '/data/lamin'
    """
    text = str(storage)
    if text.startswith("s3://"):
        if "?" in text:
            raise InvalidArgumentError(f"{text}: pass the endpoint with endpoint_url= (--endpoint-url), not in the URL")
        root = text.rstrip("/")
        return f"{root}?endpoint_url={endpoint_url}" if endpoint_url else root
    if "://" in text:
        raise InvalidArgumentError(f"{text}: a LaminDB storage is a local folder or an s3:// location")
    if endpoint_url:
        raise InvalidArgumentError("endpoint_url (--endpoint-url) is for s3:// storage only")
    return Path(text).expanduser().resolve().as_posix()


def _forget_stale_pgtrigger() -> None:
    """Let a new PostgreSQL instance's migrations import pgtrigger afresh.

    When this process already used a SQLite instance, lamindb re-creates Django's modules for the new
    instance but keeps pgtrigger's (it is no app of a SQLite instance), whose references to the old
    Django classes then fail pgtrigger's migrations (``assert issubclass(model, Model)``).
    """
    import sys

    django_lamin = sys.modules.get("lamindb_setup.core.django")
    if django_lamin is None or not getattr(django_lamin, "IS_SETUP", False):
        return
    for name in [m for m in sys.modules if m == "pgtrigger" or m.startswith("pgtrigger.")]:
        del sys.modules[name]


def _instance_name(root: str, name: str | None) -> str:
    # lamindb names an instance after its storage folder; make that explicit and valid
    if name is None:
        name = re.sub(r"[^a-z0-9-]+", "-", Path(root).name.lower()).strip("-") or "spora"
    if not _NAME.match(name):
        raise InvalidArgumentError(
            f"instance name {name!r}: use lower-case letters, digits and '-' (at most 63 characters)"
        )
    return name


def init_instance(
    storage: str | Path,
    *,
    db: str | None = None,
    name: str | None = None,
    ontologies: bool = True,
    shared_storage: str | None = None,
    endpoint_url: str | None = None,
) -> str:
    """Create a LaminDB instance with bionty (or connect to it if it exists) and load the ontologies.

    Parameters
    ----------
    storage
        Local folder of the instance; created if missing. With SQLite the database file lives
        inside it; it is the default storage for copies and ontology tables.
    db
        A PostgreSQL URL (``postgresql://user[:password]@host:port/database``); SQLite when None.
    name
        Instance name; defaults to the storage folder's name.
    ontologies
        Run :func:`~spora_sd.lamin.setup_ontologies` (a few seconds the first time, then instant).
    shared_storage
        An ``s3://bucket/prefix`` location for a shared instance (needs a PostgreSQL ``db``): it is
        recorded as a storage location of the instance, and SpatialData copies
        (``register(..., mode="spatialdata")``) go there, so every client of the database can load
        them. Credentials come from the usual AWS variables or files. Every client runs this same
        call (``spora-sd lamin init``) once, with its own local ``storage`` folder.
    endpoint_url
        The endpoint of an S3-compatible server (MinIO, Ceph, a loopback test server).

    Returns
    -------
    str
        The instance slug (``owner/name``), now the current instance of this process.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        slug = init_instance(tempfile.mkdtemp())
    """
    import lamindb_setup

    root = storage_root(storage)
    shared = storage_root(shared_storage, endpoint_url) if shared_storage else None
    if shared_storage is None and endpoint_url:
        raise InvalidArgumentError("endpoint_url (--endpoint-url) goes with shared_storage (--storage s3://...)")
    if shared is not None and not shared.startswith("s3://"):
        raise InvalidArgumentError(f"shared_storage {shared_storage!r}: expected an s3://bucket/prefix location")
    if shared is not None and not (db or "").startswith("postgres"):
        raise InvalidArgumentError("a shared instance (s3:// storage) needs a PostgreSQL database (db=, --db)")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    instance_name = _instance_name(root, name)
    if db is not None and db.startswith("postgres"):
        _forget_stale_pgtrigger()
    # lamindb's init marks the working directory as the instance's "dev dir" (.lamin/current_instance),
    # which would auto-connect any later lamindb session started there and block connecting to
    # other instances from it; init inside the storage folder and drop that marker
    with contextlib.chdir(path):
        lamindb_setup.init(storage=root, modules="bionty", db=db, name=instance_name)
    (path / ".lamin" / "current_instance").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (path / ".lamin").rmdir()
    import lamindb as ln  # after init: connects to the new instance

    offline_hub_state()
    slug = ln.setup.settings.instance.slug
    # lamindb connects to an existing instance of that name whatever storage was asked for
    storage_settings = ln.setup.settings.instance.storage
    if storage_settings is not None and Path(storage_settings.root_as_str).resolve() != path:
        raise SporaError(
            f"a LaminDB instance named {instance_name!r} already exists with storage {storage_settings.root_as_str}, "
            f"not {path}: pass another name= (--name), or that storage folder"
        )
    logger.info("LaminDB instance %s (%s, storage %s)", slug, ln.setup.settings.instance.dialect, path)
    if shared is not None:
        _add_shared_storage(shared)
    if ontologies:
        setup_ontologies()
    return slug


#: Description of the storage location that holds the copies of a shared instance.
SHARED_STORAGE = "spora shared storage"


def _add_shared_storage(root: str) -> None:
    """Record the bucket as the instance's shared storage location (idempotent)."""
    import lamindb as ln

    # LaminDB makes a cloud location the *default* storage only for instances registered on LaminHub;
    # a local instance records it as one more location, and spora-sd writes copies there explicitly
    existing = ln.Storage.filter(root=root).one_or_none()
    if existing is None:
        with quiet():
            existing = ln.Storage(root=root, description=SHARED_STORAGE).save()
        logger.info("shared storage %s recorded", root)
    elif existing.description != SHARED_STORAGE:
        existing.description = SHARED_STORAGE
        existing.save()
    others = ln.Storage.filter(description=SHARED_STORAGE).exclude(id=existing.id)
    others.update(description=None)  # one shared location: the last one asked for


def shared_storage() -> ln.Storage | None:
    """The shared (S3) storage location of the current instance, None for a local instance.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        shared_storage()
        # Storage(root='s3://lab-bucket/lamin?endpoint_url=...', ...)
    """
    import lamindb as ln

    return ln.Storage.filter(description=SHARED_STORAGE).first()


def current_instance() -> str:
    """The slug of the instance this process is connected to.

    Raises
    ------
    RuntimeError
        When no instance is set up; the message says how to create one.

    Examples
    --------
    Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

        current_instance()
        # 'anonymous/spora-lamin'
    """
    import lamindb_setup

    if not lamindb_setup.settings.is_configured:
        raise RuntimeError(
            "no LaminDB instance is set up: run `spora-sd lamin init DIR` or spora_sd.lamin.init_instance(DIR) first"
        )
    return lamindb_setup.settings.instance.slug
