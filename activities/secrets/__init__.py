"""AWS Secrets Manager: resolving the config's secret references at call time, and the
rotation protocol (pending, set, test, finish, put back) the key_rotation runbook drives over
any rotatable credential."""
