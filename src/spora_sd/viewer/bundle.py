"""The local Vitessce bundle: Vitessce and React built into one JavaScript file, served with no CDN.

The bundle is built from ``js/vitessce-bundle/`` (npm ``vitessce`` + ``react``, bundled with esbuild; Vitessce injects its styles from JavaScript, so there is no CSS file)
by ``make vitessce-bundle`` and lands in ``spora_sd/viewer/static/``, which the wheel ships as
package data. This module only finds it, and says how to build it when it is missing.

Examples
--------
>>> BUNDLE_JS
'vitessce-bundle.js'
>>> static_dir().name
'static'
"""

from __future__ import annotations

from pathlib import Path

from spora_sd.errors import ViewerBundleMissingError

__all__ = ["BUILD_HINT", "BUNDLE_JS", "find_bundle", "static_dir"]

BUNDLE_JS = "vitessce-bundle.js"
#: How to build the bundle (said by ``spora-sd view`` when it is missing).
BUILD_HINT = (
    "build it once with `make vitessce-bundle` in a spora-sd checkout (needs node and npm), i.e. "
    "`cd js/vitessce-bundle && npm ci && npm run build`; it writes src/spora_sd/viewer/static/"
    f"{BUNDLE_JS}. Wheels of spora-sd ship it already."
)


def static_dir() -> Path:
    """The folder of the bundle and the page assets, inside the installed package."""
    return Path(__file__).resolve().parent / "static"


def find_bundle(folder: Path | None = None) -> Path:
    """The bundle's folder (``static_dir()`` unless given), checked to hold the built JavaScript.

    Raises
    ------
    ViewerBundleMissingError
        The bundle is not built; the message says how to build it.
    """
    folder = static_dir() if folder is None else Path(folder)
    js = folder / BUNDLE_JS
    if not js.is_file() or js.stat().st_size == 0:
        raise ViewerBundleMissingError(f"{js}: the Vitessce bundle of `spora-sd view` is missing; {BUILD_HINT}")
    return folder
