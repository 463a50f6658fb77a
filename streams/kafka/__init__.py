"""Kafka I/O: admin, plain producers and consumers, the local broker, and the fetch path's
record reading (``wire_records``), installed here so that every consumer of the process has it."""

from streams.kafka.wire_records import install as _install_wire_records

_install_wire_records()
