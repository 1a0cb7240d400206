"""Tests of the Python SDK (``hybrid.client``): pure units, and integration against a real gateway process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from tests.support.gateway_process import TIMEOUT_FACTOR

T = TypeVar("T")


def seconds(value: float) -> float:
    """A timeout scaled by WCFRELAY_TIMEOUT_FACTOR for slow machines."""
    return value * TIMEOUT_FACTOR


async def within(awaitable: Awaitable[T], timeout: float = 10.0) -> T:
    """Await with a (scaled) deadline, so a broken peer fails the test instead of hanging it."""
    return await asyncio.wait_for(awaitable, seconds(timeout))
