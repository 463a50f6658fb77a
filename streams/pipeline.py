"""A pipeline as its author writes it: topics, schemas, steps and the output record.

    pipeline = Pipeline("signups-checker", source="signups", sink="signups.checked",
                        input_schema="com.example.Signup", output_schema="com.example.CheckedSignup")

    @pipeline.step(accounts)                                  # required: its failure fails the event
    async def account(event):
        return await accounts.get("/v1/accounts/{id}", id=event["account_id"])

    @pipeline.step(geo, required=False, fallback=None)        # optional: falls back, output degraded
    async def location(event):
        return await geo.get("/v1/geo/{ip}", ip=event["ip"])

    @pipeline.step(scoring, batch=Batch(max_size=50))         # one call for many events
    async def score(event, account):                          # waits for ``account``
        ...                                                   # gets lists, returns one result per item

    @pipeline.output
    def checked(event, account, location, score):
        return {**event, "account": account, ...}             # None drops the event (filtered)

A step's parameters name what it needs: ``event`` (the decoded input record) or another step,
whose result it then waits for; steps that do not depend on each other run concurrently for
an event. The graph is checked when the pipeline is loaded (``check``): an unknown name or a
cycle is an error that names it. ``run_one`` runs one event without Kafka, with fake APIs.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from connectors.context import current_event_id
from connectors.errors import TransientError
from connectors.resilience.batching import BatchSettings, MicroBatcher
from streams.api import Api, FakeApi, batch_event_ids, degradations, fakes
from streams.failures import Failure, FailureKind, classify
from streams.table import Table

RECORD_KEY: Final = "record-key"  # Pipeline(key=...): order events by the Kafka record key
_NO_FALLBACK: Final = object()
_RESERVED = frozenset({"event", "degraded"})


class PipelineError(ValueError):
    """A pipeline definition that cannot run; the message names the pipeline and the culprit."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch step: up to ``max_size`` events' calls in one, after at most ``linger`` seconds;
    ``max_concurrent`` batch calls in flight at once."""

    max_size: int = 50
    linger: float = 0.01
    max_concurrent: int = 4

    def __post_init__(self) -> None:
        if self.max_size < 1 or self.max_concurrent < 1 or self.linger < 0:
            raise ValueError("Batch: max_size and max_concurrent must be >= 1, linger >= 0")


@dataclass(slots=True)
class Step:
    """One step of a pipeline, as ``Pipeline.step`` recorded it."""

    name: str
    fn: Callable[..., Any]
    api: Api | None
    required: bool
    fallback: Any
    batch: Batch | None
    params: tuple[str, ...]
    is_async: bool = True  # a coroutine function (or a batch step): awaited, with its level's others
    batcher: MicroBatcher[tuple[str, tuple[Any, ...]], Any] | None = None

    @property
    def fallback_value(self) -> Any:
        return None if self.fallback is _NO_FALLBACK else self.fallback


@dataclass(frozen=True, slots=True)
class Outcome:
    """What ``run_one`` saw: the output record, or the failure the worker would route.

    destination: ``output``, ``retry`` (transient: in-call retries, then the tiers), ``dlq``
    (permanent or poison) or ``filtered`` (the output builder returned None).
    """

    output: dict[str, Any] | None
    failure: Failure | None = None
    degraded: tuple[str, ...] = ()

    @property
    def destination(self) -> str:
        if self.failure is not None:
            return "retry" if self.failure.kind is FailureKind.TRANSIENT else "dlq"
        return "filtered" if self.output is None else "output"


class Pipeline:
    """A named pipeline: where events come from and go, their schemas, its steps and output.

    name: the consumer group id; names the retry tiers (``<name>.retry.<delay>``) and the DLQ
        (``<name>.dlq``). source / sink: the input and output topics.
    input_schema / output_schema: the subjects of the Avro schemas, found in ``schemas`` (a folder
        laid out as ``<Name>/v<N>.avsc`` with a ``registry.json``; relative to the file that
        defines the pipeline; default: its ``schemas`` folder) or in the Schema Registry.
    key: ``RECORD_KEY`` (events of one Kafka key run one after another, in offset order) or
        None (no order is kept: every event may run concurrently).
    """

    def __init__(
        self,
        name: str,
        *,
        source: str,
        sink: str,
        input_schema: str,
        output_schema: str,
        key: str | None = RECORD_KEY,
        schemas: str | Path | None = None,
    ) -> None:
        if key not in (RECORD_KEY, None):
            raise PipelineError(f"pipeline {name!r}: key must be RECORD_KEY or None, not {key!r}")
        self.name = name
        self.source = source
        self.sink = sink
        self.input_subject = input_schema
        self.output_subject = output_schema
        self.ordered = key is not None
        self.schemas_dir = _schemas_dir(schemas, sys._getframe(1).f_globals.get("__file__"))
        self.steps: dict[str, Step] = {}
        self.tables: dict[str, Table] = {}
        self._output: Callable[..., Any] | None = None
        self._output_params: tuple[str, ...] = ()
        self._levels: list[list[Step]] | None = None
        self._output_fields: frozenset[str] = frozenset()
        self.sample_events: Callable[[int, int], list[dict[str, Any]]] | None = None
        self.sample_key: str | None = None

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, {self.source!r} -> {self.sink!r}, steps={list(self.steps)})"

    # -- definition ----------------------------------------------------------------------------

    def step(
        self,
        api: Api | None = None,
        *,
        required: bool = True,
        fallback: Any = _NO_FALLBACK,
        batch: Batch | None = None,
        name: str | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Add the decorated function as a step (named after it, or ``name``).

        api: the API it calls (its breaker pauses consumption when a required step finds it open).
        required: False makes the step optional: a transient failure (outage, timeout, open
            circuit) gives ``fallback`` (default None; a callable is called with the event)
            and marks the output degraded; a permanent failure still fails the event.
        batch: ``Batch(...)`` makes it a batch step: it is called with a list per parameter (one
            entry per event) and returns a list with one result or one exception per event.
        """
        if fallback is not _NO_FALLBACK and required:
            raise PipelineError(f"pipeline {self.name!r}: a fallback is for optional steps (required=False)")

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            step_name = name or fn.__name__
            if step_name in self.steps:
                raise PipelineError(f"pipeline {self.name!r}: step {step_name!r} is defined twice")
            if step_name in _RESERVED:
                raise PipelineError(f"pipeline {self.name!r}: a step cannot be called {step_name!r}")
            if batch is not None and not inspect.iscoroutinefunction(fn):
                raise PipelineError(f"pipeline {self.name!r}: batch step {step_name!r} must be an async def")
            self.steps[step_name] = Step(step_name, fn, api, required, fallback, batch, _parameters(fn),
                                         is_async=batch is not None or inspect.iscoroutinefunction(fn))
            self._levels = None
            return fn

        return register

    def output(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Use the decorated function to build the output record from ``event``, the steps'
        results (by name) and ``degraded`` (the reasons, if any); returning None drops the event."""
        if self._output is not None:
            raise PipelineError(f"pipeline {self.name!r}: the output is defined twice")
        self._output = fn
        self._output_params = _parameters(fn)
        self._levels = None
        return fn

    def samples(self, key: str | None = None) -> Callable[[Callable[[int, int], list[dict[str, Any]]]],
                                                          Callable[[int, int], list[dict[str, Any]]]]:
        """Use the decorated ``fn(count, seed) -> [input records]`` for ``streams produce --count``
        and ``streams check``; ``key`` names the field whose value is the record key."""

        def register(fn: Callable[[int, int], list[dict[str, Any]]]) -> Callable[[int, int], list[dict[str, Any]]]:
            self.sample_events, self.sample_key = fn, key
            return fn

        return register

    def table(self, name: str, *, topic: str, schema: str, key: str,
              value: Callable[[dict[str, Any]], Any] | None = None) -> Table:
        """A topic read whole and followed, by the ``key`` field of its records (``streams.table``);
        started with the pipeline, so steps can look rows up with ``table.get(key)``."""
        if name in self.tables:
            raise PipelineError(f"pipeline {self.name!r}: table {name!r} is defined twice")
        table = self.tables[name] = Table(name, topic=topic, schema=schema, key=key, value=value)
        return table

    @property
    def apis(self) -> list[Api]:
        """The APIs the steps call, each once, in step order."""
        seen: dict[str, Api] = {}
        for step in self.steps.values():
            if step.api is not None:
                seen.setdefault(step.api.name, step.api)
        return list(seen.values())

    def check(self) -> None:
        """Check the step graph: known names, no cycle, an output; raises ``PipelineError``."""
        self._plan()

    def describe(self) -> list[str]:
        """The steps in the order they can run, one line each (for ``streams check``)."""
        lines = []
        for number, level in enumerate(self._plan(), 1):
            for step in level:
                kind = "required" if step.required else "optional"
                needs = [p for p in step.params if p != "event"]
                lines.append(f"{number}. {step.name} ({kind}{', batch' if step.batch else ''}"
                             f"{', api ' + step.api.name if step.api else ''})"
                             f"{' after ' + ', '.join(needs) if needs else ''}")
        return lines

    def _plan(self) -> list[list[Step]]:
        if self._levels is not None:
            return self._levels
        if self._output is None:
            raise PipelineError(f"pipeline {self.name!r} has no output: decorate a function with @pipeline.output")
        for owner, params in [*((s.name, s.params) for s in self.steps.values()), ("output", self._output_params)]:
            for param in params:
                if param not in self.steps and param not in ("event", "degraded" if owner == "output" else ""):
                    known = ", ".join(["event", *self.steps]) + (", degraded" if owner == "output" else "")
                    raise PipelineError(f"pipeline {self.name!r}: {owner} {'step ' if owner != 'output' else ''}"
                                        f"depends on unknown step {param!r} (known: {known})")
        levels: list[list[Step]] = []
        done: set[str] = set()
        left = dict(self.steps)
        while left:
            ready = [s for s in left.values() if all(p == "event" or p in done for p in s.params)]
            if not ready:
                raise PipelineError(f"pipeline {self.name!r}: steps {_cycle(left)} depend on each other in a cycle")
            levels.append(ready)
            for step in ready:
                done.add(step.name)
                del left[step.name]
        self._levels = levels
        return levels

    # -- running (the worker's side) --------------------------------------------------------------

    def set_output_fields(self, names: Sequence[str]) -> None:
        """The output schema's field names: ``degraded`` / ``degraded_reasons`` are filled when it has them."""
        self._output_fields = frozenset(names)

    async def start(self) -> None:
        self._plan()
        for api in self.apis:
            await api.start()
        for table in self.tables.values():
            await table.start()
        for step in self.steps.values():
            if step.batch is not None and step.batcher is None:
                step.batcher = MicroBatcher(step.name, _batch_sender(step), BatchSettings(
                    max_size=step.batch.max_size, linger=step.batch.linger,
                    max_concurrent_batches=step.batch.max_concurrent))

    async def close(self) -> None:
        for step in self.steps.values():
            if step.batcher is not None:
                await step.batcher.close()
                step.batcher = None
        for table in self.tables.values():
            await table.close()
        for api in self.apis:
            await api.close()

    def on_assignment(self, owned_partitions: int, total_partitions: int) -> None:
        """The worker owns this many of the input's partitions: each API's rate share follows."""
        for api in self.apis:
            connector = api.connector
            if connector is not None and connector.limiter is not None:
                connector.limiter.set_share(owned_partitions, total_partitions)

    def process(self, event: dict[str, Any]) -> Coroutine[Any, Any, dict[str, Any] | None]:
        """The output record for one event, or None (filtered); raises what fails the event.
        (A coroutine to await: ``_evaluate``'s own, so each of the event's awaits passes one frame less.)"""
        return self._evaluate(event, [])

    async def _evaluate(self, event: dict[str, Any], reasons: list[str]) -> dict[str, Any] | None:
        token = degradations.set(reasons)
        try:
            results: dict[str, Any] = {"event": event}
            for level in self._levels or self._plan():
                waiting = []
                for step in level:  # plain functions at once, coroutines together
                    if step.is_async:
                        waiting.append(step)
                    else:
                        try:
                            results[step.name] = step.fn(*[results[p] for p in step.params])
                        except TransientError as exc:
                            results[step.name] = _fall_back(step, exc, event, reasons)
                if len(waiting) == 1:
                    results[waiting[0].name] = await self._run_step(waiting[0], results, reasons)
                elif waiting:
                    values = await _all_or_none([self._run_step(s, results, reasons) for s in waiting])
                    for step, value in zip(waiting, values, strict=True):
                        results[step.name] = value
            results["degraded"] = reasons
            assert self._output is not None
            output = self._output(*[results[p] for p in self._output_params])
            if type(output) is not dict and inspect.isawaitable(output):
                output = await output
        finally:
            degradations.reset(token)
        if output is None:
            return None
        if not isinstance(output, dict):
            raise TypeError(f"the output of pipeline {self.name!r} is {type(output).__name__}, expected a dict")
        if "degraded" in self._output_fields and "degraded" not in output:
            output["degraded"] = bool(reasons)
        if "degraded_reasons" in self._output_fields and "degraded_reasons" not in output:
            output["degraded_reasons"] = list(reasons)
        return output

    async def _run_step(self, step: Step, results: dict[str, Any], reasons: list[str]) -> Any:
        args = tuple([results[p] for p in step.params])
        try:
            if step.batcher is not None:
                return await step.batcher.submit((current_event_id.get() or "", args))
            if step.batch is not None:  # not started (run_one): a batch of one
                (value,) = await _batch_sender(step)([(current_event_id.get() or "", args)])
                if isinstance(value, BaseException):
                    raise value
                return value
            return await step.fn(*args)
        except TransientError as exc:
            return _fall_back(step, exc, results["event"], reasons)

    # -- testing without Kafka ----------------------------------------------------------------------

    async def run_one(self, event: dict[str, Any], *, apis: Mapping[str, FakeApi] | None = None,
                      event_id: str | None = None) -> Outcome:
        """Run one decoded event through the steps and the output, with ``apis`` standing in for
        the APIs by name (any object with async ``get``/``post``; an API without a fake is called
        for real if the pipeline was started). Batch steps get one-item lists.

        Returns the output, or the failure as the worker would classify and route it.
        """
        self._plan()
        unknown = set(apis or ()) - {api.name for api in self.apis}
        if unknown:
            raise PipelineError(f"pipeline {self.name!r} calls no API named {sorted(unknown)}; "
                                f"its APIs: {[api.name for api in self.apis]}")
        fake_token = fakes.set(dict(apis or {}))
        id_token = current_event_id.set(event_id or str(event.get("event_id") or "run-one"))
        batchers = {name: step.batcher for name, step in self.steps.items()}
        for step in self.steps.values():
            step.batcher = None  # one event: a batch step is called with one-item lists
        reasons: list[str] = []
        try:
            output = await self._evaluate(event, reasons)
        except Exception as exc:  # noqa: BLE001 - classified as the worker would
            return Outcome(None, classify(exc), tuple(reasons))
        finally:
            for name, batcher in batchers.items():
                self.steps[name].batcher = batcher
            current_event_id.reset(id_token)
            fakes.reset(fake_token)
        return Outcome(output, None, tuple(reasons))


def _fall_back(step: Step, exc: TransientError, event: Any, reasons: list[str]) -> Any:
    """An optional step's stand-in for a transient failure, and the reason; a required step's
    failure goes on up."""
    if step.required:
        raise exc
    reasons.append(f"{step.name}: {type(exc).__name__}: {exc}"[:200])
    fallback = step.fallback_value
    return fallback(event) if callable(fallback) else fallback


def _batch_sender(step: Step) -> Callable[[list[tuple[str, tuple[Any, ...]]]], Awaitable[list[Any]]]:
    """Call a batch step with one list per parameter; check it answered once per event."""

    async def send(items: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        id_token = current_event_id.set(None)  # the batch is not one event's: its key is the batch's
        ids_token = batch_event_ids.set(tuple(event_id for event_id, _ in items))
        try:
            columns = [list(column) for column in zip(*(args for _, args in items), strict=True)]
            results = await step.fn(*columns)
        finally:
            batch_event_ids.reset(ids_token)
            current_event_id.reset(id_token)
        if not isinstance(results, list | tuple) or len(results) != len(items):
            got = len(results) if isinstance(results, list | tuple) else type(results).__name__
            raise TypeError(f"batch step {step.name!r} returned {got} results for {len(items)} events")
        return list(results)

    return send


async def _all_or_none(calls: list[Awaitable[Any]]) -> list[Any]:
    """Await concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _parameters(fn: Callable[..., Any]) -> tuple[str, ...]:
    params = []
    for parameter in inspect.signature(fn).parameters.values():
        if parameter.kind not in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            raise PipelineError(f"{fn.__qualname__}: parameter {parameter.name!r} must be a plain parameter "
                                f"(it names the event or a step)")
        params.append(parameter.name)
    return tuple(params)


def _cycle(left: Mapping[str, Step]) -> str:
    """One cycle among the steps left, as ``a -> b -> a``."""
    start = next(iter(left))
    path = [start]
    while True:
        following = next(p for p in left[path[-1]].params if p in left)
        if following in path:
            cycle = [*path[path.index(following):], following]
            return " -> ".join(cycle)
        path.append(following)


def _schemas_dir(schemas: str | Path | None, defined_in: str | None) -> Path | None:
    base = Path(defined_in).resolve().parent if defined_in else Path.cwd()
    if schemas is None:
        candidate = base / "schemas"
        return candidate if (candidate / "registry.json").is_file() else None
    path = Path(schemas)
    return path if path.is_absolute() else (base / path).resolve()


