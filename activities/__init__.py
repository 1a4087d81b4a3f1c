"""Every side effect of the engine, grouped by the system it touches."""
