"""The streaming runtime: worker app, engine, serde and registries, settings and CLI."""

__version__ = "0.1.0"
