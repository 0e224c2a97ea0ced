"""``INSERT … ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite: dedupe by constraint."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import QueryableAttribute, Session

from shared.db.base import Base, table_of
from shared.db.bulk import insert_each


def insert_ignore(
    session: Session,
    model: type[Base],
    values: dict[str, Any] | list[dict[str, Any]],
    conflict: list[str],
    returning: QueryableAttribute[Any] | None = None,
) -> Any:
    """Insert the row(s) unless the unique key ``conflict`` exists; for one row, its
    ``returning`` column when it was new, else None."""
    rows = values if isinstance(values, list) else [values]
    names = (returning.key,) if returning is not None else ()
    got = insert_each(session, table_of(model), rows, conflict=conflict, returning=names)
    if returning is None or not got or got[0] is None:
        return None
    return got[0][0]


def insert_ignore_returning(
    session: Session,
    model: type[Base],
    rows: list[dict[str, Any]],
    conflict: list[str],
    columns: tuple[QueryableAttribute[Any], ...],
) -> list[tuple[Any, ...]]:
    """Multi-row insert-or-ignore; returns ``columns`` of the rows that were new, in order."""
    names = tuple(col.key for col in columns)
    got = insert_each(session, table_of(model), rows, conflict=conflict, returning=names)
    return [r for r in got if r is not None]
