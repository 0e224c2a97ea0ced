"""``INSERT … ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite: dedupe by constraint.

Statements are built once per (table, conflict key) and executed with a parameter list
(SQLAlchemy's "insertmanyvalues"), so the compiled form is cached whatever the row count.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session


@cache
def _statement(
    dialect: str, table: sa.Table, conflict: tuple[str, ...], returning: tuple[str, ...]
) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    if returning:
        stmt = stmt.returning(*(table.c[name] for name in returning), sort_by_parameter_order=True)
    return stmt


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
    if not rows:
        return None
    names = (returning.key,) if returning is not None else ()
    stmt = _statement(session.get_bind().dialect.name, _table(model), tuple(conflict), names)
    result = session.execute(stmt, rows if len(rows) > 1 else rows[0])
    if returning is None:
        return None
    return result.scalar_one_or_none()


def insert_ignore_returning(
    session: Session,
    model: Any,
    rows: list[dict[str, Any]],
    conflict: list[str],
    columns: tuple[Any, ...],
) -> list[tuple[Any, ...]]:
    """Multi-row insert-or-ignore; returns ``columns`` of the rows that were new."""
    if not rows:
        return []
    names = tuple(col.key for col in columns)
    stmt = _statement(session.get_bind().dialect.name, _table(model), tuple(conflict), names)
    return [tuple(r) for r in session.execute(stmt, rows).all()]
