"""The Ray session every ``engine: ray`` stage shares (dedup, perplexity, select, dedup's paraphrase pass),
its failure handling, and the test hook that kills workers.

* :func:`ray_session`: connected to Ray for a ``with`` block (a local Ray, or the cluster at ``ray.address``);
* :func:`ray_errors`: Ray's failures as one line (:class:`UserError`);
* :func:`in_order`: task results in submission order, with a cap on the tasks in flight;
* :func:`fault_for` / :func:`die_if_asked`: the test hook.

Test hook: ``SFTPIPE_RAY_FAULT=<step>:<marker file>`` (read on the driver, handed to the workers)
makes the first attempt of one ``step`` task kill its worker process with ``os._exit(1)``, after
creating the marker so that the retry succeeds; ``<step>:always`` kills every attempt. Steps:
``sketch`` (dedup: the first chunk's task), ``bands`` (dedup: the first band group's task), ``pairs``
(dedup: the first block's task of each pair check),
``score`` (perplexity: the first batch an actor of :class:`sftpipe.perplexity.RayModelPool` gets),
``embed`` (the first batch an embedding actor of :mod:`sftpipe.dedup.semantic` gets), ``groups`` (the first
task of the paraphrase pass's group checks, :mod:`sftpipe.dedup.semantic`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from .config import RayParams
from .errors import UserError

try:
    import ray
except ImportError:     # engine: ray without the package: ray_session says how to install it
    ray = None

FAULT_ENV = "SFTPIPE_RAY_FAULT"
CONNECT_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------- session


def _check_reachable(address: str) -> None:
    """A TCP connection to ``host:port`` (a GCS or a Ray Client server) before ``ray.init``, which
    otherwise retries an unreachable GCS for minutes and exits the process."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise UserError(f"ray.address {address}: cannot connect ({e.strerror or type(e).__name__}); "
                        f"is the Ray cluster up? (ray.address: null starts a local one)") from None


@contextlib.contextmanager
def ray_session(ray_params: RayParams, stage: str, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Connected to Ray for the ``with`` block: an existing connection of this process is used as it
    is (and left open); else a local Ray is started (``ray.address`` null, ``ray.num_cpus``) or the
    cluster at ``ray.address`` joined, quietly, and shut down at the end."""
    if ray is None:
        raise UserError(f"{stage}: engine: ray needs the ray package (pip install -c constraints.txt ray)")
    if ray.is_initialized():
        yield
        return
    address = ray_params.address
    if address is not None and address.startswith("ray://"):
        import importlib.util

        if importlib.util.find_spec("grpc") is None:
            raise UserError(f"ray.address {address}: the Ray Client needs ray[client] "
                            f"(pip install -c constraints.txt 'ray[client]')")
    if address not in (None, "auto"):
        _check_reachable(address)
    try:
        ray.init(address="local" if address is None else address, num_cpus=ray_params.num_cpus,
                 include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError, SystemExit) as e:
        # SystemExit: ray.init exits the process when a GCS it reached never answers
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"ray.address {address}: cannot start or join Ray ({first})") from None
    if log is not None:
        res = ray.cluster_resources()
        log(f"Ray {'started locally' if address is None else 'at ' + address}: {res.get('CPU', 0):g} CPUs, "
            f"{res.get('GPU', 0):g} GPUs")
    try:
        yield
    finally:
        ray.shutdown()


# --------------------------------------------------------------------------- failures


def fault_for(step: str) -> str | None:
    """The test hook's marker for ``step`` (``SFTPIPE_RAY_FAULT=step:marker``), or None."""
    spec = os.environ.get(FAULT_ENV, "")
    where, _, marker = spec.partition(":")
    return marker if where == step and marker else None


def die_if_asked(fault: str | None) -> None:
    """In a Ray worker: kill this process if the test hook asks (first attempt only, unless 'always')."""
    if fault is None:
        return
    if fault != "always":
        try:
            os.close(os.open(fault, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os._exit(1)


@contextlib.contextmanager
def ray_errors(stage: str, what: str, max_retries: int) -> Iterator[None]:
    """Ray's failures as one line: a worker (or actor) that died more often than ``max_retries``
    allowed, a lost object, or a UserError raised inside a task; a Python error in a task is raised
    again as itself (the stage reports it as an internal error, one line)."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        if ray is None or not isinstance(e, ray.exceptions.RayError):
            raise
        if isinstance(e, ray.exceptions.RayTaskError):
            cause = getattr(e, "cause", None)
            if isinstance(cause, UserError):
                raise UserError(str(cause)) from None
            if isinstance(cause, Exception):
                raise cause from None
        if getattr(e, "actor_init_failed", False):     # the actor's __init__ raised: its last line says what
            last = [x for x in str(e).splitlines() if x.strip()][-1].strip()
            mine = re.match(r"sftpipe\.errors\.\w+: (.*)", last)
            raise UserError(mine.group(1) if mine else f"{stage}: a Ray actor failed to start: {last}") from None
        if isinstance(e, (ray.exceptions.WorkerCrashedError, ray.exceptions.RayActorError)):
            who = "an actor" if isinstance(e, ray.exceptions.RayActorError) else "a worker"
            raise UserError(f"{stage}: {who} died {what}, and again on each of its {max_retries} retries "
                            f"(ray.max_retries); the stage's outputs were not written. Ray's logs: "
                            f"<Ray's temp dir>/session_latest/logs") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"{stage}: Ray failed {what}: {type(e).__name__}: {first}") from None


def in_order(submit: Callable, items: Iterable, limit: int | None) -> Iterator:
    """``ray.get(submit(item))`` for each item, in item order, with at most ``limit`` tasks in flight
    (None: all submitted at once). Tasks still pending when the consumer stops are cancelled."""
    pending: deque = deque()
    try:
        for item in items:
            pending.append(submit(item))
            if limit is not None and len(pending) >= limit:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())
    finally:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref)


def check_pool_fits(section: str, pool) -> None:
    """One line (:class:`UserError`) when ``pool.actors`` actors of ``pool.num_cpus_per_actor`` CPUs and
    ``pool.num_gpus_per_actor`` GPUs ask more than the connected cluster has (``section``: the params
    section of ``pool``, e.g. ``perplexity.ray``); Ray would otherwise wait for them forever."""
    have = ray.cluster_resources()
    for name, each in (("CPU", pool.num_cpus_per_actor), ("GPU", pool.num_gpus_per_actor)):
        if each * pool.actors > have.get(name, 0) + 1e-9:
            raise UserError(f"{section}: {pool.actors} actors x {each:g} {name}s need {each * pool.actors:g}, "
                            f"the Ray cluster has {have.get(name, 0):g} (lower {section}.actors or the "
                            f"per-actor {name}s)")
