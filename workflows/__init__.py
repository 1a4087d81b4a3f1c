"""Deterministic orchestration: one module per runbook plus the shared building blocks."""
