"""The one bridge from trio to the asyncio-only device libraries (pymodbus, aiomqtt).

p2pgrid runs on trio; pymodbus and aiomqtt speak asyncio. trio-asyncio runs an asyncio loop
inside trio: the node opens it once (``open_device_loop()``, i.e. ``trio_asyncio.open_loop()``)
around everything that talks to hardware, and adapters call asyncio code through
``call_aio``. An adapter used outside such a loop fails at once with a ``DeviceError`` saying
so, instead of a confusing asyncio error deep inside a library.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import trio_asyncio  # type: ignore[import-untyped]

from p2pgrid.errors import DeviceError

T = TypeVar("T")

open_device_loop = trio_asyncio.open_loop


class NoAsyncioBridge(DeviceError):
    """An asyncio-based adapter was used outside ``open_device_loop()``."""


def require_bridge() -> None:
    if trio_asyncio.current_loop.get() is None:
        raise NoAsyncioBridge(
            "device adapters need an asyncio bridge: run them inside "
            "`async with p2pgrid.devices.aio.open_device_loop():`")


async def call_aio(fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Await the asyncio coroutine function ``fn(*args, **kwargs)`` from trio."""
    require_bridge()
    return cast(T, await trio_asyncio.aio_as_trio(fn)(*args, **kwargs))
