"""dedup on Ray (``dedup.engine: ray``), and the Ray session every ``engine: ray`` stage shares.

:class:`RayEngine` runs the two heavy steps of :func:`sftpipe.dedup.clusters.find_duplicates` as Ray
tasks and leaves the rest (exact-Jaccard and edit checks, the slot check, union-find, the survivor
policy, the ledger) to the same driver code as the local engine:

* signatures: one task per chunk, the chunks :func:`~sftpipe.dedup.clusters.sketch_chunks` cuts for
  the local engine, each running the local chunk function; results are joined in chunk order by the
  local ``_assemble``;
* candidate pairs: LSH bands in groups, two tasks per worker, each running
  :func:`sftpipe.dedup.lsh.candidate_pairs` on its bands of the signature (put once in the object
  store); the driver takes the sorted union of the pair codes, which is exactly what
  ``candidate_pairs`` returns for all bands at once, whatever the grouping.

So the outputs are the local engine's, byte for byte, whatever the number of workers or the order in
which tasks finish. ``dedup.ray.workers`` caps the tasks in flight (None: as many as Ray schedules).

Failures: a task whose worker process dies is rerun by Ray up to ``ray.max_retries`` times; past
that, or when the cluster cannot be reached, the stage fails with one line (:class:`UserError`)
before writing anything (outputs are written after the compute, atomically). A Python error inside
a task is raised again on the driver as itself.

Test hook: ``SFTPIPE_RAY_FAULT=<step>:<marker file>`` (read on the driver, handed to the workers)
makes the first attempt of one ``step`` task (``sketch``: the first chunk's; ``bands``: the first
band group's; ``score``: the first batch an actor of :class:`sftpipe.perplexity.RayModelPool` gets) kill its
worker process with ``os._exit(1)``, after creating the marker so that the retry succeeds;
``<step>:always`` kills every attempt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from ..config import DedupParams, DedupRayParams, RayParams
from ..errors import UserError
from .clusters import _assemble, _sketch_chunk, sketch_chunks
from .lsh import candidate_pairs
from .sketch import Sketches, sorted_unique

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


# --------------------------------------------------------------------------- dedup tasks


def _sketch_task(texts: list[str], dedup_params: DedupParams, fault: str | None) -> Sketches:
    die_if_asked(fault)
    return _sketch_chunk((texts, dedup_params))


def _band_task(sig: np.ndarray, valid: np.ndarray, bands: int, first: int, stop: int, rows: int, bucketing: dict,
               fault: str | None) -> np.ndarray:
    """Pair codes (i * n + j, sorted, distinct) of the columns sharing one of bands ``first..stop-1`` of ``sig``
    (``bucketing``: candidate_pairs' cap, window and extra key, which read all ``bands``)."""
    die_if_asked(fault)
    pairs = candidate_pairs(sig, bands, rows, valid, band_range=(first, stop), **bucketing)
    return pairs[:, 0] * sig.shape[1] + pairs[:, 1]


class RayEngine:
    """:class:`sftpipe.dedup.clusters.LocalEngine`'s two steps as Ray tasks; the same results.

    Needs a Ray connection (:func:`ray_session`) while :func:`find_duplicates` runs."""

    def __init__(self, ray_dedup: DedupRayParams = DedupRayParams(), ray_params: RayParams = RayParams()):
        self.workers = ray_dedup.workers
        self.max_retries = ray_params.max_retries
        self._sketch = ray.remote(num_cpus=1)(_sketch_task).options(max_retries=self.max_retries)
        self._band = ray.remote(num_cpus=1)(_band_task).options(max_retries=self.max_retries)

    def sketch(self, texts: list[str], dedup_params: DedupParams) -> Sketches:
        chunks = sketch_chunks(texts)
        params_ref = ray.put(dedup_params)
        fault = fault_for("sketch")

        def submit(k: int):
            return self._sketch.remote(chunks[k], params_ref, fault if k == 0 else None)

        with ray_errors("dedup", "computing signatures", self.max_retries):
            return _assemble(in_order(submit, range(len(chunks)), self.workers), len(texts), dedup_params.num_perm)

    def candidate_pairs(self, sig: np.ndarray, bands: int, rows: int, valid=None, **bucketing) -> np.ndarray:
        n = sig.shape[1]
        valid = np.arange(n) if valid is None else np.asarray(valid, dtype=np.int64)
        if len(valid) < 2:
            return np.zeros((0, 2), dtype=np.int64)
        sig_ref, valid_ref = ray.put(np.ascontiguousarray(sig[:bands * rows])), ray.put(valid)
        bucketing_ref = ray.put(bucketing)
        fault = fault_for("bands")
        # two tasks per worker (a task costs a few ms of overhead; bands cost about the same each)
        slots = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        groups = [g for g in np.array_split(np.arange(bands), min(bands, 2 * slots)) if len(g)]

        def submit(k: int):
            g = groups[k]
            return self._band.remote(sig_ref, valid_ref, bands, int(g[0]), int(g[-1]) + 1, rows, bucketing_ref,
                                     fault if k == 0 else None)

        with ray_errors("dedup", "finding candidate pairs", self.max_retries):
            codes = [c for c in in_order(submit, range(len(groups)), self.workers) if len(c)]
        if not codes:
            return np.zeros((0, 2), dtype=np.int64)
        u = sorted_unique(np.concatenate(codes))
        return np.stack([u // n, u % n], axis=1)
