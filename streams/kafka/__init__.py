"""Kafka I/O: admin, plain producers and consumers, the local broker, the worker's runtime, and two
fixes around aiokafka installed here so that every client of the process has them: the fetch
path's record reading (``wire_records``) and metadata refreshes that back off while the brokers
are unreachable (``metadata_backoff``)."""

from streams.kafka.metadata_backoff import install as _install_metadata_backoff
from streams.kafka.wire_records import install as _install_wire_records

_install_wire_records()
_install_metadata_backoff()
