"""The offline Vitessce view of a cohort (``spora-sd view``, ``spora_sd.view``).

The package is named ``viewer``, not ``view``: a submodule named like the public function would
replace ``spora_sd.view`` (the function) on the package once imported (see docs/design.md).

- :mod:`~spora_sd.viewer.launch`: :func:`view`, the entry point;
- :mod:`~spora_sd.viewer.server`: the loopback HTTP server and its request log;
- :mod:`~spora_sd.viewer.session`: the cohort, its tissues and each tissue's view;
- :mod:`~spora_sd.viewer.channel_chunks`: a cohort image as the browser reads it, one channel per chunk;
- :mod:`~spora_sd.viewer.config`: the Vitessce view config (the ``vitessce`` Python package);
- :mod:`~spora_sd.viewer.contrast`: default channels and contrast, from the cohort's statistics;
- :mod:`~spora_sd.viewer.stores`: the cell outlines and cells, written once per tissue for Vitessce;
- :mod:`~spora_sd.viewer.page`: the HTML page; :mod:`~spora_sd.viewer.bundle`: the local JavaScript;
- :mod:`~spora_sd.viewer.artifact`: the cohort behind a registered LaminDB artifact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ViewServer", "view"]

if TYPE_CHECKING:
    from spora_sd.viewer.launch import view
    from spora_sd.viewer.server import ViewServer


def __getattr__(name: str) -> Any:
    # lazy, like the top-level facade: importing the package loads no server, zarr or vitessce code
    if name == "view":
        from spora_sd.viewer.launch import view

        return view
    if name == "ViewServer":
        from spora_sd.viewer.server import ViewServer

        return ViewServer
    raise AttributeError(f"module 'spora_sd.viewer' has no attribute {name!r}")
