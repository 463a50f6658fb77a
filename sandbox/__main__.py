"""``python -m sandbox --port 8080``: serve the sandbox API until interrupted."""

from __future__ import annotations

import argparse

from aiohttp import web

from sandbox.server import build_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every API response")
    args = parser.parse_args()
    web.run_app(build_app(latency_ms=args.latency_ms), host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()
