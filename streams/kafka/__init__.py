"""Kafka I/O outside the worker: admin, plain producers and consumers, the local broker."""
