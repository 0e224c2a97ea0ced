"""Database: engine and sessions, typed models, migrations."""
