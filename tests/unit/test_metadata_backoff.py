"""Metadata refreshes back off while they fail, and not at all while the cluster answers."""

from __future__ import annotations

import asyncio
import time

from aiokafka.client import AIOKafkaClient

import streams.kafka  # noqa: F401 - installs the backoff, as every process of ours does
from streams.kafka import metadata_backoff


def test_the_wrapper_is_installed_on_aiokafkas_client() -> None:
    assert metadata_backoff.installed()
    assert AIOKafkaClient.force_metadata_update is metadata_backoff.force_metadata_update


async def test_failed_refreshes_are_spaced_out_and_a_success_resets_the_backoff(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    answers: list[bool] = []
    started: list[float] = []

    def refresh(client: object) -> asyncio.Future[bool]:  # aiokafka's, failing at once like a refused connection
        started.append(time.monotonic())
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        future.set_result(answers.pop(0) if answers else False)
        return future

    monkeypatch.setattr(metadata_backoff, "_original", refresh)
    client = object.__new__(AIOKafkaClient)  # no connections: only the refresh is called
    began = time.monotonic()
    for _ in range(6):  # the sender's loop: ask, wait for the answer, ask again
        await metadata_backoff.force_metadata_update(client)
    elapsed = time.monotonic() - began
    # 0 + 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s between six failed refreshes, not a spin
    assert 2.8 < elapsed < 4.5, elapsed
    assert len(started) == 6
    answers[:] = [True, True]
    await metadata_backoff.force_metadata_update(client)  # after the last backoff: a success
    quick = time.monotonic()
    await metadata_backoff.force_metadata_update(client)  # the cluster answers: no delay
    assert time.monotonic() - quick < 0.05


async def test_callers_during_a_backoff_share_one_delayed_refresh(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls = 0

    def refresh(client: object) -> asyncio.Future[bool]:
        nonlocal calls
        calls += 1
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        future.set_result(False)
        return future

    monkeypatch.setattr(metadata_backoff, "_original", refresh)
    client = object.__new__(AIOKafkaClient)
    await metadata_backoff.force_metadata_update(client)  # fails: the next one waits 0.1 s
    await asyncio.gather(*(metadata_backoff.force_metadata_update(client) for _ in range(50)))
    assert calls == 2
