"""The sandbox API: an aiohttp server standing in for the external APIs the pipelines call.

    async with SandboxServer(config=SandboxConfig(oauth_clients={"pipeline": "s3cret"})) as sandbox:
        print(sandbox.url)          # http://127.0.0.1:<free port>

Run alone with ``python -m sandbox --port 8080``. The APIs, each a fault-injection endpoint name:

| endpoint     | route                                  | what                                          |
|--------------|----------------------------------------|-----------------------------------------------|
| ``token``    | ``POST /oauth/token``                  | OAuth2 client-credentials grant               |
| ``customers``| ``GET /v1/customers/{id}``             | customer lookup; needs a bearer token when    |
|              |                                        | ``oauth_clients`` is configured, else open    |
| ``risk``     | ``POST /v1/risk-scores``               | one score; rate-limited (429 + Retry-After);  |
|              | ``GET /v1/risk-scores/health``         | honours ``Idempotency-Key``                   |
| ``risk_batch``| ``POST /v1/risk-scores/batch``        | up to 100 scores, per-item errors; honours    |
|              |                                        | a per-item ``idempotency_key`` (else the      |
|              |                                        | header's key + the item's position)           |
| ``fx``       | ``GET /v1/fx-rates/{base}``            | rates, ``Cache-Control: max-age``             |
| ``products`` | ``GET /v1/products?limit=&cursor=``    | catalog pages, ``next_cursor`` + ``Link``     |
| ``accounts`` | ``GET /v1/accounts/{id}``              | payment account; 404 when the number is       |
|              |                                        | divisible by 97 (``sandbox.payments``)        |
| ``geo``      | ``GET /v1/geo/{ip}``                   | geo-IP of an IPv4 address; 400 for others     |
| ``fraud``    | ``POST /v1/fraud/score``               | one fraud score; honours ``Idempotency-Key``  |
| ``fraud_batch``| ``POST /v1/fraud/score/batch``       | up to 100 scores, per-item 422s; honours      |
|              |                                        | ``Idempotency-Key``                           |

Admin (JSON): ``GET /admin/faults``, ``PUT``/``DELETE /admin/faults/{endpoint}``,
``DELETE /admin/faults``, ``GET /admin/stats``, ``POST /admin/tokens/revoke``.

A risk score is a state-changing effect, applied once per idempotency key (``sandbox.risk``):
``stats.risk_scored`` counts the effects, ``stats.risk_effect_keys`` holds each effect's key,
``stats.idempotent_replays`` the answers given again. With ``require_idempotency_keys`` a POST
to ``risk`` or ``risk_batch`` without an ``Idempotency-Key`` header is answered 400.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from sandbox.catalog import decode_cursor, encode_cursor
from sandbox.catalog import page as catalog_page
from sandbox.customers import customer_for
from sandbox.faults import FaultInjector, FaultSpec, error_response, retry_after_header
from sandbox.fx import rates_for
from sandbox.oauth import TokenIssuer, insufficient_scope, unauthorized
from sandbox.payments import MAX_FRAUD_BATCH, account_exists, account_for, fraud_problem, fraud_score, geo_for, valid_ip
from sandbox.risk import MAX_BATCH, ScoreLedger, TokenBucket, fingerprint, item_key_problem, risk_score

CUSTOMERS_SCOPE = "customers:read"
ENDPOINTS = ("token", "customers", "risk", "risk_batch", "fx", "products", "accounts", "geo", "fraud", "fraud_batch")
_RECORDED_HEADERS = ("X-Request-Id", "Idempotency-Key", "traceparent")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox behaves; everything has a default that keeps the demo working.

    oauth_clients: client id → secret; when set, the customer lookup needs a bearer token.
    oauth_scopes: client id → scopes it may be granted; when set, the customer lookup needs a
        token with ``customers:read`` (403 ``insufficient_scope`` otherwise).
    token_ttl: seconds an access token is valid.
    risk_api_key: when set, the risk endpoints need it in ``X-API-Key``.
    risk_rate / risk_burst: the risk API's limit (requests/s, burst) over all callers.
    retry_after_format: how 429 answers give ``Retry-After``: ``seconds`` or an HTTP ``date``.
    fx_max_age: ``Cache-Control: max-age`` of FX answers.
    catalog_size / catalog_max_page: products in the catalog, largest page.
    seed: seeds the fault draws, for repeatable runs.
    faults: endpoint → fault spec (see ``sandbox.faults``), in force from the start.
    deprecated: endpoint → Sunset date; its answers then announce ``Deprecation`` and ``Sunset``.
    require_idempotency_keys: the risk POST endpoints (``risk``, ``risk_batch``) answer 400 to a
        request without an ``Idempotency-Key`` header. Off by default: the connector library's
        ``RiskScoreConnector`` sends its batch, and its single calls outside an event, without one.
    """

    oauth_clients: Mapping[str, str] | None = field(default=None, repr=False)
    oauth_scopes: Mapping[str, tuple[str, ...]] | None = None
    token_ttl: float = 3600.0
    risk_api_key: str | None = field(default=None, repr=False)
    risk_rate: float = 200.0
    risk_burst: float = 200.0
    retry_after_format: Literal["seconds", "date"] = "seconds"
    fx_max_age: int = 60
    catalog_size: int = 1000
    catalog_max_page: int = 100
    seed: int | None = None
    faults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    deprecated: Mapping[str, str] = field(default_factory=dict)  # endpoint → Sunset HTTP date
    require_idempotency_keys: bool = False


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as it arrived (no credentials recorded)."""

    endpoint: str
    at: float  # loop time
    method: str
    path_qs: str
    headers: dict[str, str]
    peer_port: int | None  # the client's port: equal across requests on one kept-alive connection


@dataclass
class SandboxStats:
    """What the sandbox has served, for tests to check against."""

    customer_requests: int = 0
    traceparents: deque[str] = field(default_factory=lambda: deque(maxlen=10_000))
    requests: Counter[str] = field(default_factory=Counter)
    log: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=10_000))
    tokens_issued: int = 0
    throttled: int = 0
    idempotent_replays: int = 0
    fraud_scored: int = 0  # payments the fraud API scored; idempotent replays are not scored again
    risk_scored: int = 0  # orders the risk API scored (single calls and batch items); replays are not
    # the idempotency key of each risk score given, oldest first (None: a request without a key)
    risk_effect_keys: deque[str | None] = field(default_factory=lambda: deque(maxlen=100_000))
    idempotency_conflicts: int = 0  # a risk key used again with a different request (scored anew)
    missing_idempotency_keys: int = 0  # risk POSTs refused (400) for want of an Idempotency-Key

    def of(self, endpoint: str) -> list[RequestRecord]:
        """The recorded requests to one endpoint, oldest first."""
        return [r for r in self.log if r.endpoint == endpoint]

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests), "customer_requests": self.customer_requests,
            "tokens_issued": self.tokens_issued, "throttled": self.throttled,
            "idempotent_replays": self.idempotent_replays, "fraud_scored": self.fraud_scored,
            "risk_scored": self.risk_scored, "idempotency_conflicts": self.idempotency_conflicts,
            "missing_idempotency_keys": self.missing_idempotency_keys,
        }


STATS = web.AppKey("stats", SandboxStats)
FAULTS = web.AppKey("faults", FaultInjector)
ISSUER = web.AppKey("issuer", TokenIssuer)


def build_app(
    stats: SandboxStats | None = None, latency_ms: float = 0.0, config: SandboxConfig | None = None
) -> web.Application:
    """The sandbox as an aiohttp application (``latency_ms`` is added to every API answer)."""
    config = config or SandboxConfig()
    app = web.Application()
    app[STATS] = stats = stats if stats is not None else SandboxStats()
    app[FAULTS] = faults = FaultInjector(random.Random(config.seed))
    for endpoint, spec in config.faults.items():
        faults.set(_known(endpoint), FaultSpec.parse(dict(spec)))
    issuer = TokenIssuer(config.oauth_clients or {}, config.token_ttl, config.oauth_scopes)
    app[ISSUER] = issuer
    latency = latency_ms / 1000.0
    risk_limit = TokenBucket(config.risk_rate, config.risk_burst)
    risk_ledger = ScoreLedger()
    # (endpoint, Idempotency-Key) → (fingerprint of the request body, the answer given)
    fraud_replays: OrderedDict[tuple[str, str], tuple[str, dict[str, Any]]] = OrderedDict()

    def api(endpoint: str, handler: Handler) -> Handler:
        """Count and record the request, apply the endpoint's faults around the handler."""
        async def wrapped(request: web.Request) -> web.StreamResponse:
            stats.requests[endpoint] += 1
            stats.log.append(RequestRecord(
                endpoint, asyncio.get_running_loop().time(), request.method, request.path_qs,
                {h: request.headers[h] for h in _RECORDED_HEADERS if h in request.headers},
                _peer_port(request),
            ))
            if latency:
                await asyncio.sleep(latency)
            early = await faults.before(endpoint)
            if early is not None:
                return early
            response = await handler(request)
            sunset = config.deprecated.get(endpoint)
            if sunset is not None:  # RFC 9745 Deprecation, RFC 8594 Sunset
                response.headers["Deprecation"] = "@1767225600"
                response.headers["Sunset"] = sunset
            if isinstance(response, web.Response):
                return await faults.deliver(endpoint, request, response)
            return response
        return wrapped

    def risk_gate(request: web.Request) -> web.Response | None:
        if config.risk_api_key is not None and request.headers.get("X-API-Key") != config.risk_api_key:
            return web.json_response({"error": "invalid_api_key"}, status=401)
        if (config.require_idempotency_keys and request.method == "POST"
                and not request.headers.get("Idempotency-Key")):
            stats.missing_idempotency_keys += 1
            return web.json_response(
                {"error": "this endpoint changes state: send an Idempotency-Key header"}, status=400)
        wait = risk_limit.take()
        if wait > 0:
            stats.throttled += 1
            return error_response(429, "rate limit exceeded", retry_after_header(wait, config.retry_after_format))
        return None

    async def token(request: web.Request) -> web.Response:
        response = await issuer.token_endpoint(request)
        stats.tokens_issued = issuer.issued
        return response

    async def get_customer(request: web.Request) -> web.Response:
        stats.customer_requests += 1
        if "traceparent" in request.headers:
            stats.traceparents.append(request.headers["traceparent"])
        if config.oauth_clients is not None and not issuer.valid(request.headers.get("Authorization")):
            return unauthorized()
        if config.oauth_clients is not None and not issuer.allows(request.headers.get("Authorization"),
                                                                  CUSTOMERS_SCOPE):
            return insufficient_scope(CUSTOMERS_SCOPE)
        customer = customer_for(request.match_info["customer_id"])
        if customer is None:
            return web.json_response({"error": "customer not found"}, status=404)
        return web.json_response(customer)

    def score_once(endpoint: str, key: str | None, item: Any) -> tuple[dict[str, Any] | None, str | None, bool]:
        """(answer, None, replayed) or (None, what is wrong, False): the score effect, once per key."""
        request_fingerprint = fingerprint(item)
        if key is not None:
            state, stored = risk_ledger.lookup(endpoint, key, request_fingerprint)
            if state == "replay" and stored is not None:
                stats.idempotent_replays += 1
                return stored, None, True
            if state == "conflict":
                stats.idempotency_conflicts += 1
        answer, problem = risk_score(item)
        if answer is None:
            return None, problem, False
        stats.risk_scored += 1
        stats.risk_effect_keys.append(key)
        if key is not None:
            risk_ledger.remember(endpoint, key, request_fingerprint, answer)
        return answer, None, False

    async def score_one(request: web.Request) -> web.Response:
        refused = risk_gate(request)
        if refused is not None:
            return refused
        answer, problem, replayed = score_once("risk", request.headers.get("Idempotency-Key") or None,
                                               await _json(request))
        if answer is None:
            return web.json_response({"error": problem}, status=422)
        return web.json_response(answer, headers={"Idempotent-Replayed": "true"} if replayed else None)

    async def score_batch(request: web.Request) -> web.Response:
        refused = risk_gate(request)
        if refused is not None:
            return refused
        body = await _json(request)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            return web.json_response({"error": "items must be a list"}, status=422)
        if len(items) > MAX_BATCH:
            return web.json_response({"error": f"at most {MAX_BATCH} items per batch"}, status=413)
        request_key = request.headers.get("Idempotency-Key") or None
        results: list[dict[str, Any]] = []
        replays = 0
        for position, item in enumerate(items):
            item_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(item, dict) and "idempotency_key" in item:
                key: str | None = item["idempotency_key"]
                problem = item_key_problem(key)
                if problem is not None:
                    results.append({"id": item_id, "error": {"status": 422, "message": problem}})
                    continue
            else:  # no key of its own: the request's, for this position (a retry of the same request)
                key = None if request_key is None else f"{request_key}#{position}"
            answer, problem, replayed = score_once("risk_batch", key, item)
            replays += replayed
            if answer is None:
                results.append({"id": item_id, "error": {"status": 422, "message": problem}})
            else:
                results.append({"id": item_id, **answer})
        replayed_all = {"Idempotent-Replayed": "true"} if items and replays == len(items) else None
        return web.json_response({"results": results}, headers=replayed_all)

    async def risk_health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def get_fx(request: web.Request) -> web.Response:
        rates = rates_for(request.match_info["base"])
        if rates is None:
            return web.json_response({"error": "unknown currency"}, status=404)
        return web.json_response(rates, headers={"Cache-Control": f"public, max-age={config.fx_max_age}"})

    async def list_products(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= config.catalog_max_page:
            return web.json_response({"error": f"limit must be 1..{config.catalog_max_page}"}, status=400)
        cursor = request.query.get("cursor")
        after = 0 if cursor is None else decode_cursor(cursor)
        if after is None:
            return web.json_response({"error": "bad cursor"}, status=400)
        items, next_after = catalog_page(config.catalog_size, after, limit)
        next_cursor = encode_cursor(next_after) if next_after is not None else None
        headers = {}
        if next_cursor is not None:
            next_url = request.url.with_query({"limit": str(limit), "cursor": next_cursor})
            headers["Link"] = f'<{next_url}>; rel="next"'
        return web.json_response({"items": items, "next_cursor": next_cursor}, headers=headers)

    async def get_account(request: web.Request) -> web.Response:
        account_id = request.match_info["account_id"]
        if not account_exists(account_id):
            return web.json_response({"error": "account not found"}, status=404)
        return web.json_response(account_for(account_id))

    async def get_geo(request: web.Request) -> web.Response:
        ip = request.match_info["ip"]
        if not valid_ip(ip):
            return web.json_response({"error": "not an IPv4 address"}, status=400)
        return web.json_response(geo_for(ip))

    def idempotent(endpoint: str, answer: Callable[[Any], web.Response]) -> Handler:
        """Answer the JSON body; a repeated ``Idempotency-Key`` with the same body gets the stored answer.

        Only 200 answers are stored. The same key with a different body is a 422 (IETF
        draft-ietf-httpapi-idempotency-key-header), and a key on one endpoint is not one on the other.
        """
        async def handler(request: web.Request) -> web.Response:
            body = await _json(request)
            key = request.headers.get("Idempotency-Key")
            fingerprint = json.dumps(body, sort_keys=True, separators=(",", ":"))
            if key is not None and (endpoint, key) in fraud_replays:
                stored_fingerprint, stored = fraud_replays[(endpoint, key)]
                if stored_fingerprint != fingerprint:
                    return web.json_response(
                        {"error": "Idempotency-Key was used with a different request body"}, status=422)
                stats.idempotent_replays += 1
                return web.json_response(stored, headers={"Idempotent-Replayed": "true"})
            response = answer(body)
            if key is not None and response.status == 200 and isinstance(response.body, bytes):
                fraud_replays[(endpoint, key)] = (fingerprint, json.loads(response.body))
                while len(fraud_replays) > 10_000:
                    fraud_replays.popitem(last=False)
            return response
        return handler

    def score_fraud(body: Any) -> web.Response:
        if not isinstance(body, dict):
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        problem = fraud_problem(body)
        if problem is not None:
            return web.json_response({"error": problem}, status=422)
        stats.fraud_scored += 1
        return web.json_response(fraud_score(body))

    def score_fraud_batch(body: Any) -> web.Response:
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            return web.json_response({"error": "the body must be a JSON object with an items list"}, status=400)
        if len(items) > MAX_FRAUD_BATCH:
            return web.json_response({"error": f"at most {MAX_FRAUD_BATCH} items per batch"}, status=413)
        results: list[dict[str, Any]] = []
        for item in items:
            item_id = item.get("id") if isinstance(item, dict) else None
            problem = fraud_problem(item)
            if problem is not None:
                results.append({"id": item_id, "error": {"status": 422, "message": problem}})
                continue
            stats.fraud_scored += 1
            scored = fraud_score(item)
            results.append({"id": item_id, "score": scored["score"], "decision": scored["decision"]})
        return web.json_response({"results": results})

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_post("/oauth/token", api("token", token))
    app.router.add_get("/v1/customers/{customer_id}", api("customers", get_customer))
    app.router.add_post("/v1/risk-scores", api("risk", score_one))
    app.router.add_get("/v1/risk-scores/health", api("risk", risk_health))
    app.router.add_post("/v1/risk-scores/batch", api("risk_batch", score_batch))
    app.router.add_get("/v1/fx-rates/{base}", api("fx", get_fx))
    app.router.add_get("/v1/products", api("products", list_products))
    app.router.add_get("/v1/accounts/{account_id}", api("accounts", get_account))
    app.router.add_get("/v1/geo/{ip}", api("geo", get_geo))
    app.router.add_post("/v1/fraud/score", api("fraud", idempotent("fraud", score_fraud)))
    app.router.add_post("/v1/fraud/score/batch", api("fraud_batch", idempotent("fraud_batch", score_fraud_batch)))
    app.router.add_get("/healthz", health)
    _add_admin_routes(app)
    return app


def _add_admin_routes(app: web.Application) -> None:
    async def get_faults(_: web.Request) -> web.Response:
        return web.json_response(app[FAULTS].describe())

    async def put_fault(request: web.Request) -> web.Response:
        endpoint = request.match_info["endpoint"]
        if endpoint not in ENDPOINTS:
            return web.json_response({"error": f"unknown endpoint; one of {list(ENDPOINTS)}"}, status=404)
        try:
            spec = FaultSpec.parse(await request.json())
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        app[FAULTS].set(endpoint, spec)
        return web.json_response({endpoint: spec.source})

    async def delete_fault(request: web.Request) -> web.Response:
        app[FAULTS].clear(request.match_info.get("endpoint"))
        return web.Response(status=204)

    async def get_stats(_: web.Request) -> web.Response:
        return web.json_response(app[STATS].as_json())

    async def revoke_tokens(_: web.Request) -> web.Response:
        app[ISSUER].revoke_all()
        return web.Response(status=204)

    app.router.add_get("/admin/faults", get_faults)
    app.router.add_put("/admin/faults/{endpoint}", put_fault)
    app.router.add_delete("/admin/faults/{endpoint}", delete_fault)
    app.router.add_delete("/admin/faults", delete_fault)
    app.router.add_get("/admin/stats", get_stats)
    app.router.add_post("/admin/tokens/revoke", revoke_tokens)


def _known(endpoint: str) -> str:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown fault endpoint {endpoint!r}; one of {list(ENDPOINTS)}")
    return endpoint


def _peer_port(request: web.Request) -> int | None:
    peer = request.transport.get_extra_info("peername") if request.transport is not None else None
    return int(peer[1]) if isinstance(peer, tuple) and len(peer) >= 2 else None


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, json.JSONDecodeError):
        return None


def mtls_context(cert_file: str, key_file: str, client_ca_file: str | None = None) -> ssl.SSLContext:
    """A server TLS context; with ``client_ca_file`` clients must present a certificate it signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file is not None:
        context.load_verify_locations(client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class SandboxServer:
    """Runs the sandbox on loopback; port 0 picks a free port. ``ssl_context`` serves HTTPS."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0.0,
        *,
        config: SandboxConfig | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.config = config or SandboxConfig()
        self.stats = SandboxStats()
        self._ssl = ssl_context
        self._app = build_app(self.stats, latency_ms, self.config)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://{self.host}:{self.port}"

    @property
    def faults(self) -> FaultInjector:
        """The live fault specs (tests may also use the admin endpoint)."""
        return self._app[FAULTS]

    @property
    def tokens(self) -> TokenIssuer:
        return self._app[ISSUER]

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SandboxServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
