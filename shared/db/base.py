"""Declarative base, constraint naming and the column types every model shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive values)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def clip(value: str | None, limit: int) -> str | None:
    """``value`` cut to a column's ``limit`` characters (§6: over-long values are truncated
    where they are stored, never a reason for a message or a shared commit to fail)."""
    return value if value is None or len(value) <= limit else value[:limit]


def table_of(model: type[DeclarativeBase]) -> sa.Table:
    """A mapped class's table, typed as one (SQLAlchemy types ``__table__`` as any FromClause,
    since a class may be mapped to a join or a select; ours are all mapped to tables)."""
    table = model.__table__
    assert isinstance(table, sa.Table), model
    return table


def utcnow() -> datetime:
    return datetime.now(UTC)


class JSONValue(sa.types.TypeDecorator[Any]):
    """JSONB on PostgreSQL, JSON text elsewhere."""

    impl = sa.JSON()
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.JSONB())
        return dialect.type_descriptor(sa.JSON())


JSONType = JSONValue()


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        dict[str, Any] | None: JSONType,
        list[Any]: JSONType,
        list[Any] | None: JSONType,
    }
