"""Sphinx configuration. `make docs` builds with -W: every warning fails the build."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from _generate import generate  # noqa: E402

import spora_sd  # noqa: E402

project = "spora-sd"
author = "spora-sd developers"
copyright = "2026, spora-sd developers"
release = version = spora_sd.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx_autodoc_typehints",
]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "_generate.py"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autosummary_generate = True
always_document_param_types = False
typehints_fully_qualified = False
# Notebooks are executed on every build, so `make test` proves they still run.
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
intersphinx_mapping = {}
html_theme = "sphinx_book_theme"
html_title = "spora-sd"
suppress_warnings = ["myst.header", "config.cache"]
nitpicky = False

# The layout page's tables are generated from schemas/*.schema.json, so docs and validator agree.
generate(HERE / "generated")
