"""Small user pipelines the integration tests run as ``--app`` modules."""
