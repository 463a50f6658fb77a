"""Provider verification of the enriched topic: records the pipeline really produced, against the message pact.

A worker runs the orders-enricher over topics of this test, on the real broker and the sandbox
API, with producers on OrderPlaced v1 and v2 feeding it. Each output record, decoded, is handed
to Pact as the message of the interaction, and Pact checks it against what the readers of
the topic declared in ``pacts/orders-analytics-orders-enricher.json``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from pact import Verifier

from pipelines.orders import ORDER_PLACED
from pipelines.orders_samples import sample_orders
from streams.kafka.clients import producer
from streams.names import Header
from tests.conftest import SandboxThread
from tests.contract.pacts import ENRICHED_ORDERS_READER, PIPELINE, pact_file
from tests.contract.test_pact_enriched_orders import MESSAGE, STATE
from tests.integration.harness import SERDE, headers_of, pipeline_under_test

pytestmark = pytest.mark.integration

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def enriched_records_from_the_pipeline(
    bootstrap: str, api_url: str, unique: str, workdir: Path, per_version: int = 5
) -> dict[int, list[ConsumerRecord[bytes, bytes]]]:
    """Run the orders-enricher worker over orders of v1 and v2 producers; its output records by producer version.

    This is the one place here that depends on how a worker is started (the integration
    harness's ``WorkerProcess``); if the engine changes how, change it here.
    """
    pipeline = pipeline_under_test(bootstrap, api_url, unique, workdir)
    await pipeline.create_topics(partitions=1)
    orders = {1: sample_orders(per_version, seed=31), 2: sample_orders(per_version, seed=32, version=2)}
    v1 = SERDE.registry.versions(ORDER_PLACED)[0]  # type: ignore[attr-defined]
    async with producer(bootstrap) as client:
        sends = [await client.send(pipeline.input_topic, SERDE.encode_with(v1, o), key=o["customer_id"].encode())
                 for o in orders[1]]
        sends += [await client.send(pipeline.input_topic, SERDE.encode(ORDER_PLACED, o),
                                    key=o["customer_id"].encode()) for o in orders[2]]
        await asyncio.gather(*sends)
    with pipeline.worker() as worker:
        records = await pipeline.read([pipeline.output_topic], until=2 * per_version)
        assert worker.alive, worker.log_tail()
    assert len(records) == 2 * per_version, f"the pipeline produced {len(records)} of {2 * per_version} records"
    version_of = {o["event_id"]: version for version, batch in orders.items() for o in batch}
    by_version: dict[int, list[ConsumerRecord[bytes, bytes]]] = {1: [], 2: []}
    for record in records:
        by_version[version_of[headers_of(record)[Header.EVENT_ID]]].append(record)
    return by_version


def as_message(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    """An output record as the contract describes it: the decoded value as JSON, and its subject."""
    schema_id = int.from_bytes((record.value or b"")[1:5], "big")
    value = SERDE.decode(record.value)
    return {
        "contents": json.dumps(value, default=_millis).encode(),
        "metadata": {"avro.subject": SERDE.registry.by_id(schema_id).subject},
        "content_type": "application/json",
    }


def _millis(value: object) -> int:
    if isinstance(value, datetime):
        return (value - EPOCH) // timedelta(milliseconds=1)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


async def test_records_the_pipeline_produced_honour_the_readers_pact(
    kafka_bootstrap: str, sandbox: SandboxThread, unique: str, tmp_path: Path
) -> None:
    path = pact_file(ENRICHED_ORDERS_READER, PIPELINE)
    produced = await enriched_records_from_the_pipeline(kafka_bootstrap, sandbox.url, unique, tmp_path)

    for version, records in produced.items():
        # one output of a v2 producer that carries a coupon, to show the added field breaks no reader
        record = next((r for r in records if SERDE.decode(r.value).get("coupon_code")), records[0])
        verifier = (
            Verifier(PIPELINE)
            .message_handler({MESSAGE: as_message(record)})  # type: ignore[dict-item]
            .state_handler({STATE: lambda **_: None}, teardown=False)
            .add_source(path)
            .set_error_on_empty_pact(enabled=True)
        )
        verifier.verify()
        assert verifier.results.get("result") is True, f"producer v{version}: {verifier.output(strip_ansi=True)}"
