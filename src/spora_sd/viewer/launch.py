"""``spora_sd.view``: start the loopback server of a cohort's Vitessce view and open (or print) its URL.

Examples
--------
From Python (blocks until Ctrl+C)::

    import spora_sd
    spora_sd.view("jackson2020", tissue="jackson2020single_1a2b3c4d_0000")

Non-blocking, e.g. in a notebook or a test::

    server = spora_sd.view(path, open_browser=False, block=False)
    server.url   # 'http://127.0.0.1:40213/'
    server.stop()
"""

from __future__ import annotations

import logging
import os
import webbrowser
from pathlib import Path
from typing import Any

from spora_sd.viewer.server import ViewServer

__all__ = ["view"]

logger = logging.getLogger(__name__)


def view(
    cohort: str | os.PathLike[str] | Any,
    tissue: str | None = None,
    port: int = 0,
    open_browser: bool = True,
    *,
    modality: str | None = None,
    block: bool = True,
    cache: str | Path | None = None,
) -> ViewServer:
    """Show a cohort in Vitessce, served from this machine (no internet, no CDN).

    Parameters
    ----------
    cohort
        A cohort folder, dataset key or alias (:func:`spora_sd.open_cohort`).
    tissue
        The tissue shown first (default: the first); the page's picker switches between tissues.
    port
        Port on 127.0.0.1 (0: a free one).
    open_browser
        Open the page in the default browser; otherwise only log its URL.
    modality
        The modality to show (default: the first multiplex modality with images, else H&E).
    block
        Serve until Ctrl+C (the command line); ``False`` returns the running server at once.
    cache
        Folder for the per-tissue stores (cell outlines, cells); default: a temporary folder.

    Returns
    -------
    ViewServer
        The server (stopped when ``block`` is true and the user interrupted it).

    Raises
    ------
    ViewerBundleMissingError
        The Vitessce bundle is not built; the message says how to build it.
    InvalidArgumentError
        ``tissue`` or ``modality`` is not in the cohort.
    """
    server = ViewServer(cohort, port=port, modality=modality, cache=cache, tissue=tissue)
    server.start()
    url = server.tissue_url(tissue) if tissue is not None else server.url
    logger.info("open %s (Ctrl+C stops the server)", url)
    if open_browser:
        webbrowser.open(url)
    if block:
        server.wait()
    return server
