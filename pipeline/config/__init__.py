"""Settings: one frozen object, read from the environment and an optional TOML file at the edge."""
