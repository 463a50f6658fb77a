"""An output that does not match the output schema: that event to the DLQ with the reason, the rest
flows; an output of None drops the event, acknowledged."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.payments.samples import sample_payments
from streams.kafka.clients import end_offsets, ensure_topics, producer, read_records
from streams.names import Header, dlq_topic
from streams.serde import AvroSerde, EmbeddedRegistry
from streams.worker_process import WorkerProcess
from tests.integration.harness import committed_offsets, headers_of, wait_for

pytestmark = pytest.mark.integration

SERDE = AvroSerde(EmbeddedRegistry.load(Path(__file__).resolve().parents[2] / "examples" / "payments" / "schemas"))


async def test_an_output_that_breaks_the_schema_is_dead_lettered_with_the_reason_and_the_worker_goes_on(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    name = f"misfit-{unique}"
    await ensure_topics(kafka_bootstrap, {name: 2, f"{name}.out": 2, dlq_topic(name): 1})
    payments = sample_payments(200, seed=3)
    misfits = {p["event_id"] for p in payments if p["amount_cents"] % 7 == 0}
    dropped = {p["event_id"] for p in payments if p["amount_cents"] % 11 == 0} - misfits
    assert misfits and dropped
    async with producer(kafka_bootstrap) as client:
        for payment in payments:
            await client.send(name, SERDE.encode("dev.example.payments.Payment", payment),
                              key=payment["account_id"].encode())
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "STREAMS_APP": "tests.integration.apps.misfit:pipeline",
           "STREAMS_PIPELINE": name, "STREAMS_INPUT_TOPIC": name, "STREAMS_OUTPUT_TOPIC": f"{name}.out",
           "STREAMS_DATA_DIR": str(tmp_path / "worker"), "STREAMS_TELEMETRY_PORT": "0"}
    with WorkerProcess(env, tmp_path / "worker.log") as worker:
        records = await read_records(kafka_bootstrap, [f"{name}.out", dlq_topic(name)],
                                     until=len(payments) - len(dropped), idle_timeout=60, deadline=120)
        await wait_for(lambda: committed(kafka_bootstrap, name), 30, "every offset committed, dropped ones too")
        assert worker.alive, worker.log_tail()
    dead = {headers_of(r)[Header.EVENT_ID]: headers_of(r) for r in records if r.topic == dlq_topic(name)}
    out = {headers_of(r)[Header.EVENT_ID] for r in records if r.topic == f"{name}.out"}
    assert set(dead) == misfits and out == {p["event_id"] for p in payments} - misfits - dropped
    for letter in dead.values():
        assert letter[Header.ERROR_KIND] == "permanent" and letter[Header.ERROR_CLASS] == "AvroEncodeError"
        assert "CheckedPayment" in letter[Header.ERROR_MESSAGE] and "score" in letter[Header.ERROR_MESSAGE], letter


async def committed(bootstrap: str, name: str) -> bool:
    ends = await end_offsets(bootstrap, name)
    return await committed_offsets(bootstrap, name, name) == ends
