"""Dedupe is best effort: brokers that cannot be reached never stop the worker through it."""

from __future__ import annotations

import logging

import pytest

from streams.engine.dedupe import DedupeMode, ProcessedIds


async def test_a_load_that_cannot_reach_the_brokers_lets_events_go_on_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = ProcessedIds("127.0.0.1:1", "p.processed", mode=DedupeMode.COUNT)  # nothing listens on port 1
    with caplog.at_level(logging.WARNING, logger="streams.dedupe"):
        await ids.ensure_loaded(3)  # raises nothing
        await ids.ensure_loaded(3)  # within the retry delay: not tried again
    assert not ids.seen(3, "evt-1")
    warnings = [r for r in caplog.records if r.name == "streams.dedupe"]
    assert len(warnings) == 1 and "p.processed[3]" in warnings[0].getMessage()
