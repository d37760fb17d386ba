"""Settings: one frozen object, read from the environment and an optional TOML file at the edge.

settings.py holds the `Settings` model, records.py the records it holds (providers, model limits,
cascades, server keys), defaults.py the built-in routing and packing tables, env.py which env var
sets which field, loading.py `load_settings` (defaults, TOML file, environment, overrides) and
rules.py what a valid value is and how a bad one is reported.
"""
