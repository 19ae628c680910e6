"""Exceptions raised by spora-sd.

Every error about a cohort names the file it concerns and the layout rule it breaks, so that a user
can fix the input without reading our source.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spora_sd.lamin.ontologies import Term

__all__ = [
    "AmbiguousTermError",
    "ArtifactNotFoundError",
    "AttrsFormatError",
    "AttrsVersionError",
    "CohortFormatError",
    "CohortNotFoundError",
    "ExportInputError",
    "InvalidArgumentError",
    "LayoutNameError",
    "RemoteAccessError",
    "MetadataError",
    "SporaError",
    "TargetExistsError",
    "TargetLockedError",
    "TermNotFoundError",
    "ViewerBundleMissingError",
]


class SporaError(Exception):
    """Base class of every spora-sd error.

    Each subclass also derives from the builtin exception a caller would expect (``ValueError``,
    ``FileNotFoundError``, ...), so ``except ValueError`` keeps working.

    >>> issubclass(InvalidArgumentError, ValueError) and issubclass(TargetExistsError, FileExistsError)
    True
    """


class InvalidArgumentError(SporaError, ValueError):
    """An argument value a user passed is not allowed; the message names the value and the valid ones."""


class TargetExistsError(SporaError, FileExistsError):
    """An output (file or folder) exists and overwriting it was not asked for."""


class TargetLockedError(SporaError, BlockingIOError):
    """Another process is writing the same output (file, folder or cohort) right now.

    Writers of one target are serialised by a lock file next to it (:mod:`spora_sd.io.atomic`); the
    second one fails at once, before it writes anything. The message names the process that holds
    the lock (pid, host, start time) when it could be read.

    >>> issubclass(TargetLockedError, BlockingIOError)
    True
    """


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


class RemoteAccessError(SporaError, OSError):
    """A remote cohort (``s3://``, ``https://``, an rclone remote) could not be read.

    One line naming the URL (never a secret) and what to do. ``kind`` says why: ``"credentials"``
    (refused: wrong or missing keys), ``"unreachable"`` (no server answers), ``"timeout"``,
    ``"throttled"`` (429/503 SlowDown, after retries) or ``"server"`` (other 5xx, after retries). A
    missing object is a :class:`CohortNotFoundError` naming it instead.

    >>> issubclass(RemoteAccessError, OSError)
    True
    """

    def __init__(self, url: str, kind: str, message: str) -> None:
        self.url = url
        self.kind = kind
        super().__init__(f"{url}: [{kind}] {message}")


class AttrsFormatError(SporaError, ValueError):
    """``sdata.attrs["spora"]`` (:mod:`spora_sd.convert.attrs`) is malformed: wrong types or missing keys.

    Attributes
    ----------
    problems
        One ``(key path, message)`` pair per problem, the key path spelled as Python
        (``sdata.attrs['spora']['elements']['x__imc']['kind']``).

    >>> print(AttrsFormatError([("sdata.attrs['spora']['dataset']", "required key missing")]))
    sdata.attrs['spora'] is malformed: sdata.attrs['spora']['dataset']: required key missing
    """

    def __init__(self, problems: list[tuple[str, str]], where: str = "sdata.attrs['spora']") -> None:
        self.problems = list(problems)
        lines = [f"{path}: {message}" for path, message in self.problems]
        if len(lines) == 1:
            text = f"{where} is malformed: {lines[0]}"
        else:
            text = f"{where} is malformed ({len(lines)} problems):\n" + "\n".join(f"  - {x}" for x in lines)
        super().__init__(text)


class AttrsVersionError(AttrsFormatError):
    """``sdata.attrs["spora"]`` has a newer major format version than this spora-sd reads.

    Attributes
    ----------
    found, supported
        The store's ``format_version`` and the one this spora-sd writes (``MAJOR.MINOR``).
    """

    def __init__(self, found: str, supported: str, package_version: str) -> None:
        self.found = found
        self.supported = supported
        SporaError.__init__(
            self,
            f"sdata.attrs['spora']['format_version']: format version {found} is newer than this spora-sd "
            f"{package_version} supports (format {supported}: major version {supported.split('.')[0]} and older); "
            "upgrade spora-sd (pip install -U spora-sd) to read this SpatialData",
        )
        self.problems = [("sdata.attrs['spora']['format_version']", f"format version {found} is not supported")]


class ExportInputError(SporaError, ValueError):
    """The SpatialData lacks something the export needs; the message names it and the argument that supplies it.

    Attributes
    ----------
    problems
        Every problem found, one message each (an export reports them all at once, not only the first).

    >>> error = ExportInputError(["image 'a': no channel names", "table 'cells': no 'tissue_id' column"])
    >>> error.problems[1]
    "table 'cells': no 'tissue_id' column"
    >>> print(error)
    2 problems with the SpatialData to export:
      - image 'a': no channel names
      - table 'cells': no 'tissue_id' column
    >>> str(ExportInputError("no tissue to export"))
    'no tissue to export'
    """

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            listed = "\n".join(f"  - {problem}" for problem in self.problems)
            message = f"{len(self.problems)} problems with the SpatialData to export:\n{listed}"
        super().__init__(message)


class MetadataError(SporaError, ValueError):
    """The dataset metadata (``sdata.attrs``) lacks a field, or contradicts itself."""


class ArtifactNotFoundError(SporaError, LookupError):
    """No registered cohort has that uid, key or dataset key."""


class ViewerBundleMissingError(SporaError, FileNotFoundError):
    """The local Vitessce JavaScript bundle of ``spora-sd view`` is not built; the message says how to build it."""


class TermNotFoundError(SporaError, ValueError):
    """A value is no name, synonym or id of the ontology that backs its field.

    Attributes
    ----------
    field, value, ontology, suggestions, where
        What was looked up, in which ontology, the closest names, and where the value came from.
    """

    def __init__(self, field: str, value: str, ontology: str, suggestions: list[str], where: str | None = None) -> None:
        self.field = field
        self.value = value
        self.ontology = ontology
        self.suggestions = suggestions
        self.where = where
        hint = "close matches: " + ", ".join(repr(s) for s in suggestions) if suggestions else "no close matches"
        origin = f" (from {where})" if where else ""
        super().__init__(
            f"{field} {value!r}{origin} is not a name, synonym or id of {ontology}; {hint}. "
            f"Give a term name, a synonym or an ontology id."
        )


class AmbiguousTermError(SporaError, ValueError):
    """A value is a synonym of several terms; the user must pick one by name or id."""

    def __init__(self, field: str, value: str, candidates: list[Term], where: str | None = None) -> None:
        self.field = field
        self.value = value
        self.candidates = candidates
        origin = f" (from {where})" if where else ""
        listed = ", ".join(f"{c.name!r} ({c.ontology_id})" for c in candidates)
        super().__init__(f"{field} {value!r}{origin} is a synonym of several terms: {listed}; give the name or id.")
