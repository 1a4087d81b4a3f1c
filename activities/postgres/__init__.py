"""PostgreSQL (psycopg 3 and the client tools): connection usage and stale sessions, read-only
mode, the databases of a restore (scratch, switch, switch back), pg_dump/pg_restore with
backups and safety snapshots, and logins as rotatable credentials."""
