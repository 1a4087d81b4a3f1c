"""The runnable processes: the Temporal worker and the `remediate` CLI."""
