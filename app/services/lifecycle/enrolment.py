"""Bulk enrolment from a CSV file of any size: read as a stream, enrolled in batches.

Each batch is its own transaction, so a long run commits as it goes and a failed one is simply
run again (enrolment is idempotent: the people done already are reported as such).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

from app.services.lifecycle.bulk_enrolment import MAX_ENROLMENT_BATCH, EnrolmentResult

MYKAD_COLUMN = "mykad"


def read_mykads(path: Path) -> Iterator[str]:
    """The MyKads of a CSV file (see `mykads_in`)."""
    with path.open(newline="", encoding="utf-8-sig") as file:
        yield from mykads_in(file)


def mykads_in(lines: Iterable[str]) -> Iterator[str]:
    """The MyKad of each non-empty row: the `mykad` column when the first row is a header
    naming one, otherwise the first column."""
    rows = csv.reader(lines)
    column = 0
    for number, row in enumerate(rows):
        cells = [cell.strip() for cell in row]
        if number == 0:
            names = [cell.lower() for cell in cells]
            if MYKAD_COLUMN in names:
                column = names.index(MYKAD_COLUMN)
                continue
        if len(cells) > column and cells[column]:
            yield cells[column]


def count_mykads(path: Path) -> int:
    return sum(1 for _ in read_mykads(path))


def enrol_in_batches(
    enrol_batch: Callable[[list[str]], list[EnrolmentResult]],
    mykads: Iterable[str],
    *,
    batch_size: int = 500,
) -> Iterator[list[EnrolmentResult]]:
    """Enrol `batch_size` people per call of `enrol_batch`, which runs one transaction (the
    caller builds it: `ApplicationService.enrol` in a unit of work); yields each batch's report
    once committed."""
    if not 1 <= batch_size <= MAX_ENROLMENT_BATCH:
        raise ValueError(f"batch size must be 1 to {MAX_ENROLMENT_BATCH}")
    pending = iter(mykads)
    while batch := list(islice(pending, batch_size)):
        yield enrol_batch(batch)
