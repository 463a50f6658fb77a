"""Process-wide tuning for a worker: the event loop and the garbage collector's thresholds.

    describe = tune_runtime(settings)   # before the first event loop is made
    log.info("runtime: %s", describe)

Both were measured on the bench (``bench/PROFILE.md``): with Python's default thresholds
(700, 10, 10) the cyclic collector took ~18 % of a busy worker's CPU. Events wait in buffers
(Faust's, the engine's lanes) long enough to be promoted to the old generation, so full
collections, each a walk over every tracked object of the process, came every ~700 events.
A young-generation threshold of 50,000 makes collections ~70× rarer; reference counting still
frees almost everything at once, only cyclic garbage waits longer (a few MB at most).
uvloop runs the loop's own machinery (handles, timers, sockets) in C, but not where the worker
talks TLS to Kafka: uvloop's TLS close does not read what the peer still sends after our
close_notify (MagicStack/uvloop#471, open), so closing a connection that has a fetch in flight
waits out the 30 s TLS shutdown timeout. aiokafka awaits that close: a worker loading a
partition's processed ids stalled that partition for 30 s in about one start of four against the
secure broker, and none of ten on asyncio's loop. ``auto`` therefore picks asyncio's loop when
the Kafka connection uses TLS (``SSL``, ``SASL_SSL``); asking for ``uvloop`` is still honoured.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
from collections.abc import Coroutine
from typing import Any, Protocol

TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})


class RuntimeSettings(Protocol):
    # read-only: Settings narrows them to Literal choices
    @property
    def event_loop(self) -> str: ...

    @property
    def gc_gen0_threshold(self) -> int: ...

    @property
    def kafka_security_protocol(self) -> str: ...


def tune_runtime(settings: RuntimeSettings) -> str:
    """Apply the settings to this process; returns what was applied, for the startup log."""
    tls = settings.kafka_security_protocol in TLS_PROTOCOLS
    loop = choose_event_loop(settings.event_loop, kafka_tls=tls)
    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if settings.gc_gen0_threshold > 0:
        gc.set_threshold(settings.gc_gen0_threshold, 20, 20)
    why = ""
    if tls and settings.event_loop == "auto":
        why = " (not uvloop: Kafka over TLS, uvloop#471)"
    elif tls and loop == "uvloop":
        why = " (asked for; over TLS a connection's close can wait 30 s, uvloop#471)"
    return f"event loop {loop}{why}, gc thresholds {gc.get_threshold()}"


def run(main: Coroutine[Any, Any, None], wanted: str = "auto") -> None:
    """``asyncio.run(main)`` on the loop ``wanted`` chooses (``auto``: uvloop where installed)."""
    if choose_event_loop(wanted) == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def choose_event_loop(wanted: str, *, kafka_tls: bool = False) -> str:
    """``auto`` is uvloop where it is installed and Kafka is not reached over TLS (see above);
    ``uvloop`` where it is not installed is an error."""
    available = importlib.util.find_spec("uvloop") is not None
    if wanted == "uvloop" and not available:
        raise RuntimeError("STREAMS_EVENT_LOOP=uvloop but uvloop is not installed (pip install uvloop)")
    if wanted == "asyncio" or not available or (wanted == "auto" and kafka_tls):
        return "asyncio"
    return "uvloop"
