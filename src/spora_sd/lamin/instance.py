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
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from spora_sd.errors import InvalidArgumentError, SporaError
from spora_sd.lamin.ontologies import setup_ontologies

__all__ = ["current_instance", "init_instance", "quiet"]

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


def _instance_name(storage: Path, name: str | None) -> str:
    # lamindb names an instance after its storage folder; make that explicit and valid
    if name is None:
        name = re.sub(r"[^a-z0-9-]+", "-", storage.name.lower()).strip("-") or "spora"
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
) -> str:
    """Create a LaminDB instance with bionty (or connect to it if it exists) and load the ontologies.

    Parameters
    ----------
    storage
        Folder for the artifacts; created if missing. With SQLite the database file lives inside it.
    db
        A PostgreSQL URL (``postgresql://user[:password]@host:port/database``); SQLite when None.
    name
        Instance name; defaults to the storage folder's name.
    ontologies
        Run :func:`~spora_sd.lamin.setup_ontologies` (a few seconds the first time, then instant).

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

    path = Path(storage).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    instance_name = _instance_name(path, name)
    if db is not None and db.startswith("postgres"):
        _forget_stale_pgtrigger()
    # lamindb's init marks the working directory as the instance's "dev dir" (.lamin/current_instance),
    # which would auto-connect any later lamindb session started there and block connecting to
    # other instances from it; init inside the storage folder and drop that marker
    with contextlib.chdir(path):
        lamindb_setup.init(storage=str(path), modules="bionty", db=db, name=instance_name)
    (path / ".lamin" / "current_instance").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (path / ".lamin").rmdir()
    import lamindb as ln  # after init: connects to the new instance

    slug = ln.setup.settings.instance.slug
    # lamindb connects to an existing instance of that name whatever storage was asked for
    storage_settings = ln.setup.settings.instance.storage
    if storage_settings is not None and Path(storage_settings.root_as_str).resolve() != path:
        raise SporaError(
            f"a LaminDB instance named {instance_name!r} already exists with storage {storage_settings.root_as_str}, "
            f"not {path}: pass another name= (--name), or that storage folder"
        )
    logger.info("LaminDB instance %s (%s, storage %s)", slug, ln.setup.settings.instance.dialect, path)
    if ontologies:
        setup_ontologies()
    return slug


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
