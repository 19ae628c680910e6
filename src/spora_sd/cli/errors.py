"""How a ``spora-sd`` command ends: the one place that turns exceptions into exit codes.

- :class:`spora_sd.SporaError` (bad input, a missing cohort, a broken rule): ``Error: <message>`` on one
  line of stderr, exit code 1.
- Usage errors (a bad option): click's message, exit code 2.
- Anything else is a bug of spora-sd: the full traceback, a request to report it, exit code 3. It is
  never dressed up as a user error.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click
import typer
from rich.console import Console

from spora_sd.errors import SporaError

__all__ = ["BUG_EXIT_CODE", "ISSUES_URL", "console", "csv_list", "err_console", "handle_errors"]

console = Console()
# Wide lines when stderr is a file or pipe (CI logs): rich would otherwise wrap at 80 columns.
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

#: Exit code of an unexpected error (a bug), distinct from user errors (1) and usage errors (2).
BUG_EXIT_CODE = 3
ISSUES_URL = "https://github.com/spora-sd/spora-sd/issues"


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command: a :class:`SporaError` ends in one line and exit code 1, anything else is a bug.

    >>> @handle_errors
    ... def broken():
    ...     raise SporaError("cohort 'x' not found")
    >>> try:
    ...     broken()
    ... except typer.Exit as exit:
    ...     print(exit.exit_code)
    1
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except SporaError as exc:
            err_console.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception:  # noqa: BLE001 (the last resort: a bug, reported as one)
            err_console.print_exception(show_locals=False)
            err_console.print(
                "[bold red]This is a bug in spora-sd, not a problem with your input.[/] "
                f"Please report it with the traceback above and the command you ran: {ISSUES_URL}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(BUG_EXIT_CODE) from None

    return wrapper


def csv_list(value: str | None) -> list[str] | None:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; None or empty -> None.

    >>> csv_list("imc, he")
    ['imc', 'he']
    """
    return [v.strip() for v in value.split(",") if v.strip()] if value else None
