"""A pipeline that is not ours: payments checked by an accounts, a geo-IP and a fraud API.

The payments example (``examples/payments``) is written as a user writes one, once in Python
and once in YAML; each runs end to end against the real broker and the sandbox: 2,000
payments over 4 partitions, unknown accounts (404) dead-lettered with their reason, a 2 s outage
of the geo-IP API (optional: degraded records, then whole ones again), the fraud API batched with per-item
refusals (422), and every account's payments written in input order.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path

import pytest

from examples.payments.samples import sample_payments
from sandbox.payments import account_exists
from streams.kafka.clients import ensure_topics, producer
from streams.names import Header, dlq_topic
from streams.serde import AvroSerde, EmbeddedRegistry
from streams.worker_process import WorkerProcess
from tests.conftest import SandboxThread
from tests.integration.harness import TopicCollector, headers_of, set_faults

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "payments"
PAYMENT = "dev.example.payments.Payment"
SERDE = AvroSerde(EmbeddedRegistry.load(EXAMPLE / "schemas"))
COUNT, PARTITIONS = 2_000, 4


@pytest.mark.parametrize("form", ["python", "yaml"])
async def test_a_users_payments_pipeline_runs_end_to_end(
    kafka_bootstrap: str, sandbox: SandboxThread, unique: str, tmp_path: Path, form: str
) -> None:
    name, source, sink = f"payments-{unique}", f"payments-{unique}", f"payments-{unique}.checked"
    await ensure_topics(kafka_bootstrap, {source: PARTITIONS, sink: PARTITIONS, dlq_topic(name): 1})
    payments = sample_payments(COUNT, seed=len(unique) + (form == "yaml"), accounts=400, invalid_fraction=0.01)
    unknown = {p["event_id"] for p in payments if not account_exists(p["account_id"])}
    refused = {p["event_id"] for p in payments if p["amount_cents"] < 0} - unknown
    assert unknown and refused

    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAMS_PIPELINE": name, "STREAMS_INPUT_TOPIC": source, "STREAMS_OUTPUT_TOPIC": sink,
        "STREAMS_API_ACCOUNTS_URL": sandbox.url, "STREAMS_API_GEO_URL": sandbox.url,
        "STREAMS_API_FRAUD_URL": sandbox.url, "STREAMS_API_GEO_RETRIES": "1",
        "STREAMS_DATA_DIR": str(tmp_path / "worker"), "STREAMS_TELEMETRY_PORT": "0",
        "STREAMS_LOG_LEVEL": "info,aiokafka=warning",
    }
    if form == "python":
        env["STREAMS_APP"] = "examples.payments.pipeline:pipeline"
    else:
        env["STREAMS_CONFIG"] = str(EXAMPLE / "pipeline.yaml")
    stats = sandbox.server.stats
    calls_before, scored_before = stats.requests["fraud_batch"], stats.fraud_scored
    try:
        async with TopicCollector(kafka_bootstrap, [sink, dlq_topic(name)]) as seen:
            with WorkerProcess(env, tmp_path / "worker.log") as worker:
                first, second = payments[: COUNT // 2], payments[COUNT // 2:]
                delivered = await produce(kafka_bootstrap, source, first)
                await seen.wait_until(lambda records: len(records) >= COUNT // 10, deadline=120,
                                      what="the first tenth of the payments")
                await set_faults(sandbox.url, "geo", {"outages": [{"start_s": 0, "duration_s": 2, "status": 503}]})
                outage_began = time.monotonic()
                await seen.wait_until(lambda records: len(records) >= len(first), deadline=180,
                                      what="the first half checked or dead-lettered")
                await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - outage_began)))  # over, breaker closed
                delivered += await produce(kafka_bootstrap, source, second)
                await seen.wait_until(lambda records: len(records) >= COUNT, deadline=180,
                                      what=f"{COUNT} payments checked or dead-lettered")
                assert worker.alive, worker.log_tail()
    finally:
        await set_faults(sandbox.url, "geo", None)

    offsets = {p["event_id"]: (meta.partition, meta.offset) for p, meta in zip(payments, delivered, strict=True)}
    checked = {headers_of(r)[Header.EVENT_ID]: SERDE.decode(r.value) for r in seen.on(sink)}
    dead = {headers_of(r)[Header.EVENT_ID]: headers_of(r) for r in seen.on(dlq_topic(name))}
    assert len(seen.on(sink)) + len(seen.on(dlq_topic(name))) == COUNT, "a payment was written twice"
    assert set(checked) | set(dead) == set(offsets) and not set(checked) & set(dead)

    assert set(dead) == unknown | refused
    for event_id in unknown:
        letter = dead[event_id]
        assert (letter[Header.ERROR_KIND], letter[Header.ERROR_STATUS], letter[Header.ERROR_CONNECTOR]) == (
            "permanent", "404", "accounts"), letter
    for event_id in refused:
        letter = dead[event_id]
        assert (letter[Header.ERROR_KIND], letter[Header.ERROR_STATUS], letter[Header.ERROR_CONNECTOR]) == (
            "permanent", "422", "fraud"), letter

    degraded = [c for c in checked.values() if c["degraded"]]
    after = {p["event_id"] for p in payments[COUNT // 2:]}
    assert degraded, "the geo-IP outage left no degraded record"
    assert not [c for c in degraded if c["event_id"] in after], "degraded after the outage was over"
    for record in checked.values():
        assert (record["geo"] is None) == record["degraded"]
        assert record["fraud"]["decision"] in ("allow", "review", "block")
        assert record["account"]["holder"]
        if record["degraded"]:
            assert record["degraded_reasons"] and record["degraded_reasons"][0].startswith("location: ")

    by_account: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for record in seen.on(sink):  # in the order the output partition holds them
        by_account[record.key.decode()].append(offsets[headers_of(record)[Header.EVENT_ID]])
    for account, seen_offsets in by_account.items():
        assert seen_offsets == sorted(seen_offsets), f"account {account}'s payments out of input order"
    calls, scored = stats.requests["fraud_batch"] - calls_before, stats.fraud_scored - scored_before
    assert scored >= len(checked) and calls * 2 <= scored, f"{calls} fraud calls for {scored} payments: not batched"
    print(f"\n{form}: {len(checked)} checked ({len(degraded)} degraded), {len(unknown)} unknown accounts and "
          f"{len(refused)} refused payments dead-lettered; {calls} fraud batch calls scored {scored} payments")


async def produce(bootstrap: str, topic: str, payments: list[dict[str, object]]) -> list[object]:
    async with producer(bootstrap) as client:
        sends = [await client.send(topic, SERDE.encode(PAYMENT, p), key=str(p["account_id"]).encode())
                 for p in payments]
        return list(await asyncio.gather(*sends))


def test_nothing_in_the_runtime_or_the_connectors_names_the_payments_pipeline() -> None:
    for folder in ("streams", "connectors"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8").lower()
            assert "payment" not in text, f"{path.relative_to(REPO)} names the payments pipeline"
