"""Python pieces of the payments example's YAML pipeline (``pipeline.yaml``), named ``module:function``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any


def checked_at(event: Mapping[str, Any], results: Mapping[str, Any]) -> int:
    """When the payment was checked: now, in epoch milliseconds (the output's ``checked_at``)."""
    return int(time.time() * 1000)
