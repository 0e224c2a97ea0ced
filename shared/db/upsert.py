"""``INSERT … ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite: dedupe by constraint."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session


def insert_ignore(
    session: Session, model: Any, values: dict[str, Any], conflict: list[str], returning: Any = None
) -> Any:
    """Insert unless the unique key ``conflict`` exists; the new row's ``returning`` or None."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(model).values(**values).on_conflict_do_nothing(index_elements=conflict)
    if returning is None:
        session.execute(stmt)
        return None
    return session.execute(stmt.returning(returning)).scalar_one_or_none()
