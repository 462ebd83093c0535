"""Graceful shutdown: on SIGTERM a worker drains before uvicorn's own shutdown.

uvicorn, told to stop, closes its listener at once and gives the requests it is serving
`timeout_graceful_shutdown` seconds before it cancels them (answering plain-text 500s).
A worker run by `serve` (`DrainingServer`) drains first, for at most SHUTDOWN_GRACE
seconds:

- `/health/ready` answers 503 `{"status": "draining"}`, so a load balancer stops sending;
- every other request that arrives is answered at once with a JSON 503
  `SERVICE_UNAVAILABLE`, `Retry-After` and `Connection: close` (the edge,
  `marketgraph.edge`, counts and refuses; `Draining` is the state it reads); health and
  metrics are still answered;
- the requests already running finish, and their answers close their connections;
- once none is running, or the grace has passed, uvicorn's shutdown follows: the listener
  closes, and the lifespan closes the pools and the key-value store. A request still
  running at the end of the grace that has not begun its answer is cancelled and answered
  a JSON 503 instead; one whose answer has begun has FINISH_SECONDS more to send it.

A second Ctrl-C ends the grace at once; a third is uvicorn's forced exit. One line is
logged when draining starts and one when it ends (finished, refused, cut).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from types import FrameType
from typing import Any

import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import ChangeReload, Multiprocess, multiprocess

log = structlog.get_logger(__name__)

# After the grace, how long answers already begun may take to be sent (uvicorn's
# timeout_graceful_shutdown); then uvicorn cancels them.
FINISH_SECONDS = 5


class Running:
    """One request the edge let in, while it runs."""

    __slots__ = ("cut", "started", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.started = False  # its answer has begun: it can no longer be answered 503
        self.cut = False  # cancelled at the end of the grace, to be answered 503

    def uncancel(self) -> None:
        """The cut's cancellation is answered: the task carries on to send the 503."""
        if self.task is not None:
            self.task.uncancel()


class Draining:
    """A worker's requests in flight, and whether it is draining (see the module's
    docstring). The edge enters and leaves each request that health and metrics do not
    exempt, and refuses new ones while `active`."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.active = False
        self.running: set[Running] = set()
        self.finished = 0  # requests that were running when draining began, and finished
        self.refused = 0  # requests that arrived while draining
        self.cut = 0  # requests cancelled at the end of the grace
        self._began = 0.0

    @property
    def in_flight(self) -> int:
        return len(self.running)

    def enter(self) -> Running:
        running = Running(asyncio.current_task())
        self.running.add(running)
        return running

    def leave(self, running: Running) -> None:
        self.running.discard(running)
        if self.active and not running.cut:
            self.finished += 1

    def begin(self) -> None:
        """Start draining (again: nothing)."""
        if self.active:
            return
        self.active = True
        self._began = time.monotonic()
        log.info("draining started", in_flight=self.in_flight, grace_seconds=self.grace)

    @property
    def over(self) -> bool:
        """Nothing left running, or the grace has passed."""
        return not self.running or time.monotonic() - self._began >= self.grace

    def end(self) -> None:
        """Cut the requests still running that have not begun their answer (each is then
        answered 503 by the edge), and say how the drain went."""
        for running in list(self.running):
            if not running.started and running.task is not None and not running.cut:
                running.cut = True
                running.task.cancel("the shutdown grace ended")
                self.cut += 1
        log.info(
            "draining ended",
            finished=self.finished,
            refused=self.refused,
            cut=self.cut,
            still_sending=self.in_flight - self.cut,
            seconds=round(time.monotonic() - self._began, 3),
        )


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, draining on SIGTERM (or a first SIGINT) before its own shutdown.

    The app's lifespan hands over its `Draining` in the lifespan state (as `draining`); an
    app without one, or a signal during start-up, gets uvicorn's own behaviour. The signal
    handler only notes the signal; the main loop's tick (every 0.1 s) does the rest.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._drain_signal: int | None = None
        self._grace_over = False

    @property
    def draining(self) -> Draining | None:
        lifespan = getattr(self, "lifespan", None)
        found = lifespan.state.get("draining") if lifespan is not None else None
        return found if isinstance(found, Draining) else None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_signal is None:
            if self.started and not self.should_exit and self.draining is not None:
                self._drain_signal = sig
                return
        elif not self.should_exit:
            if sig == signal.SIGINT:  # Ctrl-C again: no more waiting
                self._grace_over = True
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        draining = self.draining
        if self._drain_signal is not None and draining is not None and not self.should_exit:
            draining.begin()
            if self._grace_over or draining.over:
                draining.end()
                # uvicorn's shutdown, and the signal raised again after it, as without a drain.
                super().handle_exit(self._drain_signal, None)
        return await super().on_tick(counter)


class _DrainingWorker(multiprocess.Process):
    """A worker of uvicorn's supervisor whose server drains."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server


def run(config: uvicorn.Config) -> None:
    """`uvicorn.run` for `config`, its servers draining: one, or one reloading, or
    `config.workers` under uvicorn's supervisor."""
    server = DrainingServer(config)
    try:
        if config.should_reload:
            ChangeReload(config, target=server.run, sockets=[config.bind_socket()]).run()
        elif config.workers > 1:
            _run_workers(config)
        else:
            server.run()
    except KeyboardInterrupt:
        pass
    if not server.started and not config.should_reload and config.workers == 1:
        sys.exit(STARTUP_FAILURE)


def _run_workers(config: uvicorn.Config) -> None:
    sock = config.bind_socket()
    # uvicorn's supervisor builds each worker's Server in `multiprocess.Process.server`
    # (also when it replaces a worker that died), with no hook for another class: its
    # workers are ours while it runs. They are spawned, so they pickle the class by name.
    plain = multiprocess.Process
    multiprocess.Process = _DrainingWorker  # type: ignore[misc]
    try:
        Multiprocess(config, sockets=[sock]).run()
    finally:
        multiprocess.Process = plain  # type: ignore[misc]
