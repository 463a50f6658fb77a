"""Example pipelines and their own schemas, samples and settings, outside the streams package."""
