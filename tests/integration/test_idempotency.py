"""Idempotency keys on the orders pipeline's state-changing calls, checked from the sandbox's side.

The risk API scores an order (its effect) once per idempotency key (``sandbox.risk``), and is run
here requiring an ``Idempotency-Key`` on every POST (400 otherwise). Two ways to call it again:

1. lost answers: the API scores, then trickles its answer; the worker is killed meanwhile, and
   the restarted worker sends those orders again, in other batches than before (other batch keys,
   the same per-item keys);
2. failed attempts: 503s, retried in-call with the same key. A single-call run makes hundreds
   of calls, one in ten failing; a batched run makes a few dozen, so its first attempts all fail
   (no more than its 4 concurrent batch calls: too few to open the circuit breaker), then one
   in ten.

Every POST must carry a key, and every order's score must have been given once.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from pipelines.orders_samples import sample_orders
from sandbox.server import SandboxConfig
from streams.names import Header
from tests.conftest import SandboxThread
from tests.integration.harness import SERDE, TopicCollector, headers_of, pipeline_under_test, set_faults, wait_for

pytestmark = pytest.mark.integration

EVENTS = 500
TRICKLE = {"slow_body": {"rate": 1.0, "chunk_bytes": 4, "interval_ms": 1000}}  # after the score: answers lost
FAILING = {"errors": {"503": 0.1}}  # before the score: retried in-call (and too few to open the breaker)


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "single"])
async def test_every_risk_call_carries_a_key_and_each_order_is_scored_once(
    kafka_bootstrap: str, unique: str, tmp_path: Path, batching: bool
) -> None:
    endpoint, path = ("risk_batch", "/v1/risk-scores/batch") if batching else ("risk", "/v1/risk-scores")
    config = SandboxConfig(require_idempotency_keys=True, risk_rate=100_000, risk_burst=100_000, seed=17)
    orders = sample_orders(EVENTS, customers=500, run=unique)
    key_of = {o["event_id"]: f"{o['event_id']}:risk:{path}" for o in orders}
    env = {"ORDERS_ENRICH_WITH": "customers,risk", "ORDERS_RISK_BATCHING": str(batching).lower(),
           "STREAMS_API_RISK_RETRIES": "6"}

    with SandboxThread(config=config) as api:
        stats = api.server.stats
        pipeline = pipeline_under_test(kafka_bootstrap, api.url, unique, tmp_path)
        await pipeline.create_topics(partitions=3)
        await set_faults(api.url, endpoint, TRICKLE)
        await pipeline.produce(orders)

        async with TopicCollector(kafka_bootstrap, [pipeline.output_topic, pipeline.dlq]) as seen:
            # 1. scores given, their answers still on the way: the worker dies
            worker = pipeline.worker(0, STREAMS_API_RISK_TIMEOUT="120", **env).start()
            await wait_for(lambda: stats.risk_scored >= 20, deadline=120, what="orders scored in the first run")
            worker.kill()
            scored_first = set(stats.risk_effect_keys)
            output_first = {headers_of(r)[Header.EVENT_ID] for r in seen.records}
            requests_first = sum(1 for r in stats.of(endpoint) if r.method == "POST")
            batch_keys_first = {r.headers.get("Idempotency-Key") for r in stats.of(endpoint)}

            # 2. a second worker takes over, the API failing some attempts
            await set_faults(api.url, endpoint, {"errors": {"503": 1.0}} if batching else FAILING)
            with pipeline.worker(1, **env) as second:
                if batching:
                    await wait_for(lambda: len(stats.of(endpoint)) >= requests_first + 3, deadline=120,
                                   what="the second run's first attempts", interval=0.01)
                    await set_faults(api.url, endpoint, FAILING)  # well within the calls' retry budget
                await seen.wait_until(lambda r: len({headers_of(x)[Header.EVENT_ID] for x in r}) >= EVENTS,
                                      deadline=240, what="every order on the output or in the DLQ")
                assert second.alive, second.log_tail()

    outputs = [SERDE.decode(r.value) for r in seen.on(pipeline.output_topic)]
    assert not seen.on(pipeline.dlq), "no order failed"
    assert {o["event_id"] for o in outputs} == set(key_of)
    live = {o["event_id"] for o in outputs if o["risk"] is not None and o["risk"]["source"] == "live"}

    # every state-changing call carried a key, of the documented shape
    posts = [r for r in stats.of(endpoint) if r.method == "POST"]
    keys = [r.headers.get("Idempotency-Key") for r in posts]
    assert stats.missing_idempotency_keys == 0 and None not in keys
    if batching:
        assert all(re.fullmatch(rf"batch-[0-9a-f]{{32}}:risk:{path}", k or "") for k in keys), keys[:5]
    else:
        assert set(keys) <= set(key_of.values())
    # the same call was sent more than once: answers lost (first run), attempts failed (second)
    retried = {k for k, n in Counter(keys[requests_first:]).items() if n > 1}
    assert retried, "503s made the worker retry a call with the same key"
    pending = scored_first - {key_of[e] for e in output_first}  # scored, but the order not done
    assert pending, "the first run was killed with scores given and not yet received"
    assert stats.idempotent_replays >= len(pending), "each of them was sent again and answered from the ledger"

    # each order's score was given once: one effect per key, only for these orders' keys
    effects = Counter(stats.risk_effect_keys)
    assert stats.risk_scored <= EVENTS, f"{stats.risk_scored} scores given for {EVENTS} orders"
    assert effects and max(effects.values()) == 1, effects.most_common(3)
    assert stats.risk_scored == len(effects) and stats.idempotency_conflicts == 0
    assert set(effects) <= set(key_of.values())
    assert {key_of[e] for e in live} <= set(effects), "a live score is a score the API gave"
    fresh_batch_keys = {r.headers.get("Idempotency-Key") for r in posts[requests_first:]} - batch_keys_first
    print(f"\n{'batched' if batching else 'single'}: {len(posts)} POSTs ({requests_first} in the killed run), "
          f"{len(retried)} keys sent more than once after the restart, {len(pending)} orders scored before the "
          f"kill and sent again ({len(fresh_batch_keys)} request keys new after the restart), "
          f"{stats.idempotent_replays} answers replayed, {stats.risk_scored} scores given for {len(live)} live "
          f"and {EVENTS - len(live)} fallback orders")
