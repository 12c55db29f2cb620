"""The database itself refuses to change or delete an audit entry (PostgreSQL and SQLite triggers), so not even
raw SQL from the application rewrites history. An operator who must purge old entries drops the trigger first."""
from django.db import migrations

TABLE = "audit_auditentry"
MESSAGE = "audit entries are append-only"

POSTGRES_UP = f"""
CREATE OR REPLACE FUNCTION audit_entry_append_only() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION '{MESSAGE}'; END; $$ LANGUAGE plpgsql;
CREATE TRIGGER audit_entry_append_only BEFORE UPDATE OR DELETE ON {TABLE}
FOR EACH ROW EXECUTE FUNCTION audit_entry_append_only();
"""
POSTGRES_DOWN = f"""
DROP TRIGGER IF EXISTS audit_entry_append_only ON {TABLE};
DROP FUNCTION IF EXISTS audit_entry_append_only();
"""
SQLITE_UP = [
    f"CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON {TABLE} BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;",
    f"CREATE TRIGGER audit_entry_no_delete BEFORE DELETE ON {TABLE} BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;",
]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS audit_entry_no_update;", "DROP TRIGGER IF EXISTS audit_entry_no_delete;"]


def _run(schema_editor, postgres, sqlite):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(postgres)
    elif vendor == "sqlite":
        for statement in sqlite:
            schema_editor.execute(statement)


def up(apps, schema_editor):
    _run(schema_editor, POSTGRES_UP, SQLITE_UP)


def down(apps, schema_editor):
    _run(schema_editor, POSTGRES_DOWN, SQLITE_DOWN)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunPython(up, down)]
