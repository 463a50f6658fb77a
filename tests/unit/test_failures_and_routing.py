"""Failure classification and the headers routing writes (docs/architecture.md §3, §5)."""

from __future__ import annotations

import pytest

from connectors.errors import PermanentError, TransientError
from streams.engine.records import InboundRecord
from streams.engine.routing import event_id_of, route_failure, route_success
from streams.failures import Failure, FailureKind, ValidationError, classify
from streams.names import Header, dlq_topic, retry_topic
from streams.serde import UnknownSchemaError, WireFormatError
from streams.serde.avro import AvroDecodeError


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (TransientError("x", connector="c", status=503), FailureKind.TRANSIENT),
        (PermanentError("x", connector="c", status=404), FailureKind.PERMANENT),
        (ValidationError("amount is negative"), FailureKind.PERMANENT),
        (KeyError("customer_id"), FailureKind.PERMANENT),
        (WireFormatError("bad magic"), FailureKind.POISON),
        (UnknownSchemaError("id 9"), FailureKind.POISON),
        (AvroDecodeError("truncated"), FailureKind.POISON),
    ],
)
def test_each_exception_has_one_kind(exc: Exception, kind: FailureKind) -> None:
    assert classify(exc).kind is kind


def test_connector_failures_keep_connector_and_status() -> None:
    failure = classify(TransientError("HTTP 503", connector="customers", status=503))
    assert (failure.connector, failure.status, failure.error_class) == ("customers", 503, "TransientError")


def test_error_message_is_one_line_and_bounded() -> None:
    failure = classify(ValueError("line one\r\nline two " + "x" * 2000))
    assert "\n" not in failure.message and "\r" not in failure.message
    assert len(failure.message) <= 500


def test_topic_names_belong_to_the_pipeline() -> None:
    assert dlq_topic("orders-enricher") == "orders-enricher.dlq"
    assert retry_topic("orders-enricher", "5s") == "orders-enricher.retry.5s"
    with pytest.raises(ValueError, match="must look like"):
        retry_topic("orders-enricher", "five seconds")


def _record(**headers: str) -> InboundRecord:
    return InboundRecord("orders", 3, 41, 1_700_000_000_000, b"C000001", b"raw-bytes",
                         {k: v.encode() for k, v in headers.items()})


def test_event_id_prefers_the_field_then_the_header_then_coordinates() -> None:
    assert event_id_of(_record(), {"event_id": "evt-1"}) == "evt-1"
    assert event_id_of(_record(**{"event-id": "evt-2"}), {"amount": 1}) == "evt-2"
    assert event_id_of(_record(), {"amount": 1}) == "orders:3:41"


def test_a_record_that_did_not_decode_is_known_by_its_origin_whatever_its_header_claims() -> None:
    assert event_id_of(_record(**{"event-id": "evt-of-another-event"}), None) == "orders:3:41"


def test_success_carries_trace_context_event_id_attempt_and_origin() -> None:
    out = route_success(_record(traceparent="00-abc-def-01"), "orders.enriched", b"v", "evt-1")
    headers = dict(out.headers)
    assert out.topic == "orders.enriched" and out.key == b"C000001"
    assert headers[Header.TRACEPARENT] == b"00-abc-def-01"
    assert headers[Header.EVENT_ID] == b"evt-1"
    assert headers[Header.ATTEMPT] == b"1"
    assert headers[Header.ORIGIN_TOPIC] == b"orders"
    assert headers[Header.ORIGIN_PARTITION] == b"3"
    assert headers[Header.ORIGIN_OFFSET] == b"41"
    assert headers[Header.ORIGIN_TIMESTAMP] == b"1700000000000"


def test_dead_letter_keeps_original_bytes_and_says_why() -> None:
    failure = Failure(FailureKind.PERMANENT, "PermanentError", "HTTP 404", "customers", 404)
    out = route_failure(_record(), "orders-enricher", failure, "evt-1", now_ms=1234)
    headers = dict(out.headers)
    assert out.topic == "orders-enricher.dlq" and out.value == b"raw-bytes" and out.key == b"C000001"
    assert headers[Header.ERROR_KIND] == b"permanent"
    assert headers[Header.ERROR_CLASS] == b"PermanentError"
    assert headers[Header.ERROR_MESSAGE] == b"HTTP 404"
    assert headers[Header.ERROR_CONNECTOR] == b"customers"
    assert headers[Header.ERROR_STATUS] == b"404"
    assert headers[Header.FIRST_FAILURE_AT] == b"1234"


def test_a_record_that_already_hopped_keeps_its_first_origin() -> None:
    hop = _record(**{Header.ORIGIN_TOPIC: "orders", Header.ORIGIN_PARTITION: "0", Header.ORIGIN_OFFSET: "7",
                     Header.ORIGIN_TIMESTAMP: "99", Header.ATTEMPT: "2", Header.FIRST_FAILURE_AT: "50"})
    failure = Failure(FailureKind.TRANSIENT, "TransientError", "HTTP 503")
    headers = dict(route_failure(hop, "p", failure, "evt-1", now_ms=1234).headers)
    assert headers[Header.ORIGIN_OFFSET] == b"7"
    assert headers[Header.ATTEMPT] == b"2"
    assert headers[Header.FIRST_FAILURE_AT] == b"50"
    assert event_id_of(hop, None) == "orders:0:7"
