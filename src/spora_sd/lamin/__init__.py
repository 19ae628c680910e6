"""LaminDB integration: register spora cohorts as curated artifacts, find them by biology, load them.

Everything works offline: ontology terms come from the released ontologies that
``cellxgene-ontology-guide`` ships (see :func:`setup_ontologies`), and the instance is a local
SQLite file or a PostgreSQL server of your choice.

Needs a LaminDB instance (:func:`spora_sd.lamin.init_instance`)::

    import spora_sd.lamin as sl
    sl.init_instance("~/spora-lamin")
    sl.register("jackson2020")  # in place: the cohort folder, no copy
    sl.search(tissue="breast", disease="breast carcinoma")
    sdata = sl.load("jackson2020single")
    sl.register_catalogue()  # every registry cohort with a reachable copy (local, else the bucket)

Submodules are imported on first use, so ``import spora_sd.lamin`` does not import lamindb (or
connect to an instance) until a function needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY_IMPORTS: dict[str, str] = {
    "init_instance": "spora_sd.lamin.instance",
    "current_instance": "spora_sd.lamin.instance",
    "setup_ontologies": "spora_sd.lamin.ontologies",
    "resolve_term": "spora_sd.lamin.ontologies",
    "Term": "spora_sd.lamin.ontologies",
    "TermNotFoundError": "spora_sd.errors",
    "AmbiguousTermError": "spora_sd.errors",
    "spora_schema": "spora_sd.lamin.schema",
    "register": "spora_sd.lamin.registration",
    "MetadataError": "spora_sd.errors",
    "ArtifactNotFoundError": "spora_sd.errors",
    "search": "spora_sd.lamin.query",
    "get_artifact": "spora_sd.lamin.query",
    "load": "spora_sd.lamin.query",
    "export": "spora_sd.lamin.query",
    "demo": "spora_sd.lamin.walkthrough",
    "add_storage": "spora_sd.lamin.storage",
    "cohort_fingerprint": "spora_sd.lamin.fingerprint",
    "register_catalogue": "spora_sd.lamin.catalogue",
    "Catalogue": "spora_sd.lamin.catalogue",
}

__all__ = sorted(_LAZY_IMPORTS)

if TYPE_CHECKING:  # static imports for type checkers and IDEs ("x as x" marks a re-export)
    from spora_sd.errors import AmbiguousTermError as AmbiguousTermError
    from spora_sd.errors import ArtifactNotFoundError as ArtifactNotFoundError
    from spora_sd.errors import MetadataError as MetadataError
    from spora_sd.errors import TermNotFoundError as TermNotFoundError
    from spora_sd.lamin.catalogue import Catalogue as Catalogue
    from spora_sd.lamin.catalogue import register_catalogue as register_catalogue
    from spora_sd.lamin.fingerprint import cohort_fingerprint as cohort_fingerprint
    from spora_sd.lamin.instance import current_instance as current_instance
    from spora_sd.lamin.instance import init_instance as init_instance
    from spora_sd.lamin.ontologies import Term as Term
    from spora_sd.lamin.ontologies import resolve_term as resolve_term
    from spora_sd.lamin.ontologies import setup_ontologies as setup_ontologies
    from spora_sd.lamin.query import export as export
    from spora_sd.lamin.query import get_artifact as get_artifact
    from spora_sd.lamin.query import load as load
    from spora_sd.lamin.query import search as search
    from spora_sd.lamin.registration import register as register
    from spora_sd.lamin.schema import spora_schema as spora_schema
    from spora_sd.lamin.storage import add_storage as add_storage
    from spora_sd.lamin.walkthrough import demo as demo


def __getattr__(name: str) -> Any:
    if name in _LAZY_IMPORTS:
        value = getattr(importlib.import_module(_LAZY_IMPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'spora_sd.lamin' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
