import asyncio
import gc
from dataclasses import dataclass

import pytest

from streams import runtime
from streams.runtime import choose_event_loop, tune_runtime


@dataclass
class _Settings:
    event_loop: str
    gc_gen0_threshold: int
    kafka_security_protocol: str = "PLAINTEXT"


@pytest.fixture
def restore_runtime():
    thresholds, policy = gc.get_threshold(), asyncio.get_event_loop_policy()
    yield
    gc.set_threshold(*thresholds)
    asyncio.set_event_loop_policy(policy)


def test_auto_is_uvloop_where_installed_and_asyncio_on_request():
    assert choose_event_loop("auto") == "uvloop"  # a project dependency on this platform
    assert choose_event_loop("asyncio") == "asyncio"


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_auto_is_asyncio_when_kafka_is_reached_over_tls(restore_runtime, protocol):
    assert choose_event_loop("auto", kafka_tls=True) == "asyncio"
    assert tune_runtime(_Settings("auto", 50_000, protocol)).startswith(
        "event loop asyncio (not uvloop: Kafka over TLS, uvloop#471)")
    assert not isinstance(asyncio.get_event_loop_policy(), __import__("uvloop").EventLoopPolicy)
    # asked for explicitly, it is honoured, and the log says what it risks
    assert "can wait 30 s" in tune_runtime(_Settings("uvloop", 50_000, protocol))
    assert tune_runtime(_Settings("auto", 50_000, "SASL_PLAINTEXT")).startswith("event loop uvloop,")


def test_asking_for_uvloop_without_it_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: None)
    assert choose_event_loop("auto") == "asyncio"
    with pytest.raises(RuntimeError, match="STREAMS_EVENT_LOOP=uvloop but uvloop is not installed"):
        choose_event_loop("uvloop")


def test_tune_runtime_sets_the_loop_policy_and_gc_thresholds(restore_runtime):
    import uvloop

    applied = tune_runtime(_Settings("auto", 50_000))
    assert gc.get_threshold()[0] == 50_000
    assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    assert applied == "event loop uvloop, gc thresholds (50000, 20, 20)"


def test_zero_keeps_pythons_gc_thresholds(restore_runtime):
    before = gc.get_threshold()
    tune_runtime(_Settings("asyncio", 0))
    assert gc.get_threshold() == before


def test_run_uses_the_chosen_loop() -> None:
    import uvloop

    from streams.runtime import run

    seen: list[type] = []

    async def which() -> None:
        seen.append(type(asyncio.get_running_loop()))

    run(which())
    run(which(), wanted="asyncio")
    assert seen[0] is uvloop.Loop and not issubclass(seen[1], uvloop.Loop)
