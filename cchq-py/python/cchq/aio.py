"""``async`` versions of the long operations of :class:`cchq.Environment`, for ``asyncio``.

Each runs the blocking operation in the event loop's default executor (a thread; the GIL is
released while hosts work) with a :class:`cchq.Cancel` token. When the awaiting task is cancelled
(``task.cancel()``, ``asyncio.wait_for`` timing out, ``asyncio.timeout``), the token fires and the
coroutine waits for the operation to stop before ``asyncio.CancelledError`` propagates: a deploy
stops at its next safe point, starts again the programs its restart had stopped and frees its
lock (resume it with ``deploy(resume=...)``); other operations stop their remote commands. So a
cancelled call never leaves work running behind it. Pass ``cancel=`` to share a token.

    >>> import asyncio, cchq, cchq.aio
    >>> env = cchq.Environment.load("staging")
    >>> results = await asyncio.wait_for(cchq.aio.deploy(env, "commcare"), timeout=3600)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cchq._cchq import Cancel, Environment
from cchq._types import (
    ConfigPlan,
    DeployResult,
    DowntimeStarted,
    HostResult,
    LockInfo,
    Ping,
    Preindex,
    RebootResult,
    Release,
    ServiceCheck,
    ServiceReport,
)

__all__ = [
    "after_reboot",
    "check_services",
    "deploy",
    "downtime_end",
    "downtime_start",
    "django_manage",
    "list_releases",
    "lock_wait",
    "ping",
    "preindex_views",
    "rollback",
    "run",
    "service",
    "update_config",
]

T = TypeVar("T")


async def _call(fn: Callable[..., T], args: Sequence[Any], kwargs: dict[str, Any]) -> T:
    token = kwargs.get("cancel")
    if token is None:
        token = kwargs["cancel"] = Cancel()
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        token.cancel("cancelled by asyncio")
        # Wait for the operation to stop (its cleanup runs in it), however often we are
        # cancelled meanwhile; then let the cancellation through.
        while not fut.done():
            try:
                await asyncio.wait({fut})
            except asyncio.CancelledError:
                continue
        if not fut.cancelled():
            fut.exception()  # retrieved: it is the cancellation's consequence, not news
        raise


async def deploy(env: Environment, *args: Any, **kwargs: Any) -> list[DeployResult]:
    """`env.deploy(*args, **kwargs)`, cancellable by asyncio."""
    return await _call(env.deploy, args, kwargs)


async def rollback(env: Environment, *args: Any, **kwargs: Any) -> DeployResult:
    """`env.rollback(*args, **kwargs)`, cancellable by asyncio."""
    return await _call(env.rollback, args, kwargs)


async def run(env: Environment, *args: Any, **kwargs: Any) -> list[HostResult]:
    """`env.run(*args, **kwargs)`, cancellable by asyncio (the commands are stopped)."""
    return await _call(env.run, args, kwargs)


async def service(env: Environment, *args: Any, **kwargs: Any) -> ServiceReport:
    """`env.service(*args, **kwargs)`, cancellable by asyncio."""
    return await _call(env.service, args, kwargs)


async def update_config(env: Environment, *args: Any, **kwargs: Any) -> ConfigPlan:
    """`env.update_config(*args, **kwargs)`, cancellable by asyncio."""
    return await _call(env.update_config, args, kwargs)


async def django_manage(env: Environment, *args: Any, **kwargs: Any) -> HostResult:
    """`env.django_manage(*args, **kwargs)`, cancellable by asyncio."""
    return await _call(env.django_manage, args, kwargs)


async def list_releases(env: Environment, *args: Any, **kwargs: Any) -> list[Release]:
    """`env.list_releases(*args, **kwargs)`, cancellable by asyncio."""
    return await _call(env.list_releases, args, kwargs)


async def check_services(env: Environment, *args: Any, **kwargs: Any) -> list[ServiceCheck]:
    """`env.check_services(*args, **kwargs)`, cancellable by asyncio."""
    return await _call(env.check_services, args, kwargs)


async def after_reboot(env: Environment, *args: Any, **kwargs: Any) -> list[RebootResult]:
    """`env.after_reboot(*args, **kwargs)`, cancellable by asyncio."""
    return await _call(env.after_reboot, args, kwargs)


async def downtime_start(env: Environment, *args: Any, **kwargs: Any) -> DowntimeStarted:
    """`env.downtime_start(*args, **kwargs)`, cancellable by asyncio."""
    return await _call(env.downtime_start, args, kwargs)


async def downtime_end(env: Environment, *args: Any, **kwargs: Any) -> ServiceReport:
    """`env.downtime_end(*args, **kwargs)`, cancellable by asyncio."""
    return await _call(env.downtime_end, args, kwargs)


async def preindex_views(env: Environment, *args: Any, **kwargs: Any) -> Preindex:
    """`env.preindex_views(*args, **kwargs)`, cancellable by asyncio."""
    return await _call(env.preindex_views, args, kwargs)


async def lock_wait(env: Environment, *args: Any, **kwargs: Any) -> LockInfo | None:
    """`env.lock_wait(*args, **kwargs)`, cancellable by asyncio."""
    return await _call(env.lock_wait, args, kwargs)


async def ping(env: Environment, *args: Any, **kwargs: Any) -> list[Ping]:
    """`env.ping(*args, **kwargs)`, cancellable by asyncio."""
    return await _call(env.ping, args, kwargs)
