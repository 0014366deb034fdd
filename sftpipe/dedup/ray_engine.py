"""dedup on Ray (``dedup.engine: ray``). The Ray session every ``engine: ray`` stage shares, its one-line
errors and the test hook live in :mod:`sftpipe.ray_session` (imported back here under the same names).

:class:`RayEngine` runs the heavy steps of :func:`sftpipe.dedup.clusters.find_duplicates` (the in-memory
path) and of :func:`sftpipe.dedup.stream.dedup_jsonl` (the stage, streamed) as Ray tasks and leaves the
rest (reading, union-find, the survivor policy, the ledger) to the same driver code as the local engine:

* signatures: one task per chunk, the chunks :func:`~sftpipe.dedup.clusters.sketch_chunks` cuts for
  the local engine, each running the local chunk function; results are joined in chunk order by the
  local ``_assemble``;
* candidate pairs: LSH bands in groups, two tasks per worker, each running
  :func:`sftpipe.dedup.lsh.candidate_pairs` on its bands of the signature (put once in the object
  store); the driver takes the sorted union of the pair codes, which is exactly what
  ``candidate_pairs`` returns for all bands at once, whatever the grouping; the streamed path's bands
  (read from its spill files one at a time) go one task per band (:meth:`RayEngine.band_candidates`);
* pair checks (exact Jaccard, edit similarity, slot check): the candidate pairs cut into consecutive
  blocks, one task each running :func:`sftpipe.dedup.clusters.check_pairs` on its block, the data the
  check reads (shingle sets or normalized texts) put once in the object store; the answers are joined
  in block order. A pair's answer depends on its two rows only, so it is the local one.

So the outputs are the local engine's, byte for byte, whatever the number of workers or the order in
which tasks finish. ``dedup.ray.workers`` caps the tasks in flight (None: as many as Ray schedules).

Failures: a task whose worker process dies is rerun by Ray up to ``ray.max_retries`` times; past
that, or when the cluster cannot be reached, the stage fails with one line (:class:`UserError`)
before writing anything (outputs are written after the compute, atomically). A Python error inside
a task is raised again on the driver as itself.

Test hook: ``SFTPIPE_RAY_FAULT`` (:mod:`sftpipe.ray_session`), steps ``sketch``, ``bands`` and ``pairs`` here.
"""

from __future__ import annotations

import numpy as np

from ..config import DedupParams, DedupRayParams, RayParams
from ..ray_session import (CONNECT_TIMEOUT_S, FAULT_ENV, _check_reachable, die_if_asked, fault_for, in_order, ray,
                           ray_errors, ray_session)
from .clusters import _assemble, _sketch_chunk, check_pairs, sketch_chunks
from .lsh import candidate_pairs, pairs_of_codes
from .sketch import Sketches

# the session helpers moved to sftpipe.ray_session; imported back under their old names
__all__ = ["RayEngine", "CONNECT_TIMEOUT_S", "FAULT_ENV", "_check_reachable", "die_if_asked", "fault_for", "in_order",
           "ray_errors", "ray_session"]

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


def _band_search_task(rows: int, valid: np.ndarray, bucketing: dict, fault: str | None, *band: np.ndarray) -> np.ndarray:
    """Pair codes of the first of ``band`` (band k; with a capped bucket also bands k+1 and k+2, which order
    it), as :func:`candidate_pairs` finds them for band k of the whole signature."""
    die_if_asked(fault)
    sig = band[0] if len(band) == 1 else np.concatenate(band)
    pairs = candidate_pairs(sig, len(band), rows, valid, band_range=(0, 1), **bucketing)
    return pairs[:, 0] * sig.shape[1] + pairs[:, 1]


def _pairs_task(kind: str, data, pairs: np.ndarray, fault: str | None):
    die_if_asked(fault)
    return check_pairs(kind, data, pairs)


PAIRS_PER_TASK = (4096, 262144)     # a pair-check task's block: at least (task overhead), at most (its memory)


def pair_blocks(m: int, slots: int) -> list[tuple[int, int]]:
    """``m`` pairs cut into consecutive blocks [start, stop): two per worker slot, each within
    :data:`PAIRS_PER_TASK` (fewer, larger ones below its minimum; more past its maximum)."""
    low, high = PAIRS_PER_TASK
    k = min(max(2 * slots, -(-m // high)), max(1, m // low))
    edges = np.linspace(0, m, k + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


class RayEngine:
    """:class:`sftpipe.dedup.clusters.LocalEngine`'s steps as Ray tasks; the same results.

    Needs a Ray connection (:func:`ray_session`) while :func:`find_duplicates` runs."""

    kind = "ray"     # what :func:`sftpipe.dedup.clusters.semantic_engine` asks

    def __init__(self, ray_dedup: DedupRayParams = DedupRayParams(), ray_params: RayParams = RayParams()):
        self.workers = ray_dedup.workers
        self.max_retries = ray_params.max_retries
        self._sketch = ray.remote(num_cpus=1)(_sketch_task).options(max_retries=self.max_retries)
        self._band = ray.remote(num_cpus=1)(_band_task).options(max_retries=self.max_retries)
        self._pairs = ray.remote(num_cpus=1)(_pairs_task).options(max_retries=self.max_retries)
        self._band_search = ray.remote(num_cpus=1)(_band_search_task).options(max_retries=self.max_retries)

    def _slots(self) -> int:
        return self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))

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
        groups = [g for g in np.array_split(np.arange(bands), min(bands, 2 * self._slots())) if len(g)]

        def submit(k: int):
            g = groups[k]
            return self._band.remote(sig_ref, valid_ref, bands, int(g[0]), int(g[-1]) + 1, rows, bucketing_ref,
                                     fault if k == 0 else None)

        with ray_errors("dedup", "finding candidate pairs", self.max_retries):
            return pairs_of_codes(list(in_order(submit, range(len(groups)), self.workers)), n)

    def check_pairs(self, kind: str, data, pairs: np.ndarray):
        """:func:`sftpipe.dedup.clusters.check_pairs` over blocks of ``pairs`` (:func:`pair_blocks`), one
        task each; the answers in pair order (an array, or a list for ``"slots"``)."""
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if not len(pairs):
            return check_pairs(kind, data, pairs)
        data_ref = ray.put(data)
        blocks = pair_blocks(len(pairs), self._slots())
        fault = fault_for("pairs")

        def submit(k: int):
            a, b = blocks[k]
            return self._pairs.remote(kind, data_ref, pairs[a:b], fault if k == 0 else None)

        with ray_errors("dedup", f"checking candidate pairs ({kind})", self.max_retries):
            parts = list(in_order(submit, range(len(blocks)), self.workers))
        if kind == "slots":
            return [r for part in parts for r in part]
        return np.concatenate(parts)

    def band_candidates(self, band_of, bands: int, rows: int, n: int, valid, **bucketing) -> np.ndarray:
        """:meth:`sftpipe.dedup.clusters.LocalEngine.band_candidates` with one task per band: band k read here
        (``band_of(k)``) and put in the object store once, shipped to its task (and, when a bucket is over
        ``cap``, to the tasks of bands k-1 and k-2, which order their capped buckets by it); the sorted union of
        the tasks' pairs, what one search over all bands returns."""
        valid = np.asarray(valid, dtype=np.int64)
        if len(valid) < 2:
            return np.zeros((0, 2), dtype=np.int64)
        capped = bucketing.get("cap") is not None and len(valid) > bucketing["cap"]
        refs: dict = {}
        valid_ref, bucketing_ref = ray.put(valid), ray.put(bucketing)
        fault = fault_for("bands")

        def submit(k: int):
            need = [k, (k + 1) % bands, (k + 2) % bands] if capped else [k]
            for j in need:
                if j not in refs:
                    refs[j] = ray.put(np.ascontiguousarray(band_of(j)))
            task = self._band_search.remote(rows, valid_ref, bucketing_ref, fault if k == 0 else None,
                                            *(refs[j] for j in need))
            if k >= 2:
                refs.pop(k, None)       # no later task needs band k (bands 0 and 1 go to the last two)
            return task

        with ray_errors("dedup", "finding candidate pairs", self.max_retries):
            # a few bands in flight: each is a copy of n keys in the object store
            return pairs_of_codes(list(in_order(submit, range(bands), self.workers or 2 * self._slots())), n)
