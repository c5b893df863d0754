"""Alembic migrations: the only way pdo's tables are created or changed, the same on SQLite and PostgreSQL."""
