"""Exceptions raised by spora-sd.

Every error about a cohort names the file it concerns and the layout rule it breaks, so that a user
can fix the input without reading our source.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CohortFormatError", "CohortNotFoundError", "LayoutNameError", "SporaError"]


class SporaError(Exception):
    """Base class of every spora-sd error."""


class LayoutNameError(SporaError, ValueError):
    """A name (resolution, tissue id, modality, dataset key, ...) breaks the layout's naming rules."""


class CohortFormatError(SporaError, ValueError):
    """A file of a cohort breaks a rule of the spora layout.

    Parameters
    ----------
    file
        The offending file or folder.
    rule
        Stable rule id, the same that :func:`spora_sd.validate` reports.
    message
        What is wrong, in words.
    """

    def __init__(self, file: str | Path, rule: str, message: str) -> None:
        self.file = str(file)
        self.rule = rule
        self.message = message
        super().__init__(f"{self.file}: [{rule}] {message}")


class CohortNotFoundError(SporaError, FileNotFoundError):
    """A cohort (or a file of it) is not where it was looked for."""
