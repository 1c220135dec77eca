"""Progress bars for long commands (rich), drawn on stderr so stdout stays machine-readable."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def progress_bar(description: str, total: int | None, unit: str) -> Iterator[Callable[..., None]]:
    """Show a bar; yield ``advance(n, note="")``: ``note`` (counts, say) is shown after the bar.

    ``total=None`` shows a running count instead of a bar.
    """
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit)]
    note = TextColumn("{task.fields[note]}")
    with Progress(*columns, TimeElapsedColumn(), note, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total, note="")

        def advance(n: int = 1, note: str | None = None) -> None:
            bar.update(task, advance=n, **({"note": note} if note is not None else {}))

        yield advance
