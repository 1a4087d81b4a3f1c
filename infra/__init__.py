"""The local dev stack: Temporal dev server, Postgres, demo app, worker."""
