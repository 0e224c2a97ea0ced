"""``INSERT … ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite: dedupe by constraint."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session


def insert_ignore(
    session: Session,
    model: Any,
    values: dict[str, Any] | list[dict[str, Any]],
    conflict: list[str],
    returning: Any = None,
) -> Any:
    """Insert the row(s) unless the unique key ``conflict`` exists; for one row, its
    ``returning`` column when it was new, else None."""
    if isinstance(values, list) and not values:
        return None
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(model).values(values).on_conflict_do_nothing(index_elements=conflict)
    if returning is None:
        session.execute(stmt)
        return None
    return session.execute(stmt.returning(returning)).scalar_one_or_none()


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
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(model).values(rows).on_conflict_do_nothing(index_elements=conflict)
    return [tuple(r) for r in session.execute(stmt.returning(*columns)).all()]
