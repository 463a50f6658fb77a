"""The worker's principal holds only the grants it needs; a write it may not make stops it, losing nothing.

Grants (``SecurePipeline.worker_grants``): READ the input; READ and WRITE its retry tiers and
processed-ids topic; WRITE the output and the DLQ; READ its consumer group and Faust's leader
assignor topic; DESCRIBE each of those topics. No CREATE anywhere (an operator creates the topics),
nothing cluster-wide, no other topic or group.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.harness import wait_for
from tests.security.conftest import SecureKafka
from tests.security.helpers import WRITE, SecurePipeline, orders

pytestmark = pytest.mark.integration

EVENTS = 60


@pytest.fixture
def pipeline(secure_kafka: SecureKafka, sandbox: object, unique: str, tmp_path: Path) -> SecurePipeline:
    made = SecurePipeline(secure_kafka, sandbox.url, f"sec-{unique}", 3, tmp_path)  # type: ignore[attr-defined]
    made.create_topics()
    made.grant_clients()
    return made


async def test_least_privilege_worker_enriches_everything_and_is_denied_nothing(pipeline: SecurePipeline) -> None:
    pipeline.grant_worker()
    log_start = pipeline.kafka.log_size()
    await pipeline.produce(orders(EVENTS, "ok"))
    with pipeline.worker() as worker:
        # The default 30 s idle limit: the worker's loop over TLS is asyncio's (streams/runtime.py);
        # on uvloop a processed-ids load's close sometimes waited 30 s and this read nothing.
        records = await pipeline.read([pipeline.output_topic, pipeline.dlq], until=EVENTS, deadline=90)
        assert worker.alive, worker.log_tail()
        await wait_for(lambda: sum(max(0, o) for o in pipeline.committed().values()) == EVENTS, 30,
                       "the group to commit every input offset")
    assert sorted(r.topic for r in records) == [pipeline.output_topic] * EVENTS
    denials = [line for line in pipeline.kafka.denials_since(log_start) if "User:worker" in line]
    assert denials == [], "\n".join(denials)


@pytest.mark.parametrize("events", [EVENTS, 1], ids=["stream", "single-event-then-idle"])
async def test_write_outside_the_grants_stops_the_worker_clearly_and_loses_nothing(
    pipeline: SecurePipeline, events: int
) -> None:
    pipeline.grant_worker()
    pipeline.kafka.revoke("worker", *_output_write(pipeline))
    await pipeline.produce(orders(events, "denied"))

    worker = pipeline.worker().start()
    try:
        await wait_for(lambda: not worker.alive, 60, "the worker to stop after the denied write")
    finally:
        code = worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert code not in (0, None), f"exit code {code}\n{worker.log_tail()}"
    failure = [line for line in log.splitlines()
               if f"producing to {pipeline.output_topic} failed" in line and "TopicAuthorizationFailedError" in line]
    assert failure, worker.log_tail(60)
    committed = pipeline.committed()
    assert all(offset < 0 for offset in committed.values()), f"committed past the failed write: {committed}"
    assert sum((await pipeline.end_offsets(pipeline.dlq)).values()) == 0, "nothing may be dead-lettered for it"

    pipeline.kafka.grant("worker", *_output_write(pipeline))
    with pipeline.worker(index=1) as again:
        records = await pipeline.read([pipeline.output_topic], until=events, deadline=90)
        assert again.alive, again.log_tail()
    ids = sorted({dict(r.headers)["event-id"].decode() for r in records})
    assert ids == sorted(o["event_id"] for o in orders(events, "denied"))


def _output_write(pipeline: SecurePipeline) -> tuple[object, str, list[object]]:
    from confluent_kafka.admin import ResourceType

    return ResourceType.TOPIC, pipeline.output_topic, [WRITE]
