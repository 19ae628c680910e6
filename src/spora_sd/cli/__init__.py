"""The ``spora-sd`` command line (entry point :func:`main`)."""

from spora_sd.cli.app import app, main

__all__ = ["app", "main"]
