"""``INSERT … ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite: dedupe by constraint."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.bulk import insert_each


def _table(model: Any) -> sa.Table:
    return model.__table__ if hasattr(model, "__table__") else model


def insert_ignore(
    session: Session,
    model: Any,
    values: dict[str, Any] | list[dict[str, Any]],
    conflict: list[str],
    returning: Any = None,
) -> Any:
    """Insert the row(s) unless the unique key ``conflict`` exists; for one row, its
    ``returning`` column when it was new, else None."""
    rows = values if isinstance(values, list) else [values]
    names = (returning.key,) if returning is not None else ()
    got = insert_each(session, _table(model), rows, conflict=conflict, returning=names)
    if returning is None or not got or got[0] is None:
        return None
    return got[0][0]


def insert_ignore_returning(
    session: Session,
    model: Any,
    rows: list[dict[str, Any]],
    conflict: list[str],
    columns: tuple[Any, ...],
) -> list[tuple[Any, ...]]:
    """Multi-row insert-or-ignore; returns ``columns`` of the rows that were new, in order."""
    names = tuple(col.key for col in columns)
    got = insert_each(session, _table(model), rows, conflict=conflict, returning=names)
    return [r for r in got if r is not None]
