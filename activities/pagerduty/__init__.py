"""PagerDuty's REST API v2: notes on the incident a run serves, and its resolution."""
