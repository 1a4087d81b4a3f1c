#!/bin/sh
# Creates Temporal's two databases on the compose Postgres and brings their schemas to the
# version this admin-tools image ships; run once before the server starts (the
# temporal-schema service). Safe to run again: temporal-sql-tool leaves an existing database
# and schema version in place, and update-schema applies only the missing versions.
set -eu

: "${POSTGRES_SEEDS:?}" "${POSTGRES_USER:?}" "${SQL_PASSWORD:?}"
SCHEMA_ROOT=/etc/temporal/schema/postgresql/v12

for database in temporal temporal_visibility; do
    case "$database" in
        temporal) schema="$SCHEMA_ROOT/temporal/versioned" ;;
        *) schema="$SCHEMA_ROOT/visibility/versioned" ;;
    esac
    sql() {
        temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -u "$POSTGRES_USER" \
            -p 5432 --db "$database" "$@"
    }
    sql create
    sql setup-schema -v 0.0
    sql update-schema -d "$schema"
done
echo "Temporal's schemas are up to date"
