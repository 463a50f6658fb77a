#!/usr/bin/env bash
# The local Kafka broker script ships inside the package, so that `pip install .` has it too:
# streams/kafka/broker/kafka.sh (with its pom.xml). This wrapper keeps
# `scripts/kafka.sh start|stop|restart|status|bootstrap|state-dir` working in a checkout;
# the environment (KAFKA_PORT, KAFKA_SECURE, STREAMS_HOME, ...) passes through.
# `bash scripts/kafka.sh help` prints the packaged script's usage.
set -euo pipefail
exec "${BASH:-bash}" "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/streams/kafka/broker/kafka.sh" "$@"
