"""Validation problems and the report that collects them.

Following spatialdata's ``raise_validation_errors``, checks *collect* problems (file, rule id,
message) instead of stopping at the first one, so a user sees everything that is wrong at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["Problem", "ValidationReport"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One broken rule.

    Attributes
    ----------
    file
        Path of the offending file or folder, relative to the cohort root where possible.
    rule
        Stable rule id, e.g. ``"table.column.missing"`` (see :doc:`/rules`).
    message
        Human readable explanation, naming the column, value or key involved.
    severity
        ``"error"`` makes the cohort invalid; ``"warning"`` does not.
    """

    file: str
    rule: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.severity.upper():7s} {self.file}: [{self.rule}] {self.message}"


@dataclass
class ValidationReport:
    """The outcome of :func:`spora_sd.validate`.

    Examples
    --------
    >>> report = ValidationReport(root="cohort")
    >>> report.add("metadata/tissues.parquet", "table.column.missing", "column 'tissue_id' is missing")
    >>> report.ok
    False
    >>> [p.rule for p in report.problems]
    ['table.column.missing']
    """

    root: str
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no problem has severity ``"error"``."""
        return not any(p.severity == "error" for p in self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def add(self, file: str | Path, rule: str, message: str, severity: Severity = "error") -> None:
        """Record a problem; ``file`` is made relative to the cohort root when it lies inside it."""
        self.problems.append(Problem(self._rel(file), rule, message, severity))

    def extend(self, problems: Iterable[Problem]) -> None:
        for p in problems:
            self.problems.append(Problem(self._rel(p.file), p.rule, p.message, p.severity))

    def count(self, what: str, n: int = 1) -> None:
        """Count what was checked (shown in the summary)."""
        self.checked[what] = self.checked.get(what, 0) + n

    def rules(self) -> set[str]:
        return {p.rule for p in self.problems}

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)

    def __len__(self) -> int:
        return len(self.problems)

    def _rel(self, file: str | Path) -> str:
        path = Path(file)
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def to_dict(self) -> dict:
        return {
            "root": self.root,
            "ok": self.ok,
            "checked": self.checked,
            "problems": [asdict(p) for p in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def raise_if_invalid(self) -> None:
        """Raise :class:`~spora_sd.errors.CohortFormatError` for the first error, listing all of them."""
        from spora_sd.errors import CohortFormatError

        if self.ok:
            return
        first = self.errors[0]
        more = "\n".join(str(p) for p in self.errors)
        raise CohortFormatError(Path(self.root) / first.file, first.rule, f"{first.message}\nAll problems:\n{more}")

    def __str__(self) -> str:
        head = f"{self.root}: {'valid' if self.ok else 'INVALID'}"
        head += f" ({len(self.errors)} errors, {len(self.warnings)} warnings)"
        return "\n".join([head, *(str(p) for p in self.problems)])
