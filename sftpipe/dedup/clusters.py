"""Exact and near-duplicate removal: MinHash LSH with an exact-Jaccard check.

Pipeline for a list of texts (:func:`find_duplicates`):

1. exact duplicates: byte-identical texts are grouped first, by a hash table of
   the text; only the first copy of each goes on;
2. sketches: each distinct text is normalized (:func:`normalize`), cut into word
   5-grams, or character 5-grams when CJK makes up >= 30% of its letters, and
   MinHashed, in numpy, a batch at a time, over ``num_proc`` processes
   (:mod:`sftpipe.dedup.sketch`; bit-identical to datasketch's ``MinHash``);
3. candidates: pairs sharing an identical band of the signature, the pairs
   datasketch's ``MinHashLSH`` buckets would give, found by sorting;
4. check: with ``verify`` a candidate is kept only if the EXACT Jaccard of its
   shingle sets reaches the threshold (without it, the MinHash estimate must);
   the per-pair checks (exact Jaccard, edit similarity, slot check) go through
   the engine's ``check_pairs``, one pair independent of every other;
5. clusters: connected components of the kept pairs (union-find). Texts with
   no shingle (empty after normalization) never join a cluster.

:func:`dedup_records` turns that into the dedup stage's kept rows and ledger;
:func:`near_duplicate_groups` gives group labels for the split stage.
"""

from __future__ import annotations

import multiprocessing as mp
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain

import numpy as np

from .. import ledger
from ..config import DedupParams
from ..ledger import FilterResult
from ..schema import full_text, response_text, text_of
from .edits import _CJK_CHAR
from .lsh import LazyBands, candidate_pairs, estimated_jaccard, exact_jaccard, union_find
from .sketch import Sketches, normalize, sketch_batch, sorted_unique

__all__ = ["normalize", "lsh_params", "sketch", "find_duplicates", "DupResult", "dedup_records",
           "near_duplicate_groups", "exact_groups", "cluster_sketches", "check_pairs", "LocalEngine"]

STAGE = "dedup"
# LSH weights (false positive, false negative) for datasketch's parameter optimizer.
# A pair the bands miss is lost for good, while a false candidate only costs one
# exact-Jaccard check (or one signature comparison), so recall weighs far more.
RECALL_WEIGHTS = (0.02, 0.98)
_CHUNK_ROWS = 4096      # texts per task handed to a worker process
_BATCH_ROWS = 512       # texts per sketch_batch call inside a task (cache-sized vector passes)


@lru_cache(maxsize=64)
def _optimal_bands_rows(threshold: float, num_perm: int) -> tuple[int, int]:
    from datasketch import MinHashLSH
    try:
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=RECALL_WEIGHTS)
    except ValueError:
        # the optimizer wants a single band (threshold ~1: only identical sets
        # matter, and any banding finds those); MinHashLSH needs two
        return 2, num_perm // 2
    return lsh.b, lsh.r


def lsh_params(dedup_params: DedupParams, threshold: float | None = None) -> tuple[int, int]:
    """(bands, rows): ``dedup.bands``/``dedup.rows`` when set, else derived from the threshold.

    Derived with datasketch's MinHashLSH optimizer weighted towards recall
    (``RECALL_WEIGHTS``); e.g. threshold 0.8, 128 permutations -> 17 x 7, which
    finds a pair at Jaccard 0.8 with probability 0.98.
    """
    if dedup_params.bands is not None:
        return dedup_params.bands, dedup_params.rows
    threshold = dedup_params.threshold if threshold is None else threshold
    return _optimal_bands_rows(float(threshold), dedup_params.num_perm)


def _sketch_batches(args):
    """Sketches of one chunk, ``_BATCH_ROWS`` texts at a time (an iterator): the vector passes over
    a few hundred texts' code points stay in the CPU cache (512 rows: 2.7 s per 100k mixed rows on
    one core, 4,096: 3.2 s; ``bench/dedup_throughput.py``). Rows do not depend on the batching."""
    texts, dedup_params = args
    ed = dedup_params.edits
    for i in range(0, max(len(texts), 1), _BATCH_ROWS):
        yield sketch_batch(texts[i:i + _BATCH_ROWS], dedup_params.normalize, dedup_params.shingle,
                           dedup_params.word_ngram, dedup_params.char_ngram, dedup_params.num_perm,
                           dedup_params.seed, ed.ngram if ed.enabled else 0, ed.bins if ed.enabled else 0,
                           dedup_params.slot_check)


def _sketch_chunk(args) -> Sketches:
    """Sketches of one chunk (a worker's task)."""
    return _assemble(_sketch_batches(args), len(args[0]), args[1].num_perm)


def _pool_context():
    # fork starts workers in milliseconds and shares the lookup tables already built
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def sketch_chunks(texts: list[str]) -> list[list[str]]:
    """The chunks :func:`sketch` cuts ``texts`` into (at least one, maybe empty); every engine uses these."""
    return [texts[i:i + _CHUNK_ROWS] for i in range(0, len(texts), _CHUNK_ROWS)] or [[]]


def sketch(texts: list[str], dedup_params: DedupParams, num_proc: int | None = None) -> Sketches:
    """Shingle sets and MinHash signatures of ``texts`` (rows in input order).

    Work is cut into chunks of ``_CHUNK_ROWS`` texts; with ``num_proc`` > 1 the
    chunks go to a process pool. The result does not depend on either.
    """
    num_proc = dedup_params.num_proc if num_proc is None else num_proc
    chunks = sketch_chunks(texts)
    tasks = [(c, dedup_params) for c in chunks]
    if num_proc > 1 and len(chunks) > 1:
        with _pool_context().Pool(min(num_proc, len(chunks))) as pool:
            return _assemble(pool.imap(_sketch_chunk, tasks, chunksize=1), len(texts), dedup_params.num_perm)
    return _assemble(chain.from_iterable(map(_sketch_batches, tasks)), len(texts), dedup_params.num_perm)


def _assemble(parts, n: int, num_perm: int) -> Sketches:
    """Join chunk results in order, writing signatures straight into one array
    so that at most one chunk's copy is alive besides the result."""
    sig = np.empty((num_perm, n), dtype=np.uint32)
    offsets = np.zeros(n + 1, dtype=np.int64)
    flats, modes, edit_sigs, digit_keys = [], [], [], []
    norm: list[str] | None = []
    r = f = 0
    for part in parts:
        k = part.sig.shape[1]
        sig[:, r:r + k] = part.sig
        offsets[r + 1:r + k + 1] = part.offsets[1:] + f
        flats.append(part.flat)
        modes.append(part.char_mode)
        if part.edit_sig is not None:
            edit_sigs.append(part.edit_sig)
            digit_keys.append(part.digit_key)
        if part.norm is None:
            norm = None
        elif norm is not None:
            norm += part.norm
        r += k
        f += len(part.flat)
    flat = np.concatenate(flats) if flats else np.zeros(0, dtype=np.uint32)
    return Sketches(sig=sig, flat=flat, offsets=offsets,
                    char_mode=np.concatenate(modes) if modes else np.zeros(0, dtype=bool),
                    edit_sig=np.concatenate(edit_sigs, axis=1) if edit_sigs else None,
                    digit_key=np.concatenate(digit_keys) if digit_keys else None, norm=norm)


def exact_groups(texts: list[str]) -> np.ndarray:
    """For each text, the index of its first byte-identical occurrence."""
    first: dict[str, int] = {}
    return np.fromiter((first.setdefault(t, i) for i, t in enumerate(texts)), dtype=np.int64,
                       count=len(texts))


SIGNATURES = ("word_jaccard", "char_edits")     # what joined a pair: DupResult.signature indexes this


def check_pairs(kind: str, data, pairs: np.ndarray):
    """One of the per-pair checks of :func:`find_duplicates` on ``pairs`` (int64 (m, 2), rows of ``data``):

    * ``"jaccard"``: the exact Jaccard of the shingle sets, ``data`` = (``flat``, ``offsets``) of a
      :class:`Sketches` (float64 array);
    * ``"edits"``: the edit similarity of the normalized texts, ``data`` = ``Sketches.norm`` (float64 array);
    * ``"slots"``: :func:`slot_reasons`, ``data`` = ``Sketches.norm`` (a list, None where the slot check
      passes).

    Each pair's answer depends on its two rows only, so any split of ``pairs`` into blocks, checked
    anywhere, gives the same answers (what :class:`sftpipe.dedup.ray_engine.RayEngine` relies on)."""
    from .edits import edit_similarity
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if kind == "jaccard":
        return exact_jaccard(pairs, *data)
    if kind == "edits":
        return edit_similarity([data[i] for i in pairs[:, 0].tolist()], [data[j] for j in pairs[:, 1].tolist()])
    if kind == "slots":
        return slot_reasons(data, pairs)
    raise ValueError(f"unknown pair check {kind!r}")


def cluster_sketches(sk: Sketches, bands: int, rows: int, threshold: float, verify: bool,
                     pairs_fn=candidate_pairs, check=check_pairs):
    """Candidate pairs, their similarity, which pass, and the component of each row.

    ``similarity`` is the exact Jaccard with ``verify``, else the MinHash
    estimate; a pair passes when it reaches ``threshold``. Rows without
    shingles take no part. ``pairs_fn``: :func:`~sftpipe.dedup.lsh.candidate_pairs`
    or an engine's equivalent; ``check``: :func:`check_pairs` or an engine's equivalent.
    Returns (pairs, similarity, accepted, component).
    """
    valid = np.flatnonzero(sk.sizes > 0)
    pairs = pairs_fn(sk.sig, bands, rows, valid)
    sim = check("jaccard", (sk.flat, sk.offsets), pairs) if verify else estimated_jaccard(pairs, sk.sig)
    ok = sim >= threshold
    return pairs, sim, ok, union_find(len(sk.sizes), pairs[ok])


def edit_candidates(sk: Sketches, edits, pairs_fn=candidate_pairs, slot_check: bool = False,
                    check=check_pairs) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of the character signature's bands whose normalized texts are within
    ``edits.min_similarity`` (1 - Levenshtein / max length), with that similarity.

    Band buckets of more than ``edits.bucket_cap`` rows give each member's ``edits.window``
    neighbours only (:func:`sftpipe.dedup.lsh.candidate_pairs`); with ``slot_check`` and
    ``edits.digit_key``, rows whose digit runs differ (which the slot check would keep apart)
    never share a bucket. ``check``: :func:`check_pairs` or an engine's equivalent."""
    lens = np.fromiter(map(len, sk.norm), dtype=np.int64, count=len(sk.norm))
    extra = sk.digit_key if slot_check and edits.digit_key else None
    pairs = pairs_fn(sk.edit_sig, edits.bands, edits.rows, np.flatnonzero(lens > 0),
                     cap=edits.bucket_cap, window=edits.window, extra=extra)
    la, lb = lens[pairs[:, 0]], lens[pairs[:, 1]]
    shorter = np.minimum(la, lb)
    close = shorter >= edits.min_similarity * np.maximum(la, lb)       # else the distance is too big
    pairs, shorter = pairs[close], shorter[close]
    # long rows fill every bin with their own n-grams, so the estimate is sharp there (sd ~0.04):
    # unrelated rows of one domain that met in a band go before the costlier edit check
    keep = shorter < edits.bins + edits.ngram - 1
    long = np.flatnonzero(~keep)
    keep[long] = estimated_jaccard(pairs[long], sk.edit_sig) >= edits.min_estimate
    pairs = pairs[keep]
    sim = check("edits", sk.norm, pairs)
    ok = sim >= edits.min_similarity
    return pairs[ok], sim[ok]


def slot_reasons(norm: list[str], pairs: np.ndarray) -> list[str | None]:
    """:func:`sftpipe.dedup.edits.slot_change` of each pair of rows of ``norm``, the normalized texts
    (``Sketches.norm``, kept by the sketch when the slot check is on)."""
    from .edits import slot_change, text_stats
    if not len(pairs):
        return []
    rows = sorted_unique(np.asarray(pairs, dtype=np.int64).ravel())
    content, digit = text_stats([norm[r] for r in rows.tolist()])
    at = np.searchsorted(rows, pairs)
    return [slot_change(norm[i], norm[j], stats=(content[x], content[y], digit[x], digit[y]))
            for (i, j), (x, y) in zip(pairs.tolist(), at.tolist())]


@dataclass(kw_only=True)
class DupResult:
    """Duplicate structure of a list of texts."""
    component: np.ndarray          # per text: smallest text index of its duplicate cluster
    exact_rep: np.ndarray          # per text: first byte-identical text (itself if first)
    row_of: np.ndarray             # per text: its row in `sketches` (-1: not sketched)
    sketches: Sketches | None      # of the distinct texts (None when near dedup is off)
    pairs: np.ndarray              # candidate pairs, as text indices
    similarity: np.ndarray         # per candidate: exact Jaccard (verify) or estimate; edit similarity
    accepted: np.ndarray           # per candidate: joined its two texts
    signature: np.ndarray          # per candidate: what proposed it, an index into SIGNATURES
    slot: list                     # per candidate: why the slot check kept it apart (None: it did not)
    bands: int
    rows: int
    threshold: float
    verify: bool

    def _rows(self, i) -> np.ndarray:
        return self.row_of[self.exact_rep[np.asarray(i, dtype=np.int64)]]

    def jaccard(self, i, j) -> np.ndarray:
        """Exact Jaccard of the shingle sets of texts i and j (arrays); needs sketches."""
        pairs = np.stack([self._rows(i), self._rows(j)], axis=1)
        return exact_jaccard(pairs, self.sketches.flat, self.sketches.offsets)

    def estimate(self, i, j) -> np.ndarray:
        """MinHash estimate of the Jaccard of texts i and j (arrays); needs sketches."""
        pairs = np.stack([self._rows(i), self._rows(j)], axis=1)
        return estimated_jaccard(pairs, self.sketches.sig)


class LocalEngine:
    """Where :func:`find_duplicates` runs its heavy steps (signatures, band candidates, per-pair checks):
    here, in this process (and the ``num_proc`` pool). :class:`sftpipe.dedup.ray_engine.RayEngine` runs
    the same steps on Ray."""

    kind = "local"

    def sketch(self, texts: list[str], dedup_params: DedupParams) -> Sketches:
        return sketch(texts, dedup_params)

    def candidate_pairs(self, sig: np.ndarray, bands: int, rows: int, valid=None, **bucketing) -> np.ndarray:
        """:func:`~sftpipe.dedup.lsh.candidate_pairs`; ``bucketing``: its cap, window and extra."""
        return candidate_pairs(sig, bands, rows, valid, **bucketing)

    def check_pairs(self, kind: str, data, pairs: np.ndarray):
        """:func:`check_pairs`."""
        return check_pairs(kind, data, pairs)

    def band_candidates(self, band_of, bands: int, rows: int, n: int, valid, **bucketing) -> np.ndarray:
        """:func:`~sftpipe.dedup.lsh.candidate_pairs` over ``bands`` bands of ``n`` columns, band k given by
        ``band_of(k)`` ((rows, n) array, read when needed: the streamed path's spill files)."""
        return candidate_pairs(LazyBands(band_of, n, bands, rows), bands, rows, valid, **bucketing)


def find_duplicates(texts: list[str], dedup_params: DedupParams, threshold: float | None = None,
                    engine=None) -> DupResult:
    """Cluster exact (``dedup.exact``) and near (``dedup.near``) duplicates among ``texts``.

    ``threshold`` overrides ``dedup.threshold`` (bands/rows are then derived from it
    unless ``dedup.bands``/``dedup.rows`` are set). Deterministic: the same texts and
    params give the same clusters whatever ``num_proc`` or ``engine`` (None: a
    :class:`LocalEngine`) computes the sketches, the band candidates and the pair checks.
    """
    engine = LocalEngine() if engine is None else engine
    t = float(dedup_params.threshold if threshold is None else threshold)
    n = len(texts)
    exact_rep = exact_groups(texts) if dedup_params.exact else np.arange(n, dtype=np.int64)
    bands, rows = lsh_params(dedup_params, t)
    empty = np.zeros((0, 2), dtype=np.int64)
    if not dedup_params.near:
        return DupResult(component=exact_rep, exact_rep=exact_rep, row_of=np.full(n, -1), sketches=None,
                         pairs=empty, similarity=np.zeros(0), accepted=np.zeros(0, bool),
                         signature=np.zeros(0, np.int8), slot=[], bands=bands, rows=rows,
                         threshold=t, verify=dedup_params.verify)
    uniq = np.flatnonzero(exact_rep == np.arange(n))
    sk = engine.sketch([texts[i] for i in uniq.tolist()], dedup_params)
    pairs, sim, ok, _ = cluster_sketches(sk, bands, rows, t, dedup_params.verify, engine.candidate_pairs,
                                         engine.check_pairs)
    kind = np.zeros(len(pairs), dtype=np.int8)
    if dedup_params.edits.enabled:
        pe, se = edit_candidates(sk, dedup_params.edits, engine.candidate_pairs, dedup_params.slot_check,
                                 engine.check_pairs)
        pairs, sim = np.concatenate([pairs, pe]), np.concatenate([sim, se])
        ok = np.concatenate([ok, np.ones(len(pe), dtype=bool)])
        kind = np.concatenate([kind, np.ones(len(pe), dtype=np.int8)])
    slot: list = [None] * len(pairs)
    if dedup_params.slot_check and ok.any():
        idx = np.flatnonzero(ok)
        # both passes can propose a pair: check each distinct pair once
        distinct, inverse = np.unique(pairs[idx], axis=0, return_inverse=True)
        reasons = engine.check_pairs("slots", sk.norm, distinct)
        for k, r in zip(idx.tolist(), inverse.ravel().tolist()):
            slot[k] = reasons[r]
        ok[idx] = [slot[k] is None for k in idx.tolist()]
    comp = union_find(len(uniq), pairs[ok])
    row_of = np.full(n, -1, dtype=np.int64)
    row_of[uniq] = np.arange(len(uniq))
    component = uniq[comp[row_of[exact_rep]]]
    return DupResult(component=component, exact_rep=exact_rep, row_of=row_of, sketches=sk, pairs=uniq[pairs],
                     similarity=sim, accepted=ok, signature=kind, slot=slot, bands=bands, rows=rows, threshold=t,
                     verify=dedup_params.verify)


def near_duplicate_groups(texts: list[str], dedup_params: DedupParams, threshold: float | None = None) -> list[int]:
    """A group label per text: equal labels = one connected component at ``threshold``.

    Byte-identical texts always share a group, and near-duplicates are always looked for, whatever
    ``dedup.exact``/``dedup.near`` say (those switch what the dedup stage removes, not what split
    must keep together). Labels are 0, 1, 2, ... in order of each group's first text, so they are
    deterministic.
    """
    dedup_params = dedup_params.model_copy(update={"exact": True, "near": True})
    comp = find_duplicates(texts, dedup_params, threshold).component
    # component = smallest index in the group, so ranking the distinct values
    # numbers groups in order of their first text
    return np.searchsorted(sorted_unique(comp), comp).tolist()


# ---------------------------------------------------------------------------
# Record level


def _id_key(rid) -> tuple:
    """Natural order of ids: "src:2" before "src:10". Splitting on runs of ASCII digits puts them at
    the odd positions, so digits always meet digits: they compare as numbers (ties by their text,
    "01" before "1"), the text between them as strings."""
    parts = re.split(r"([0-9]+)", str(rid))
    return tuple((int(tok), tok) if k % 2 else tok for k, tok in enumerate(parts))


_TOKEN = re.compile(r"[^\W_]+")


def _tokens(text: str) -> list[str]:
    """Words, and character bigrams inside runs of CJK characters (Chinese has no spaces)."""
    out = []
    for w in _TOKEN.findall(text.casefold()):
        if _CJK_CHAR.search(w):
            out += [w[k:k + 2] for k in range(max(1, len(w) - 1))]
        else:
            out.append(w)
    return out


def rare_tokens(records: list[dict], rows: list[int]) -> dict[int, int]:
    """For each of ``rows``: how many of its tokens occur in no other record of ``records``.

    A typo makes such a token (``teh``, ``Tehrna``, a new character bigram); the correct spelling
    is shared with other rows. Counted over distinct tokens per record."""
    toks = [set(_tokens(full_text(r))) for r in records]
    df: Counter = Counter()
    for t in toks:
        df.update(t)
    return {i: sum(df[t] == 1 for t in toks[i]) for i in rows}


def _survivors(records: list[dict], component: np.ndarray, keep: str, prefer_typical: bool = False) -> np.ndarray:
    """Index of the kept record of each record's cluster, by the keep policy (after the fewest
    rare tokens, with ``prefer_typical``)."""
    n = len(records)
    survivor = np.arange(n)
    members = defaultdict(list)
    counts = np.bincount(component)
    for i in np.flatnonzero(counts[component] > 1).tolist():
        members[int(component[i])].append(i)
    rare = rare_tokens(records, [i for g in members.values() for i in g]) if prefer_typical and members else {}
    for group in members.values():
        if keep == "lowest_id":
            key = lambda i: (_id_key(records[i]["id"]), i)
        elif keep == "longest_response":
            key = lambda i: (-len(response_text(records[i])), _id_key(records[i]["id"]), i)
        else:
            key = lambda i: (len(response_text(records[i])), _id_key(records[i]["id"]), i)
        survivor[group] = min(group, key=(lambda i: (rare[i], key(i))) if rare else key)
    return survivor


def semantic_params(dedup_params: DedupParams):
    """The paraphrase pass's ``semantic.SemanticParams``, or None when it is off."""
    sem = dedup_params.semantic
    if not (dedup_params.near and sem.enabled):
        return None
    from .semantic import SemanticParams
    return SemanticParams(**{k: v for k, v in sem.model_dump().items() if k != "enabled"}, seed=dedup_params.seed)


def semantic_engine(dedup_params: DedupParams, engine=None) -> dict:
    """Where the paraphrase pass runs (``semantic.find_pairs``' engine arguments): with a Ray ``engine``
    its group checks are Ray tasks and model embeddings run on ``dedup.ray``'s actors; else here."""
    if getattr(engine, "kind", "local") != "ray":
        return {}
    return {"engine": "ray", "actors": dedup_params.ray, "max_retries": engine.max_retries, "section": "dedup.ray"}


def _semantic(records: list[dict], dedup_params: DedupParams, engine=None):
    """(pairs, cosine, evidence) of the semantic pass over ``records``, or empty ones when it is off
    (:func:`semantic_engine`: where it runs)."""
    params = semantic_params(dedup_params)
    if params is None or len(records) < 2:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0), []
    from .semantic import semantic_pairs
    return semantic_pairs(records, params, return_evidence=True, **semantic_engine(dedup_params, engine))


def _matches(res: DupResult, sem_pairs: np.ndarray, sem_cos: np.ndarray, sem_ev: list) -> dict:
    """Per text index: the accepted pairs touching it, as (partner, signature name, similarity, extra)."""
    out: dict[int, list] = defaultdict(list)
    acc = np.flatnonzero(res.accepted)
    for (i, j), kind, sim in zip(res.pairs[acc].tolist(), res.signature[acc].tolist(), res.similarity[acc].tolist()):
        out[i].append((j, SIGNATURES[kind], sim, None))
        out[j].append((i, SIGNATURES[kind], sim, None))
    for (i, j), sim, ev in zip(sem_pairs.tolist(), sem_cos.tolist(), sem_ev):
        out[i].append((j, "semantic", sim, ev))
        out[j].append((i, "semantic", sim, ev))
    return out


def dedup_records(records: list[dict], dedup_params: DedupParams, engine=None) -> FilterResult:
    """The dedup stage on records: kept copies (input order) and ledger rows.

    Clusters join three kinds of pairs: word-shingle MinHash pairs (Jaccard >= threshold),
    typo-level pairs (``dedup.edits``: character signature + edit similarity), both kept
    apart by the slot check, and paraphrases (``dedup.semantic``). Each cluster keeps one
    record, chosen by ``dedup.keep`` (ties by id). Dropped records are ``exact_duplicate``
    when their text (``dedup.field``) is identical to the kept one's, ``paraphrase`` when
    only the semantic pass tied them in, else ``near_duplicate``. The evidence names the kept
    record (``kept_id``, which also names the cluster), the cluster's size, the exact Jaccard
    with the kept record and the threshold; for near rows also the MinHash estimate, the
    edit similarity to the kept record (edits on), which signatures matched the row
    (``matched_by``), the partner of its strongest match (``matched_id``) and that match's
    similarity; for paraphrases the semantic rule that held. Kept records get
    ``meta.dedup_cluster`` and ``meta.dedup_cluster_size``. ``extra_metrics`` holds counts;
    ``details`` holds ``cluster_size_hist`` (cluster size -> number of clusters). ``engine``: where
    :func:`find_duplicates` computes (None: here); the result does not depend on it.
    """
    texts = [text_of(r, dedup_params.field) for r in records]
    res = find_duplicates(texts, dedup_params, engine=engine)
    n = len(records)
    sem_pairs, sem_cos, sem_ev = _semantic(records, dedup_params, engine)
    comp = res.component
    if len(sem_pairs):
        comp = union_find(n, np.concatenate([np.stack([np.arange(n), comp], axis=1), sem_pairs]))
    size = np.bincount(comp)[comp]           # per row: its cluster's size
    survivor = _survivors(records, comp, dedup_params.keep, dedup_params.prefer_typical)
    dropped_idx = np.flatnonzero(survivor != np.arange(n))
    exact = np.array([texts[i] == texts[survivor[i]] for i in dropped_idx.tolist()], dtype=bool)
    near_idx = dropped_idx[~exact]
    sketched = near_idx[res.row_of[res.exact_rep[near_idx]] >= 0] if res.sketches is not None else near_idx[:0]
    jac = dict(zip(sketched.tolist(), res.jaccard(sketched, survivor[sketched]).tolist())) if len(sketched) else {}
    est = dict(zip(sketched.tolist(), res.estimate(sketched, survivor[sketched]).tolist())) if len(sketched) else {}
    edit = {}
    if len(sketched) and dedup_params.edits.enabled:
        from .edits import edit_similarity
        norm = res.sketches.norm
        a = [norm[k] for k in res.row_of[res.exact_rep[sketched]].tolist()]
        b = [norm[k] for k in res.row_of[res.exact_rep[survivor[sketched]]].tolist()]
        edit = dict(zip(sketched.tolist(), edit_similarity(a, b).tolist()))
    matches = _matches(res, sem_pairs, sem_cos, sem_ev)
    dropped = []
    for i, is_exact in zip(dropped_idx.tolist(), exact.tolist()):
        kept_id = records[survivor[i]]["id"]
        ev = {"kept_id": kept_id, "cluster_size": int(size[i]),
              "jaccard": 1.0 if is_exact else round(jac.get(i, 0.0), 4), "threshold": res.threshold}
        reason = "exact_duplicate"
        if not is_exact:
            reason = "near_duplicate"
            if i in est:
                ev["minhash_estimate"] = round(est[i], 4)
            if i in edit:
                ev["edit_similarity"] = round(edit[i], 4)
            mine = matches.get(int(res.exact_rep[i]), []) + (matches.get(i, []) if res.exact_rep[i] != i else [])
            if mine:
                by = sorted({m[1] for m in mine})
                # the strongest match: one with the kept record when there is one, else the most similar
                best = max(mine, key=lambda m: (survivor[i] in (m[0], res.exact_rep[m[0]]), m[2]))
                ev.update(matched_by=by, matched_id=records[best[0]]["id"], similarity=round(best[2], 4))
                if by == ["semantic"]:
                    reason = "paraphrase"
                    ev["rule"] = best[3]
        dropped.append(ledger.drop(records[i], STAGE, reason, **ev))
    kept = []
    for i in np.flatnonzero(survivor == np.arange(n)).tolist():
        rec = dict(records[i])
        rec["meta"] = {**rec.get("meta", {}), "dedup_cluster": rec["id"], "dedup_cluster_size": int(size[i])}
        kept.append(rec)
    cluster_sizes = np.bincount(comp, minlength=n)
    cluster_sizes = cluster_sizes[cluster_sizes > 0]
    hist = Counter(cluster_sizes.tolist())
    reasons = Counter(d["reason"] for d in dropped)
    acc = res.accepted
    slot = Counter(r for r in res.slot if r is not None)
    metrics = {
        "clusters": int((cluster_sizes > 1).sum()),
        "rows_in_clusters": int(cluster_sizes[cluster_sizes > 1].sum()),
        "largest_cluster": int(cluster_sizes.max()) if len(cluster_sizes) else 0,
        "exact_duplicates": int(exact.sum()),
        "near_duplicates": reasons["near_duplicate"],
        "paraphrases": reasons["paraphrase"],
        "bands": res.bands, "band_rows": res.rows, "threshold": res.threshold,
        "candidate_pairs": int((res.signature == 0).sum()),
        "accepted_pairs": int((acc & (res.signature == 0)).sum()),
        "verified_pairs": int((acc & (res.signature == 0)).sum()) if res.verify else 0,
        "edit_pairs": int((acc & (res.signature == 1)).sum()),
        "slot_rejected_pairs": int(sum(slot.values())),
        "semantic_pairs": int(len(sem_pairs)),
    }
    details = {"cluster_size_hist": {str(k): hist[k] for k in sorted(hist)},
               "slot_rejected_by": {k: slot[k] for k in sorted(slot)}}
    return ledger.FilterResult(kept=kept, dropped=dropped, extra_metrics=metrics, details=details)
