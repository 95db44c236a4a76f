"""Failures inside py-libp2p's own tasks stay with the task that failed (py-libp2p 0.8.1).

py-libp2p runs pubsub and gossipsub as "services": every per-peer and per-message task (sending
to one peer, validating one message, replaying the cache to a new peer) is a child of the
service, and when any child raises, the service manager cancels the whole service and re-raises
into the host — one broken yamux stream to one peer ends the node. Worse, while a service is
being torn down, pubsub's stream readers (run by the swarm, not by the service) still schedule
tasks into its closed nursery and raise ``RuntimeError: Nursery is closed to new arrivals``
into the swarm, which then stops too (seen in a 31-node demo: one household exited with code 1).

Here, so that the node's ledger, devices and RPC keep running:

* ``ContainingTrioManager`` runs a service like py-libp2p's ``TrioManager`` but a failing
  **non-daemon** task (one peer, one message) is logged — once per service and kind of error,
  with its cause; repeats go to DEBUG and are counted — and the service goes on. A failing
  *daemon* task (the service's own loops: pubsub's peer queues, the gossipsub heartbeat) leaves
  nothing sensible to go on with: given ``on_daemon_failure``, the manager hands it the failure
  and stops the service quietly (``libp2p_host`` then restarts the whole host); without it, the
  failure stops the service and is raised, as in py-libp2p.
  A task scheduled while the service stops is dropped, not raised into the caller.
* ``ContainedPubsub`` reads each peer's pubsub stream like ``Pubsub`` but an unexpected error in
  that loop resets that one stream (the peer's pubsub re-opens it) instead of reaching the swarm.

``contained_service(service)`` is ``background_trio_service`` with the containing manager.
``FailureLog.counts`` says what was contained (tests, status).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.exceptions import BaseLibp2pError
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service.api import ServiceAPI
from libp2p.tools.anyio_service.trio_manager import TrioManager
from libp2p.utils.connection_shutdown import is_expected_connection_shutdown

logger = logging.getLogger(__name__)


class FailureLog:
    """Contained failures, by (where, error type): the first of each said at WARNING."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def contained(self, where: str, exc: BaseException) -> None:
        key = (where, type(exc).__name__)
        self.counts[key] += 1
        if self.counts[key] == 1:
            logger.warning("libp2p %s: contained %s; the node goes on (repeats are logged at DEBUG)",
                           where, describe_failure(exc))
        else:
            logger.debug("libp2p %s: contained %s again (%d times): %s", where, type(exc).__name__,
                         self.counts[key], exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def describe_failure(exc: BaseException) -> str:
    """``Type: message (caused by Type: message)``, for one log line. An exception group (trio
    nurseries wrap what escapes them) is described by its first leaf."""
    more = ""
    if isinstance(exc, BaseExceptionGroup):
        leaves = _leaves(exc)
        exc, more = leaves[0], f" (and {len(leaves) - 1} more)" if len(leaves) > 1 else ""
    cause = exc.__cause__ or exc.__context__
    because = f" (caused by {type(cause).__name__}: {cause})" if cause is not None else ""
    return f"{type(exc).__name__}: {exc}{because}{more}"


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:  # type: ignore[type-arg]
    return [leaf for exc in group.exceptions
            for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])]


FAILURES = FailureLog()      # one per process: what the node's libp2p tasks had to contain


DaemonFailureHandler = Callable[[str, BaseException], None]
"""``on_daemon_failure(where, exc)``: one of a service's own loops failed (synchronous)."""


class ContainingTrioManager(TrioManager):
    """``TrioManager`` whose non-daemon task failures end only that task, and whose daemon task
    failures go to ``on_daemon_failure`` when one is given (module docstring)."""

    def __init__(self, service: ServiceAPI, failures: FailureLog = FAILURES,
                 on_daemon_failure: DaemonFailureHandler | None = None) -> None:
        super().__init__(service)
        self._failures = failures
        self._on_daemon_failure = on_daemon_failure

    def _schedule_task(self, task: Any) -> None:
        nursery = self._task_nursery
        if not self.is_running or nursery is None or nursery.cancel_scope.cancel_called:
            logger.debug("%s: stopping, task %s dropped", self._service, task)
            return
        if not task.daemon:
            task.run = self._contained(task, task.run)
        elif self._on_daemon_failure is not None:
            task.run = self._reported(task, task.run, self._on_daemon_failure)
        try:
            super()._schedule_task(task)
        except RuntimeError as exc:        # the nursery closed between the check and the spawn
            logger.debug("%s: stopping, task %s dropped (%s)", self._service, task, exc)

    def _contained(self, task: Any, run: Any) -> Any:
        where = f"{type(self._service).__name__} task {_short(task)}"

        async def run_contained() -> None:
            try:
                await run()
            except Exception as exc:       # noqa: BLE001 — the boundary between one peer's task and the node
                if is_expected_connection_shutdown(exc):
                    return                 # a peer hanging up: py-libp2p's normal, nothing to say
                self._failures.contained(where, exc)

        return run_contained

    def _reported(self, task: Any, run: Any, on_failure: DaemonFailureHandler) -> Any:
        where = f"{type(self._service).__name__} loop {_short(task)}"

        async def run_reported() -> None:
            try:
                await run()
            except Exception as exc:       # noqa: BLE001 — DaemonTaskExit too: a loop that ended
                if self.is_cancelled:
                    logger.debug("%s ended while %s stops: %r", where, self._service, exc)
                    return
                on_failure(where, exc)
                self.cancel()              # the service stops without raising: the handler decides

        return run_reported


def _short(task: Any) -> str:
    """The task's function name without py-libp2p's addresses, so repeats group together."""
    return str(getattr(task, "name", task)).split("[")[0].split(" ")[0]


@asynccontextmanager
async def contained_service(service: ServiceAPI, failures: FailureLog = FAILURES,
                            on_daemon_failure: DaemonFailureHandler | None = None) -> AsyncIterator[TrioManager]:
    """``libp2p.tools.anyio_service.background_trio_service`` with a ``ContainingTrioManager``."""
    async with trio.open_nursery() as nursery:
        manager = ContainingTrioManager(service, failures, on_daemon_failure)
        service._manager = manager          # as background_trio_service does
        nursery.start_soon(manager.run)
        await manager.wait_started()
        try:
            yield manager
        finally:
            await manager.stop()


class ContainedPubsub(Pubsub):
    """``Pubsub`` whose per-peer stream reader contains its own failures (module docstring)."""

    failures: FailureLog = FAILURES

    async def continuously_read_stream(self, stream: INetStream) -> None:
        try:
            await super().continuously_read_stream(stream)
        except Exception as exc:           # noqa: BLE001 — else it stops the swarm, and the node
            if is_expected_connection_shutdown(exc):
                raise
            self.failures.contained("pubsub stream reader", exc)
            with trio.move_on_after(1, shield=True):
                try:
                    await stream.reset()
                except (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as gone:
                    logger.debug("reset of a failed pubsub stream: %s", gone)   # already broken


__all__ = ["ContainedPubsub", "ContainingTrioManager", "DaemonFailureHandler", "FAILURES", "FailureLog",
           "InjectedFailure", "contained_service", "describe_failure", "inject_heartbeat_failure",
           "inject_reader_failure", "inject_swarm_failure", "inject_task_failures"]


# --- test tools: failures injected where py-libp2p's own would arise --------------------------------

class InjectedFailure(RuntimeError):
    """Stands for an error raised inside py-libp2p (tests only)."""


async def _fail_inside_libp2p() -> None:
    # The cause is not a connection shutdown: those py-libp2p handles itself, quietly.
    raise InjectedFailure("Nursery is closed to new arrivals") from LookupError("peer state gone")


def inject_task_failures(pubsub: Pubsub, router: ServiceAPI) -> None:
    """Start one failing task in each of a host's pubsub and gossipsub services."""
    pubsub.manager.run_task(_fail_inside_libp2p)
    router.manager.run_task(_fail_inside_libp2p)


def inject_reader_failure(pubsub: Pubsub) -> None:
    """Make the next subscription announcement a peer sends fail inside the pubsub stream reader
    (the 31-node demo's failure, in ``handle_subscription``)."""
    original = pubsub.handle_subscription

    def failing_once(peer_id: Any, message: Any) -> None:
        pubsub.handle_subscription = original      # type: ignore[method-assign]
        raise InjectedFailure("Nursery is closed to new arrivals")

    pubsub.handle_subscription = failing_once      # type: ignore[method-assign]


def inject_heartbeat_failure(router: Any) -> None:
    """Make the next round of gossipsub's heartbeat (a daemon loop of the router) fail once."""
    original = router.mesh_heartbeat

    def failing_once() -> Any:
        router.mesh_heartbeat = original
        raise InjectedFailure("Nursery is closed to new arrivals") from LookupError("mesh state gone")

    router.mesh_heartbeat = failing_once


def inject_swarm_failure(host: Any) -> None:
    """Start a failing daemon task in a host's swarm (run by py-libp2p's own manager, not ours):
    the error escapes the host, as one of the swarm's loops failing would."""
    host.get_network().manager.run_daemon_task(_fail_inside_libp2p)
