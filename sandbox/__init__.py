"""The sandbox API server: the external APIs of the demo domain, on loopback."""

from sandbox.server import SandboxServer, build_app

__all__ = ["SandboxServer", "build_app"]
