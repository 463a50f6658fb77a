"""The console's web app (aiohttp): routes, the dead-letter reads and the redrive jobs.

    GET  /                       the overview (its live part: GET /overview/live; JSON: /api/overview)
    GET  /dlq?kind=&class=&api=&status=&key=&since=&until=    dead letters, counted by reason
    GET  /dlq/letter/<p>:<o>     one letter: headers, decoded value (redacted), error
    POST /dlq/redrive/preview    what a redrive of the filter would replay (nothing is written)
    POST /dlq/redrive            replay the previewed letters (``streams.dlq.replay``), as a job
    GET  /dlq/redrive/<job>      its progress (live part: /dlq/redrive/<job>/live)

A redrive replays exactly the letters its preview listed, with the exactly-once replay of
``streams dlq replay`` (one transaction per batch, the ledger ``<pipeline>.dlq.replayed``); each
ledger entry records who (the name the operator gave and how they signed in), via the console,
which job and when. One redrive runs at a time: the replay's transactional id is the pipeline's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from streams.console import pages
from streams.console.guard import CSRF_TOKEN, PRINCIPAL, SESSION_COOKIE, Guard, form_text
from streams.console.settings import ConsoleSettings
from streams.console.state import PipelineView
from streams.dlq import DeadLetter, DeadLetterFilter, ReplayReport, iter_dead_letters, replay, replayed_refs
from streams.names import Header
from streams.progress import Progress
from streams.security import kafka_security
from streams.serde.avro import AvroSerde
from streams.settings import Settings, pipeline_names
from streams.telemetry.redaction import REDACTED, redact, redact_value

log = logging.getLogger("streams.console")


@dataclass
class RedriveJob:
    id: str
    by: str
    principal: str
    selection: str
    refs: list[str]
    target: str
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    state: str = "running"  # running, done, failed
    progress: Progress = field(default_factory=lambda: Progress("redrive", unit="letters", mode="off"))
    report: ReplayReport | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = None


class Console:
    def __init__(self, settings: Settings, console: ConsoleSettings, serde: AvroSerde | None) -> None:
        self.settings = settings
        self.console = console
        self.serde = serde
        self.names = pipeline_names(settings)
        self.view = PipelineView(settings, console)
        self.guard = Guard(console)
        self.security = kafka_security(settings)
        self.jobs: dict[str, RedriveJob] = {}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard.middleware], client_max_size=16 * 1024 * 1024)
        app.router.add_get("/", self.overview_page)
        app.router.add_get("/overview/live", self.overview_live)
        app.router.add_get("/api/overview", self.overview_json)
        app.router.add_get("/dlq", self.dlq_page)
        app.router.add_get("/dlq/letter/{ref}", self.letter_page)
        app.router.add_post("/dlq/redrive/preview", self.redrive_preview)
        app.router.add_post("/dlq/redrive", self.redrive_start)
        app.router.add_get("/dlq/redrive/{job}", self.job_page)
        app.router.add_get("/dlq/redrive/{job}/live", self.job_live)
        app.router.add_get("/login", self.login_page)
        app.router.add_post("/login", self.login)
        app.router.add_get("/static/console.css", _static(pages.CSS, "text/css"))
        app.router.add_get("/static/console.js", _static(pages.JS, "text/javascript"))
        app.on_startup.append(lambda _: self.view.start())
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, _app: web.Application) -> None:
        for job in self.jobs.values():
            if job.task is not None and not job.task.done():
                job.task.cancel()  # the replay aborts its open transaction: nothing half-recorded
                with contextlib.suppress(asyncio.CancelledError):
                    await job.task
        await self.view.stop()

    def _page(self, title: str, body: str) -> web.Response:
        return web.Response(text=pages.page(title, body, pipeline=self.names.pipeline, refresh=self.console.refresh),
                            content_type="text/html")

    # -- overview ---------------------------------------------------------------------------------

    async def overview_page(self, request: web.Request) -> web.Response:
        overview = await self.view.overview()
        return self._page("Overview", f"<div id=overview data-live=/overview/live>{pages.overview(overview)}</div>")

    async def overview_live(self, request: web.Request) -> web.Response:
        return web.Response(text=pages.overview(await self.view.overview()), content_type="text/html")

    async def overview_json(self, request: web.Request) -> web.Response:
        return web.json_response((await self.view.overview()).as_json())

    # -- dead letters -----------------------------------------------------------------------------

    async def dlq_page(self, request: web.Request) -> web.Response:
        criteria = _criteria(request.query)
        try:
            selection = _selection(criteria)
        except ValueError as exc:
            body = pages.dlq(criteria, [], 0, 0, set(), Counter(), request[CSRF_TOKEN], self.console.dlq_rows, str(exc))
            return web.Response(status=400, text=pages.page("Dead letters", body, pipeline=self.names.pipeline,
                                                            refresh=self.console.refresh), content_type="text/html")
        letters: list[DeadLetter] = []
        by_reason: Counter[tuple[str, ...]] = Counter()
        matched = 0
        reading = Progress("dlq", unit="letters", mode="off")
        async for letter in iter_dead_letters(self.settings.kafka_bootstrap_servers, self.names.pipeline, selection,
                                              security=self.security, progress=reading):
            matched += 1
            h = letter.header
            by_reason[(h(Header.ERROR_KIND) or "-", h(Header.ERROR_CLASS) or "-", h(Header.ERROR_CONNECTOR) or "-",
                       h(Header.ERROR_STATUS) or "-")] += 1
            if len(letters) < self.console.dlq_rows:
                letters.append(_redacted_letter(letter))
        replayed = await replayed_refs(self.settings.kafka_bootstrap_servers, self.names.pipeline,
                                       security=self.security, create=False)
        body = pages.dlq(criteria, letters, matched, reading.total or 0, replayed, by_reason, request[CSRF_TOKEN],
                         self.console.dlq_rows, None) + pages.jobs(reversed(self.jobs.values()))
        return self._page("Dead letters", body)

    async def letter_page(self, request: web.Request) -> web.Response:
        ref = request.match_info["ref"]
        found = [letter async for letter in iter_dead_letters(
            self.settings.kafka_bootstrap_servers, self.names.pipeline, DeadLetterFilter(refs=frozenset([ref])),
            security=self.security)]
        if not found:
            raise web.HTTPNotFound(text=f"no dead letter at {ref} in {self.view.dlq}")
        letter = found[0]
        replayed = ref in await replayed_refs(self.settings.kafka_bootstrap_servers, self.names.pipeline,
                                              security=self.security, create=False)
        headers = {name: redact(value) for name, value in letter.headers.items()}
        return self._page(f"Dead letter {ref}", pages.letter(_redacted_letter(letter), headers,
                                                             self._decoded(letter), replayed))

    def _decoded(self, letter: DeadLetter) -> Any:
        """The value decoded with the pipeline's schemas, configured and secret-looking fields redacted.
        Undecodable bytes are never shown: they may hold anything."""
        size = len(letter.value or b"")
        if self.serde is None or letter.value is None:
            return {"undecodable": "no value" if letter.value is None else "no schemas configured", "bytes": size}
        try:
            value = self.serde.decode(letter.value)
        except (ValueError, LookupError) as exc:
            return {"undecodable": redact(f"{type(exc).__name__}: {exc}"), "bytes": size}
        return redact_value(_without(value, self.console.redacted_fields))

    # -- redrive ----------------------------------------------------------------------------------

    async def _plan(self, criteria: Mapping[str, str]) -> tuple[list[str], int, int]:
        selection = _selection(criteria)
        refs = [letter.ref async for letter in iter_dead_letters(
            self.settings.kafka_bootstrap_servers, self.names.pipeline, selection, security=self.security)]
        done = await replayed_refs(self.settings.kafka_bootstrap_servers, self.names.pipeline, security=self.security,
                                   create=False)
        todo = [ref for ref in refs if ref not in done]
        return todo, len(refs), len(refs) - len(todo)

    async def redrive_preview(self, request: web.Request) -> web.Response:
        form = await request.post()
        criteria = _criteria({name: form_text(form, name) for name, _ in pages.FILTERS})
        try:
            todo, matched, skipped = await self._plan(criteria)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return self._page("Redrive preview", pages.preview(criteria, todo, matched, skipped, self.names.input_topic,
                                                           request[PRINCIPAL], request[CSRF_TOKEN]))

    async def redrive_start(self, request: web.Request) -> web.Response:
        form = await request.post()
        operator = form_text(form, "operator")
        refs = [ref for ref in form_text(form, "refs").split(",") if ref]
        if not operator or len(operator) > 200:
            raise web.HTTPBadRequest(text="give your name (at most 200 characters): the ledger records who redrove")
        if not refs or not all(_is_ref(ref) for ref in refs):
            raise web.HTTPBadRequest(text="refs must be PARTITION:OFFSET,... as the preview listed them")
        running = [j for j in self.jobs.values() if j.state == "running"]
        if running:
            raise web.HTTPConflict(text=f"redrive {running[0].id} is still running; one at a time")
        job = RedriveJob(id=secrets.token_hex(4), by=operator, principal=request[PRINCIPAL],
                         selection=form_text(form, "selection")[:500] or "refs", refs=refs,
                         target=self.names.input_topic)
        self.jobs[job.id] = job
        job.task = asyncio.create_task(self._redrive(job, request.remote or "?"), name=f"redrive-{job.id}")
        log.info("redrive %s of %d dead letters to %s started by %s (%s)", job.id, len(refs), job.target, operator,
                 job.principal)
        raise web.HTTPSeeOther(f"/dlq/redrive/{job.id}")

    async def _redrive(self, job: RedriveJob, remote: str) -> None:
        try:
            letters = [letter async for letter in iter_dead_letters(
                self.settings.kafka_bootstrap_servers, self.names.pipeline, DeadLetterFilter(refs=frozenset(job.refs)),
                security=self.security)]
            missing = len(job.refs) - len(letters)
            job.report = await replay(
                self.settings.kafka_bootstrap_servers, self.names.pipeline, letters, target=job.target,
                rate=self.console.redrive_rate, security=self.security, progress=job.progress,
                audit={"by": job.by, "via": "console", "auth": job.principal, "from": remote, "job": job.id})
            job.state = "done"
            if missing:
                job.error = f"{missing} previewed letters were no longer in the DLQ (retention)"
            log.info("redrive %s by %s: replayed %d, skipped %d replayed before", job.id, job.by,
                     job.report.replayed, job.report.skipped)
        except Exception as exc:  # noqa: BLE001 - shown on the job's page; the ledger says what was replayed
            job.state = "failed"
            job.error = redact(f"{type(exc).__name__}: {exc}")
            log.warning("redrive %s failed: %s", job.id, job.error)

    def _job(self, request: web.Request) -> RedriveJob:
        job = self.jobs.get(request.match_info["job"])
        if job is None:
            raise web.HTTPNotFound(text="no such redrive (jobs live as long as the console process)")
        return job

    async def job_page(self, request: web.Request) -> web.Response:
        job = self._job(request)
        return self._page(f"Redrive {job.id}", f"<h2>Redrive</h2><div id=job data-live=/dlq/redrive/{job.id}/live>"
                                               f"{pages.job(job)}</div><a href=/dlq>dead letters</a>")

    async def job_live(self, request: web.Request) -> web.Response:
        return web.Response(text=pages.job(self._job(request)), content_type="text/html")

    # -- sign-in (token) --------------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.Response:
        return self._page("Sign in", pages.login(request[CSRF_TOKEN], failed=False))

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        session = self.guard.session_for(form_text(form, "token"))
        if session is None:
            return web.Response(status=401, content_type="text/html", text=pages.page(
                "Sign in", pages.login(request[CSRF_TOKEN], failed=True), pipeline=self.names.pipeline,
                refresh=self.console.refresh))
        response = web.HTTPSeeOther("/")
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="Strict", path="/")
        raise response


def _static(text: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def serve(_request: web.Request) -> web.Response:
        return web.Response(text=text, content_type=content_type, headers={"Cache-Control": "max-age=300"})
    return serve


def _criteria(source: Mapping[str, str]) -> dict[str, str]:
    return {name: str(source.get(name, "")).strip() for name, _ in pages.FILTERS if str(source.get(name, "")).strip()}


def _selection(criteria: Mapping[str, str]) -> DeadLetterFilter:
    """The filter the criteria describe; ValueError naming the criterion that is wrong."""
    status = criteria.get("status")
    if status is not None and not status.isdigit():
        raise ValueError(f"status must be an HTTP status number, got {status!r}")
    return DeadLetterFilter(kind=criteria.get("kind"), error_class=criteria.get("class"),
                            connector=criteria.get("api"), status=int(status) if status else None,
                            since_ms=_time(criteria.get("since"), "since"),
                            until_ms=_time(criteria.get("until"), "until"), key=criteria.get("key"))


def _time(text: str | None, name: str) -> int | None:
    """Epoch milliseconds, or an ISO 8601 time (UTC when it names no zone)."""
    if not text:
        return None
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 time (2025-01-31T12:00) or epoch milliseconds, "
                         f"got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _is_ref(ref: str) -> bool:
    partition, _, offset = ref.partition(":")
    return partition.isdigit() and offset.isdigit()


def _without(value: Any, fields: frozenset[str]) -> Any:
    """``value`` with the values of ``fields`` (case-insensitive names, at any depth) replaced."""
    if not fields:
        return value
    if isinstance(value, Mapping):
        return {k: REDACTED if str(k).lower() in fields else _without(v, fields) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without(item, fields) for item in value]
    return value


def _redacted_letter(letter: DeadLetter) -> DeadLetter:
    """The letter as pages show it: headers redacted, no value (pages decode it themselves)."""
    return DeadLetter(letter.partition, letter.offset, letter.timestamp_ms, letter.key, None,
                      {name: redact(value) for name, value in letter.headers.items()})


async def run_console(settings: Settings, console: ConsoleSettings, *, serde: AvroSerde | None,
                      pipeline: Any = None) -> None:
    """Serve the console until interrupted (SIGINT, SIGTERM)."""
    app = Console(settings, console, serde).app()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, console.host, console.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    shown = f"[{host}]" if ":" in str(host) else host
    log.info("console of %s on http://%s:%s (%s)", pipeline_names(settings).pipeline, shown, port,
             "credentials required" if console.has_credentials else "loopback, no credentials")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
