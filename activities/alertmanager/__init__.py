"""Alertmanager's API v2: the silence a run holds over its alert while it acts."""
