"""``python -m sandbox --port 8080``: serve the sandbox API until interrupted.

Faults are set with ``--faults '{"fx": {"errors": {"503": 0.2}}}'`` (or ``--faults @file.json``)
and changed while running with ``PUT /admin/faults/{endpoint}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from sandbox.server import SandboxConfig, build_app, mtls_context


def _faults(value: str) -> dict[str, Any]:
    text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    data = json.loads(text)
    if not isinstance(data, dict):
        raise argparse.ArgumentTypeError("--faults is a JSON object: endpoint -> spec")
    return data


def _client(value: str) -> tuple[str, str]:
    client_id, sep, secret = value.partition(":")
    if not sep or not client_id or not secret:
        raise argparse.ArgumentTypeError("--oauth-client is CLIENT_ID:SECRET")
    return client_id, secret


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every API response")
    parser.add_argument("--faults", type=_faults, default={}, help="JSON object endpoint -> fault spec, or @file")
    parser.add_argument("--oauth-client", type=_client, action="append", default=[],
                        help="CLIENT_ID:SECRET allowed to get tokens; any of them puts customers behind OAuth2")
    parser.add_argument("--token-ttl", type=float, default=3600.0)
    parser.add_argument("--risk-api-key", default=None, help="require this X-API-Key on the risk endpoints")
    parser.add_argument("--risk-rate", type=float, default=200.0, help="risk API requests per second")
    parser.add_argument("--risk-burst", type=float, default=200.0)
    parser.add_argument("--retry-after-format", choices=("seconds", "date"), default="seconds")
    parser.add_argument("--fx-max-age", type=int, default=60)
    parser.add_argument("--catalog-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's key (PEM)")
    parser.add_argument("--tls-client-ca", help="require client certificates signed by this CA (mTLS)")
    args = parser.parse_args()
    config = SandboxConfig(
        oauth_clients=dict(args.oauth_client) or None,
        token_ttl=args.token_ttl,
        risk_api_key=args.risk_api_key,
        risk_rate=args.risk_rate,
        risk_burst=args.risk_burst,
        retry_after_format=args.retry_after_format,
        fx_max_age=args.fx_max_age,
        catalog_size=args.catalog_size,
        seed=args.seed,
        faults=args.faults,
    )
    ssl_context = mtls_context(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    web.run_app(build_app(latency_ms=args.latency_ms, config=config), host=args.host, port=args.port,
                ssl_context=ssl_context, access_log=None)


if __name__ == "__main__":
    main()
