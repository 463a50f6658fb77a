"""Benchmarks of the orders-enricher against baselines: ``python -m bench`` (see bench/README.md).

Nothing here is imported by the runtime; the package only drives ``streams`` from outside.
"""
