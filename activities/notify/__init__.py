"""Notifications to people: a structured log line, a generic JSON webhook and Slack."""
