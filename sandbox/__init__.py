"""The sandbox API server: the external APIs of the demo domain, on loopback, with fault injection."""

from sandbox.server import SandboxConfig, SandboxServer, SandboxStats, build_app

__all__ = ["SandboxConfig", "SandboxServer", "SandboxStats", "build_app"]
