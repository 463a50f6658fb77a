"""Hostile input, from Kafka and from the APIs: a clear error, a bounded cost, nothing lost.

Kafka side: the real ``EventProcessor`` (decode → validate → process → route) over records a
hostile producer could write; each record yields exactly one outbound record whose headers are
one line of valid UTF-8, bounded. API side: real aiohttp servers that answer with the wrong
content type, a gzip bomb, or a trickle.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.errors import PermanentError, TransientError
from connectors.http import HttpConnector, HttpSettings
from pipelines.orders import ENRICHED_ORDER, ORDER_PLACED
from pipelines.orders_rules import validate_enriched_order, validate_order_placed
from streams.engine.processor import MAX_DEAD_LETTER_VALUE, EventProcessor
from streams.engine.records import InboundRecord, OutboundRecord, headers_from_kafka
from streams.engine.retry import RetryPolicy
from streams.engine.routing import HOP_HEADERS, MAX_HEADER_CHARS, admit_headers
from streams.failures import ValidationError
from streams.names import Header
from streams.serde import AvroSerde, EmbeddedRegistry
from streams.serde.avro import AvroDecodeError, AvroEncodeError
from streams.serde.registry import UnknownSchemaError
from streams.serde.wire import WireFormatError, frame
from tests.local_http import Handler, serve

SERDE = AvroSerde(EmbeddedRegistry.load())
RETRY = RetryPolicy("hostile", ["1s"])
MAX_RECORD_BYTES = 64 * 1024


def order(**changes: Any) -> dict[str, Any]:
    return {"event_id": "evt-1", "order_id": "ord-1", "customer_id": "C000001", "placed_at": int(time.time() * 1000),
            "currency": "EUR", "amount_cents": 100, "channel": "web", "shipping_country": "DE",
            "items": [{"sku": "SKU-1", "quantity": 1, "unit_price_cents": 100}], "coupon_code": None, **changes}


class ValidatingPipeline:
    """The orders pipeline's rules, with a stand-in for the customer API (no network here)."""

    input_subject = ORDER_PLACED
    output_subject = ENRICHED_ORDER

    def __init__(self) -> None:
        self.calls = 0

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def process(self, event: dict[str, Any]) -> dict[str, Any]:
        validate_order_placed(event)
        self.calls += 1
        return {**event, "customer": {"customer_id": event["customer_id"], "name": "Ada", "tier": "gold",
                                      "country": "DE", "since": "2020-01-01"},
                "enriched_at": int(time.time() * 1000), "pipeline": "hostile"}


def processor(pipeline: ValidatingPipeline | None = None) -> EventProcessor:
    return EventProcessor(pipeline or ValidatingPipeline(), SERDE, pipeline_name="hostile", output_topic="out",
                          retry=RETRY, max_record_bytes=MAX_RECORD_BYTES)


def inbound(value: bytes | None, headers: dict[str, bytes] | None = None, topic: str = "orders") -> InboundRecord:
    return InboundRecord(topic, 0, 7, 1_700_000_000_000, b"key", value, headers or {})


def assert_safe_headers(outbound: OutboundRecord) -> None:
    for name, value in outbound.headers:
        text = value.decode("utf-8")  # valid UTF-8, or this raises
        assert "\r" not in text and "\n" not in text, (name, text[:80])
        assert len(text) <= MAX_HEADER_CHARS, (name, len(text))


def headers_of(outbound: OutboundRecord) -> dict[str, str]:
    return {name: value.decode() for name, value in outbound.headers}


# -- Kafka records -----------------------------------------------------------------------------------


async def test_an_oversized_record_is_dead_lettered_unread_as_poison_with_a_clear_reason() -> None:
    pipeline = ValidatingPipeline()
    big = SERDE.encode(ORDER_PLACED, order(items=[{"sku": "S", "quantity": 1, "unit_price_cents": 1}] * 20_000))
    assert len(big) > MAX_RECORD_BYTES
    began = time.perf_counter()
    out = await processor(pipeline).process(inbound(big))
    assert time.perf_counter() - began < 0.05, "an oversized record must not be parsed"
    assert out is not None and out.failed and out.value == big, "the dead letter keeps the bytes"
    headers = headers_of(out)
    assert headers[Header.ERROR_KIND] == "poison" and headers[Header.ERROR_CLASS] == "RecordTooLarge"
    assert f"exceeds max_record_bytes={MAX_RECORD_BYTES}" in headers[Header.ERROR_MESSAGE]
    assert pipeline.calls == 0


async def test_a_record_too_large_even_for_a_dead_letter_is_accounted_for_without_its_value() -> None:
    huge = b"\x00" * (MAX_DEAD_LETTER_VALUE + 1)
    out = await processor().process(inbound(huge))
    assert out is not None and out.failed and out.value is None
    assert "stays at its origin offset" in headers_of(out)[Header.ERROR_MESSAGE]


@pytest.mark.parametrize("body", [
    b"\x00\x00\x00\x00\x01" + b"\xff" * 40,  # a huge array length
    b"\x00\x00\x00\x00\x01" + b"\x80" * 60_000,  # a varint that never ends
    b"\x00" + b"\xff" * 4,  # an unknown schema id
    b"{" * 60_000,  # deep nesting, as JSON a naive decoder might try
], ids=["huge-array-length", "endless-varint", "unknown-schema", "deep-nesting"])
async def test_malformed_values_are_poison_at_a_bounded_cost(body: bytes) -> None:
    tracemalloc.start()
    began = time.perf_counter()
    out = await processor().process(inbound(body))
    seconds = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out is not None and out.failed and headers_of(out)[Header.ERROR_KIND] == "poison"
    assert seconds < 0.5 and peak < 16 * 1024 * 1024, (seconds, peak)
    assert_safe_headers(out)


@pytest.mark.parametrize(("changes", "field"), [
    ({"amount_cents": -1}, "amount_cents"),
    ({"currency": "euro"}, "currency"),
    ({"shipping_country": "DEU"}, "shipping_country"),
    ({"event_id": "evt\r\nX-Injected: 1"}, "event_id"),
    ({"order_id": "o" * 65}, "order_id"),
    ({"customer_id": "../../admin"}, "customer_id"),
    ({"items": []}, "items"),
    ({"items": [{"sku": "S", "quantity": 1, "unit_price_cents": 1}] * 101}, "items"),
    ({"items": [{"sku": "S", "quantity": 0, "unit_price_cents": 1}]}, "items[0].quantity"),
    ({"placed_at": 0}, "placed_at"),
    ({"coupon_code": "x" * 1000}, "coupon_code"),
])
async def test_an_event_breaking_a_rule_goes_to_the_dlq_as_permanent_before_any_api_call(
    changes: dict[str, Any], field: str
) -> None:
    pipeline = ValidatingPipeline()
    out = await processor(pipeline).process(inbound(SERDE.encode(ORDER_PLACED, order(**changes))))
    assert out is not None and out.failed
    headers = headers_of(out)
    assert headers[Header.ERROR_KIND] == "permanent" and headers[Header.ERROR_CLASS] == "ValidationError"
    assert headers[Header.ERROR_MESSAGE].startswith(field), headers[Header.ERROR_MESSAGE]
    assert pipeline.calls == 0
    assert_safe_headers(out)


async def test_a_valid_event_passes_the_rules() -> None:
    out = await processor().process(inbound(SERDE.encode(ORDER_PLACED, order())))
    assert out is not None and out.topic == "out"


def test_the_output_is_checked_before_it_is_encoded() -> None:
    enriched = {**order(), "customer": {"customer_id": "C1", "name": "x" * 5000, "tier": "t", "country": "DE",
                                        "since": "s"}, "enriched_at": 1, "pipeline": "p"}
    with pytest.raises(ValidationError, match=r"customer\.name"):
        validate_enriched_order(enriched)
    with pytest.raises(AvroEncodeError):  # the encoder refuses a record that breaks the schema itself
        SERDE.encode(ENRICHED_ORDER, {**order(), "pipeline": "p"})  # no customer, no enriched_at
    with pytest.raises(AvroEncodeError):
        SERDE.encode(ENRICHED_ORDER, {**enriched, "amount_cents": "100"})


def test_the_output_built_from_a_validated_input_still_gets_every_rule() -> None:
    """Fields copied from the validated input are not walked again; anything new or changed is."""
    source = order()
    validate_order_placed(source)
    customer = {"customer_id": "C1", "name": "Ada", "tier": "t", "country": "DE", "since": "s"}
    ok = {**source, "customer": customer, "enriched_at": 1, "pipeline": "p"}
    validate_enriched_order(ok, validated_input=source)
    with pytest.raises(ValidationError, match=r"customer\.name"):
        validate_enriched_order({**ok, "customer": {**customer, "name": "x\r\ny"}}, validated_input=source)
    with pytest.raises(ValidationError, match="channel"):  # a changed order field: the order rules again
        validate_enriched_order({**ok, "channel": "BAD CHANNEL"}, validated_input=source)
    with pytest.raises(ValidationError, match=r"items\[0\]\.sku"):  # rebuilt, not the input's list
        validate_enriched_order({**ok, "items": [{**source["items"][0], "sku": "../x"}]}, validated_input=source)
    with pytest.raises(ValidationError, match=r"products\[0\]\.name"):
        validate_enriched_order({**ok, "products": [{"name": "x" * 5000}]}, validated_input=source)


async def test_cr_lf_and_invalid_utf8_in_headers_never_reach_the_headers_we_write() -> None:
    hostile = {
        Header.EVENT_ID: b"evt-1\r\nX-Evil: yes",
        Header.TRACEPARENT: b"00-" + b"\xff\xfe" * 40,
        Header.TRACESTATE: b"a=b\r\nc=d",
        Header.ORIGIN_TOPIC: b"orders\nfake",
        Header.ORIGIN_PARTITION: b"9" * 5000,
        Header.ATTEMPT: b"9" * 5000,
        Header.NOT_BEFORE: b"99999999999999999999",
        Header.FIRST_FAILURE_AT: b"\xc3\x28",
    }
    for headers in (admit_headers(hostile, from_retry_tier=False), hostile):  # input topic, and even a tier
        for value in (b"not avro at all", SERDE.encode(ORDER_PLACED, order(event_id="")),
                      SERDE.encode(ORDER_PLACED, order())):
            out = await processor().process(inbound(value, dict(headers)))
            assert out is not None
            assert_safe_headers(out)
            written = headers_of(out)
            assert written[Header.EVENT_ID] in ("evt-1", "orders:0:7")
            assert Header.TRACESTATE not in written


def test_hop_headers_are_believed_only_on_retry_tier_records() -> None:
    headers = {Header.NOT_BEFORE: b"99999999999999", Header.ORIGIN_PARTITION: b"7", Header.ATTEMPT: b"3",
               Header.EVENT_ID: b"evt-1", Header.TRACEPARENT: b"00-1-2-01"}
    admitted = admit_headers(headers, from_retry_tier=False)
    assert set(admitted) == {Header.EVENT_ID, Header.TRACEPARENT}
    assert admit_headers(headers, from_retry_tier=True) == headers
    assert not HOP_HEADERS & set(admitted)


# -- property: random bytes and headers -----------------------------------------------------------

_HEADER_NAMES = st.sampled_from([*sorted(HOP_HEADERS), Header.EVENT_ID, Header.TRACEPARENT, Header.TRACESTATE,
                                 "x-other", "\udcff", ""])
_values = st.one_of(
    st.binary(max_size=2048),
    st.builds(lambda body: frame(4, body), st.binary(max_size=512)),  # OrderPlaced v2's frame, random body
    st.builds(lambda o: SERDE.encode(ORDER_PLACED, o), st.fixed_dictionaries({
        "event_id": st.text(max_size=300), "order_id": st.text(max_size=80), "customer_id": st.text(max_size=80),
        "placed_at": st.integers(-(2**63), 2**63 - 1), "currency": st.text(max_size=5),
        "amount_cents": st.integers(-(2**63), 2**63 - 1), "channel": st.text(max_size=40),
        "shipping_country": st.text(max_size=3),
        "items": st.lists(st.fixed_dictionaries({
            "sku": st.text(max_size=70), "quantity": st.integers(-(2**31), 2**31 - 1),
            "unit_price_cents": st.integers(-(2**63), 2**63 - 1)}), max_size=3),
        "coupon_code": st.none() | st.text(max_size=40)})),
    st.none(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_values, raw_headers=st.lists(st.tuples(_HEADER_NAMES, st.binary(max_size=300)), max_size=8),
       from_tier=st.booleans())
def test_random_records_never_crash_and_each_yields_exactly_one_safe_outbound_record(
    value: bytes | None, raw_headers: list[tuple[str, bytes]], from_tier: bool
) -> None:
    topic = RETRY.topics[0] if from_tier else "orders"
    headers = admit_headers(headers_from_kafka(raw_headers), from_retry_tier=from_tier)
    out = asyncio.run(processor().process(inbound(value, headers, topic=topic)))
    assert isinstance(out, OutboundRecord)  # one record out for one record in: enriched, retried or dead
    assert out.topic in ("out", "hostile.dlq", *RETRY.topics)
    if out.failed:
        assert out.value == value or (value is not None and len(value) > MAX_DEAD_LETTER_VALUE)
    assert_safe_headers(out)


@settings(max_examples=500, deadline=None)
@given(data=st.one_of(st.binary(max_size=4096), st.builds(lambda body: frame(1, body), st.binary(max_size=1024)),
                      st.builds(lambda body: frame(4, body), st.binary(max_size=1024))))
def test_the_deserializer_raises_only_its_three_poison_errors_on_random_bytes(data: bytes) -> None:
    with contextlib.suppress(WireFormatError, UnknownSchemaError, AvroDecodeError):  # poison: what callers expect
        SERDE.decode(data, ORDER_PLACED)


# -- API answers -------------------------------------------------------------------------------------

@pytest.fixture
async def api() -> AsyncIterator[Callable[[Handler], Any]]:
    runners: list[AsyncIterator[str]] = []

    async def start(handler: Handler) -> str:
        iterator = serve(handler)
        runners.append(iterator)
        return await iterator.__anext__()

    yield start
    for iterator in runners:
        await iterator.aclose()


@pytest.mark.parametrize("content_type", ["text/html", "application/octet-stream", "text/plain"])
async def test_an_answer_of_another_content_type_is_a_clear_permanent_error(api: Any, content_type: str) -> None:
    async def page(_: web.Request) -> web.Response:
        return web.Response(body=b'{"looks": "like json"}', content_type=content_type)

    url = await api(page)
    async with HttpConnector("customers", HttpSettings(base_url=url)) as http:
        with pytest.raises(PermanentError, match=f"is '{content_type}', not JSON"):
            await http.get_json("/v1/customers/{id}", id="C1")


def _gzip_bomb(decompressed: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as archive:
        block = b"0" * (1 << 20)
        for _ in range(decompressed >> 20):
            archive.write(block)
    return out.getvalue()


async def test_a_gzip_bomb_is_cut_off_at_the_decompressed_size_cap(api: Any) -> None:
    bomb = _gzip_bomb(512 << 20)  # 512 MiB of zeros in about half a megabyte
    assert len(bomb) < 1 << 20

    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    url = await api(answer)
    cap = 1 << 20
    async with HttpConnector("customers", HttpSettings(base_url=url, max_response_bytes=cap)) as http:
        tracemalloc.start()
        began = time.perf_counter()
        with pytest.raises(PermanentError, match=f"exceeds the {cap}-byte cap"):
            await http.get_json("/v1/customers/{id}", id="C1")
        seconds = time.perf_counter() - began
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(f"\ngzip bomb ({len(bomb)} bytes → 512 MiB): refused after {seconds * 1000:.0f} ms, "
          f"peak traced memory {peak / 2**20:.1f} MiB")
    assert seconds < 2.0 and peak < 16 * cap, (seconds, peak)


async def test_a_deflate_bomb_with_a_small_content_length_is_cut_off_too(api: Any) -> None:
    body = zlib.compress(b"[" + b"1," * (8 << 20) + b"1]", 9)

    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Encoding": "deflate", "Content-Type": "application/json"})

    url = await api(answer)
    async with HttpConnector("customers", HttpSettings(base_url=url, max_response_bytes=1 << 20)) as http:
        with pytest.raises(PermanentError, match="cap"):
            await http.get_json("/x")


async def test_a_trickling_answer_is_cut_off_by_the_attempt_timeout(api: Any) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(1000):  # one byte every 100 ms: every read in time, the whole never
            await response.write(b" ")
            await asyncio.sleep(0.1)
        return response

    url = await api(trickle)
    settings_ = HttpSettings(base_url=url, read_timeout=0.5, total_timeout=1.0, max_attempts=2, max_elapsed=3.0,
                             backoff_base=0.01)
    async with HttpConnector("customers", settings_) as http:
        began = time.perf_counter()
        with pytest.raises(TransientError, match="timed out"):
            await http.get_json("/x")
        seconds = time.perf_counter() - began
    assert 1.0 <= seconds < 3.5, seconds


async def test_a_header_name_that_is_not_utf8_is_poison_known_by_its_origin_not_its_claimed_id() -> None:
    value = SERDE.encode(ORDER_PLACED, order())
    record = inbound(value, headers_from_kafka([("x-\udcff\udcfe", b"v"), ("event-id", b"evt-of-someone-else")]))
    pipeline = ValidatingPipeline()
    out = await processor(pipeline).process(record)
    assert out is not None and out.failed and out.value == value
    headers = dict(out.headers)
    assert headers[Header.ERROR_KIND] == b"poison" and headers[Header.ERROR_CLASS] == b"MalformedHeader"
    assert headers[Header.ERROR_MESSAGE] == b"header name b'x-\\xff\\xfe' is not UTF-8"
    assert headers[Header.EVENT_ID] == b"orders:0:7"
    assert pipeline.calls == 0
