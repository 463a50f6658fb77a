"""A client's repeated errors: the first shown, then one count per interval, then the end."""

from __future__ import annotations

import io
import logging

from streams.telemetry.repeats import RepeatedErrors


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def setup() -> tuple[logging.Logger, io.StringIO, Clock, list[tuple[str, str]]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    clock, counted = Clock(), []
    repeats = RepeatedErrors(10.0, clock=clock, flush_thread=False,
                             on_repeat=lambda client, kind: counted.append((client, kind)))
    repeats.attach(handler)
    logger = logging.getLogger("aiokafka.test-repeats")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream, clock, counted


def test_a_flood_of_one_error_is_one_line_then_one_count_per_interval_then_its_end() -> None:
    logger, stream, clock, counted = setup()
    for second in range(25):
        clock.now = float(second)
        for node in (1, 2):
            for _ in range(100):
                logger.error("Unable connect to node with id %s: %s", node, "[Errno 111] refused")
    clock.now = 40.0
    logger.error("Unable connect to node with id %s: %s", 1, "late")  # the same kind, after a quiet spell
    lines = stream.getvalue().splitlines()
    assert lines[0] == "aiokafka.test-repeats Unable connect to node with id 1: [Errno 111] refused"
    summaries = [line.split(": ")[0].removeprefix("aiokafka.test-repeats ") for line in lines[1:3]]
    assert summaries == ["repeated 2000 times in the last 10 s", "repeated 2000 times in the last 10 s"]
    assert "repeated 999 more times" in lines[3] and "stopped after 24 s" in lines[4]
    assert len(lines) == 6 and lines[5].endswith("late")
    assert len(counted) == 25 * 200 + 1 and counted[0] == ("aiokafka", "Unable connect to node with id %s: %s")


def test_our_own_records_and_info_records_are_never_held_back() -> None:
    logger, stream, _, _ = setup()
    ours = logging.getLogger("streams.test-repeats")
    ours.handlers[:] = logger.handlers
    ours.propagate = False
    for _ in range(5):
        ours.error("the same thing")
        logger.info("joined group")
    assert len(stream.getvalue().splitlines()) == 10
