"""The dedup stage over a JSONL file in bounded memory, byte-identical to the in-memory path.

:func:`dedup_jsonl` writes ``kept.jsonl``, ``dropped.jsonl``, ``details.json`` and the metrics
file with the same bytes as ``clusters.dedup_records`` + ``ledger.write_filter_outputs`` on the
same rows and params. It never holds the records, their texts, their shingle sets or their
MinHash signatures all at once:

1. **scan** (one pass, ``chunk_rows`` records at a time): per row it keeps the byte offset and
   length of its line, a 128-bit BLAKE2b hash of its dedup text (exact groups), a 64-bit hash of
   its id (accounting), whether it has a word shingle, the length of its normalized text and the
   key of its digit runs. The chunk is sketched by :func:`clusters.sketch`; what the candidate
   searches need goes to files in a temporary directory: the 64-bit LSH key of each band of the
   word MinHash signature (one file per band), each band of the character signature
   (:mod:`sftpipe.dedup.edits`; one file per band), the low 8 bits of every bin of that signature
   and a 64-bucket character histogram (192 bytes a row, the typo pass's prefilters) and the
   normalized texts (UTF-8); with the paraphrase pass on, the row's ``semantic.RowKeys`` (64-bit
   hashes of its normalized answer, numbers, request and task input: 34 bytes a row).
2. **exact groups**: rows sorted by their text hash; the first row of each group represents it,
   as ``clusters.exact_groups`` does.
3. **word pairs**: one band at a time, :func:`lsh.candidate_pairs` over the band keys of the
   representatives with shingles. Candidate rows are read again (seek to their offsets), sketched
   again, and each pair keeps the exact Jaccard (``verify``) or the MinHash estimate; a pair whose
   full band slices differ (a 64-bit key collision) is dropped, as ``candidate_pairs`` would.
4. **typo pairs**: :func:`lsh.candidate_pairs` itself (bucket cap, window, digit key) over the
   character signature's band files, read one band at a time. The candidates are then checked a
   block at a time with ``edit_candidates``' rules: the length check; for long rows the estimate,
   first bounded from above on the 8-bit values, then computed on full signatures; the edit
   similarity of the normalized texts, read back. A pair whose histograms already put a floor on
   its edit distance that rules the similarity out is not read back (the bag distance: exact).
5. **slot check** and **clusters**: ``clusters.slot_reasons`` on the accepted pairs' normalized
   texts, ``lsh.union_find`` over row numbers; then the **paraphrase pass**
   (``semantic.find_pairs``): rows grouped by their keys, the embedder and the request clusters
   fitted on ``fit_rows`` rows read back, the candidate groups' rows read back a batch at a time.
6. **survivors**: cluster members are read back a block of clusters at a time and
   ``clusters._survivors`` picks each cluster's kept row. With ``prefer_typical`` the rare-token
   count needs document frequencies over all rows, but only for the tokens seen in exactly one
   member: one more streaming pass over the other rows strikes off those it finds.
7. **evidence** (dropped near rows and their kept rows, read back and sketched) and **outputs**:
   a last pass over the file writes kept and dropped rows in input order, both files atomically,
   after checking that every input row went to exactly one of them with its id.

**Engines**: the signatures (the scan's chunks and the rows read back), the band candidates (bands
read from the spill files), the pair checks (exact Jaccard, edit similarity, slot check) and the
paraphrase pass's request clusters and group checks go through the engine ``dedup_jsonl`` is given:
``clusters.LocalEngine`` (this process) or ``ray_engine.RayEngine`` (Ray tasks, ``dedup.engine:
ray``). Reading, the spill files, union-find, the survivors and the outputs stay in this process;
the bytes are the same on either engine.

Exact groups compare 128-bit hashes instead of texts (a false match has probability ~n^2/2^129,
1e-25 at 10M rows). Everything else is exact: truncated values and histograms only rule out
pairs that the full check rules out. The paraphrase pass runs the in-memory path's own code
(``find_pairs``) with rows read back instead of held.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .. import ledger
from ..config import DedupParams
from ..errors import AccountingError, UserError
from ..io import atomic_path, dumps, iter_jsonl, write_json
from ..schema import full_text, text_of
from .clusters import (SIGNATURES, STAGE, LocalEngine, _survivors, _tokens, lsh_params, semantic_engine,
                       semantic_params)
from .edits import char_ngram_hashes, oph_signatures
from .lsh import _band_keys, estimated_jaccard, union_find
from .sketch import _encode, sorted_unique

__all__ = ["dedup_jsonl", "groups_jsonl"]

log = logging.getLogger(__name__)

CHUNK_ROWS = 32768          # records per scan chunk, and rows read back per block
PAIR_BLOCK = 1 << 18        # candidate pairs examined per block
CHECK_PAIRS = 1 << 15       # pairs whose texts are read back and compared per batch
MATCHES = (*SIGNATURES, "semantic")    # what joined a pair: bit k of a row's match mask
HIST_BITS = 6               # character histogram of 2**HIST_BITS buckets per row (typo pass prefilter)


# ---------------------------------------------------------------------------
# Reading


def _lines(fh):
    """(byte offset, bytes) of each line of a binary file, split as ``io.iter_jsonl``'s
    text-mode reading splits it (``\\n``, ``\\r\\n`` and a lone ``\\r`` end a line), without
    the line end."""
    pos = 0
    for raw in fh:
        start, pos = pos, pos + len(raw)
        body = raw[:-1] if raw.endswith(b"\n") else raw
        if b"\r" not in body:
            yield start, body
            continue
        if body.endswith(b"\r"):          # "\r\n", or a lone "\r" ending the file
            body = body[:-1]
        for piece in body.split(b"\r"):
            yield start, piece
            start += len(piece) + 1


def _reader_error(path: Path) -> None:
    """Raise the error ``io.iter_jsonl`` raises on this file (file not found, or the first bad
    line), so both readers fail with the same one line."""
    for _ in iter_jsonl(path):
        pass
    raise UserError(f"{path}: changed while dedup was reading it")


def _records(path: Path):
    """(byte offset, byte length, record) of each non-blank line, in order."""
    with open(path, "rb") as fh:
        for off, body in _lines(fh):
            text = body.decode("utf-8")
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError:
                _reader_error(path)
                raise
            yield off, len(body), rec


class _Reader:
    """Rows read back by number (``os.pread`` at the offsets the scan recorded)."""

    def __init__(self, path: Path, offsets: np.ndarray, lengths: np.ndarray):
        self.path, self.offsets, self.lengths = path, offsets, lengths
        self.fd = os.open(path, os.O_RDONLY)

    def close(self):
        os.close(self.fd)

    def records(self, rows) -> list[dict]:
        out = []
        for r in np.asarray(rows).tolist():
            data = os.pread(self.fd, int(self.lengths[r]), int(self.offsets[r]))
            try:
                out.append(json.loads(data.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise UserError(f"{self.path}: changed while dedup was reading it (row {r + 1})") from None
        return out


class _Texts:
    """The normalized texts the scan wrote, read back by row number."""

    def __init__(self, path: Path, byte_lens: np.ndarray):
        self.starts = np.zeros(len(byte_lens) + 1, dtype=np.int64)
        np.cumsum(byte_lens, out=self.starts[1:])
        self.fd = os.open(path, os.O_RDONLY)

    def close(self):
        os.close(self.fd)

    def get(self, rows) -> list[str]:
        s = self.starts
        return [os.pread(self.fd, int(s[r + 1] - s[r]), int(s[r])).decode("utf-8", "surrogatepass")
                for r in np.asarray(rows).tolist()]


def _peak_mb() -> int | None:
    """This process's peak RSS so far (VmHWM), in MB; None where /proc is not there."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(x.split()[1]) // 1024 for x in fh if x.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def _blake(data: bytes, size: int) -> bytes:
    return hashlib.blake2b(data, digest_size=size).digest()


def _id_hash(rec: dict) -> bytes:
    return _blake(dumps(rec["id"]).encode("utf-8", "surrogatepass"), 8)


# ---------------------------------------------------------------------------
# Pass 1: the scan


class _Scan:
    """What the scan keeps per row (arrays) and where it spilled the rest (files under ``tmp``)."""

    def __init__(self, tmp: Path, p: DedupParams, engine=None):
        self.tmp, self.p = tmp, p
        self.engine = LocalEngine() if engine is None else engine
        self.bands, self.rows = lsh_params(p)
        self.near = p.near
        self.edits = p.near and p.edits.enabled
        self.keep_norm = p.near and (p.edits.enabled or p.slot_check)
        self.sem = semantic_params(p)
        self.n = 0

    def word_keys(self, k: int) -> np.ndarray:
        return np.fromfile(self.tmp / f"word{k}.u64", dtype=np.uint64)

    def run(self, path: Path, chunk_rows: int) -> None:
        p = self.p
        parts: dict[str, list] = {k: [] for k in ("off", "len", "text", "id", "shingled", "norm_len", "norm_bytes",
                                                  "digit_key", "sem")}
        words = [open(self.tmp / f"word{k}.u64", "wb") for k in range(self.bands)] if self.near else []
        sig8 = open(self.tmp / "edit_sig8.u8", "wb") if self.edits else None
        hist = open(self.tmp / "hist.u8", "wb") if self.edits else None
        ebands = [open(self.tmp / f"edit{k}.u32", "wb") for k in range(p.edits.bands)] if self.edits else []
        norm = open(self.tmp / "norm.utf8", "wb") if self.keep_norm else None
        try:
            buf: list = []
            for item in _records(path):
                buf.append(item)
                if len(buf) == chunk_rows:
                    self._chunk(buf, parts, words, ebands, sig8, hist, norm)
                    buf = []
            if buf:
                self._chunk(buf, parts, words, ebands, sig8, hist, norm)
        finally:
            for fh in words + ebands + [sig8, hist, norm]:
                if fh is not None:
                    fh.close()

        def cat(key, dtype):
            return np.concatenate(parts.pop(key)).astype(dtype, copy=False) if parts[key] else np.zeros(0, dtype)
        self.offsets, self.lengths = cat("off", np.int64), cat("len", np.int64)
        text = parts.pop("text")
        self.text_hash = np.frombuffer(b"".join(text), dtype=np.uint64).reshape(-1, 2)
        self.id_hash = np.frombuffer(b"".join(parts.pop("id")), dtype=np.uint64)
        self.shingled, self.norm_len = cat("shingled", bool), cat("norm_len", np.int64)
        self.norm_bytes = cat("norm_bytes", np.int64)
        self.digit_key = cat("digit_key", np.uint64)
        if self.sem is not None:
            from .semantic import RowKeys
            self.sem_keys = RowKeys.concat(parts.pop("sem"))
        self.n = len(self.offsets)

    def _chunk(self, buf, parts, words, ebands, sig8, hist, norm) -> None:
        p = self.p
        parts["off"].append(np.array([b[0] for b in buf], dtype=np.int64))
        parts["len"].append(np.array([b[1] for b in buf], dtype=np.int64))
        recs = [b[2] for b in buf]
        texts = [text_of(r, p.field) for r in recs]
        parts["text"].append(b"".join(_blake(t.encode("utf-8", "surrogatepass"), 16) for t in texts))
        parts["id"].append(b"".join(map(_id_hash, recs)))
        if self.sem is not None:            # what the paraphrase pass compares, hashed
            from .semantic import answer_text, request_text, row_keys
            parts["sem"].append(row_keys([request_text(r) for r in recs], [answer_text(r) for r in recs], self.sem))
        del recs
        buf.clear()
        if not self.near:
            return
        sk = self.engine.sketch(texts, p)
        for k, fh in enumerate(words):
            _band_keys(sk.sig[k * self.rows:(k + 1) * self.rows]).tofile(fh)
        parts["shingled"].append(sk.sizes > 0)
        if sk.norm is not None:
            enc = [t.encode("utf-8", "surrogatepass") for t in sk.norm]
            norm.write(b"".join(enc))
            parts["norm_len"].append(np.fromiter(map(len, sk.norm), dtype=np.int64, count=len(sk.norm)))
            parts["norm_bytes"].append(np.fromiter(map(len, enc), dtype=np.int64, count=len(enc)))
        if sig8 is not None:
            r = p.edits.rows
            for k, fh in enumerate(ebands):
                np.ascontiguousarray(sk.edit_sig[k * r:(k + 1) * r].T).tofile(fh)
            parts["digit_key"].append(sk.digit_key)
            np.ascontiguousarray((sk.edit_sig & np.uint32(0xFF)).astype(np.uint8).T).tofile(sig8)
            for s in range(0, len(sk.norm), 4096):
                _char_histograms(sk.norm[s:s + 4096]).tofile(hist)


def _char_histograms(norm: list[str]) -> np.ndarray:
    """Per text, how many of its characters fall in each of 2**HIST_BITS buckets (by a hash of
    the code point), capped at 255: (rows, buckets) uint8."""
    cps, lens = _encode(norm)
    bucket = ((cps * np.uint32(0x9E3779B1)) >> np.uint32(32 - HIST_BITS)).astype(np.int64)
    bucket += np.repeat(np.arange(len(norm), dtype=np.int64) << HIST_BITS, lens)
    h = np.bincount(bucket, minlength=len(norm) << HIST_BITS).reshape(len(norm), 1 << HIST_BITS)
    return np.minimum(h, 255).astype(np.uint8)


def _levenshtein_floor(ha: np.ndarray, hb: np.ndarray) -> np.ndarray:
    """A lower bound of the Levenshtein distance of each pair of texts from their histograms
    (the bag distance: an edit changes each side's character multiset by at most one; merging
    characters into buckets and capping counts only lowers it)."""
    d = ha.astype(np.int16) - hb.astype(np.int16)
    return np.maximum(np.maximum(d, 0).sum(axis=1, dtype=np.int64), np.maximum(-d, 0).sum(axis=1, dtype=np.int64))


def _exact_reps(text_hash: np.ndarray) -> np.ndarray:
    """For each row, the first row with the same text hash (``clusters.exact_groups`` on hashes)."""
    n = len(text_hash)
    if not n:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((text_hash[:, 1], text_hash[:, 0]))      # stable: rows ascending in a group
    s = text_hash[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (s[1:] != s[:-1]).any(axis=1)
    rep = np.empty(n, dtype=np.int64)
    rep[order] = order[np.flatnonzero(new)][np.cumsum(new) - 1]
    return rep


# ---------------------------------------------------------------------------
# Candidate pairs


def _local(rows_sorted: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    return np.searchsorted(rows_sorted, pairs)


def _word_pairs(scan: _Scan, reader: _Reader, valid: np.ndarray, stats: dict):
    """Word MinHash candidates among ``valid`` rows, as ``clusters.cluster_sketches`` gives them:
    (pairs sorted, similarity)."""
    p, n = scan.p, scan.n
    # each band's 64-bit key as a one-row band: the pairs of equal keys, band by band
    pairs = scan.engine.band_candidates(lambda k: scan.word_keys(k)[None, :], scan.bands, 1, n, valid)
    stats["word_key_pairs"] = len(pairs)
    words_only = p.model_copy(update={"edits": p.edits.model_copy(update={"enabled": False}), "slot_check": False})
    br = scan.bands * scan.rows
    true = np.zeros(len(pairs), dtype=bool)
    sim = np.zeros(len(pairs), dtype=np.float64)
    step = max(1, CHUNK_ROWS // 2)
    for s in range(0, len(pairs), step):
        blk = pairs[s:s + step]
        rows = sorted_unique(blk.ravel())
        sk = scan.engine.sketch([text_of(r, p.field) for r in reader.records(rows)], words_only)
        loc = _local(rows, blk)
        a, b = sk.sig[:br, loc[:, 0]], sk.sig[:br, loc[:, 1]]
        true[s:s + step] = (a == b).reshape(scan.bands, scan.rows, -1).all(axis=1).any(axis=0)
        sim[s:s + step] = (scan.engine.check_pairs("jaccard", (sk.flat, sk.offsets), loc) if p.verify
                           else estimated_jaccard(loc, sk.sig))
    return pairs[true], sim[true]


def _edit_band(tmp: Path, n: int, rows: int):
    """band_of(k) of the scan's character signature files: band k as a (rows, n) array."""
    return lambda k: np.fromfile(tmp / f"edit{k}.u32", dtype=np.uint32).reshape(n, rows).T


def _edit_sigs(norm: list[str], ed) -> np.ndarray:
    """The character signatures (bins, rows) of normalized texts, as ``sketch_batch`` computes them
    (a few thousand rows at a time: the n-gram arrays take ~40 bytes per character)."""
    out = np.empty((ed.bins, len(norm)), dtype=np.uint32)
    for s in range(0, len(norm), 4096):
        part = norm[s:s + 4096]
        cps, lens = _encode(part)
        out[:, s:s + len(part)] = oph_signatures(*char_ngram_hashes(cps, lens, ed.ngram), len(part), ed.bins)
    return out


def _check_edit_pairs(texts: _Texts, pi: np.ndarray, qi: np.ndarray, long: np.ndarray, ed, engine):
    """Of candidate pairs (pi, qi), those ``clusters.edit_candidates`` keeps, and their edit
    similarity: long rows' estimate reaches ``min_estimate`` (full signatures, recomputed from the
    normalized texts), the edit similarity of the normalized texts reaches ``min_similarity``
    (``engine.check_pairs``: here or on Ray)."""
    rows = sorted_unique(np.concatenate([pi, qi]))
    norm = texts.get(rows)
    loc = _local(rows, np.stack([pi, qi], axis=1))
    keep = np.ones(len(loc), dtype=bool)
    lg = np.flatnonzero(long)
    if len(lg):
        need = sorted_unique(loc[lg].ravel())
        sig = _edit_sigs([norm[i] for i in need.tolist()], ed)
        keep[lg] = estimated_jaccard(np.searchsorted(need, loc[lg]), sig) >= ed.min_estimate
    loc = loc[keep]
    sim = engine.check_pairs("edits", norm, loc)
    ok = sim >= ed.min_similarity
    return rows[loc[ok]], sim[ok]


def _edit_pairs(scan: _Scan, texts: _Texts, valid: np.ndarray, stats: dict):
    """Typo-level pairs among ``valid`` rows, as ``clusters.edit_candidates`` gives them:
    (pairs sorted, edit similarity). The candidates are ``lsh.candidate_pairs``' own (bucket cap,
    window, digit key and all), over the signature files; they are then checked a block at a time."""
    p = scan.p
    ed = p.edits
    n, bins = scan.n, ed.bins
    extra = scan.digit_key if p.slot_check and ed.digit_key else None
    cand = scan.engine.band_candidates(_edit_band(scan.tmp, n, ed.rows), ed.bands, ed.rows, n, valid,
                                       cap=ed.bucket_cap, window=ed.window, extra=extra)
    stats["edit_candidates"] = len(cand)
    sig8 = np.fromfile(scan.tmp / "edit_sig8.u8", dtype=np.uint8).reshape(n, bins)
    hist = np.fromfile(scan.tmp / "hist.u8", dtype=np.uint8).reshape(n, 1 << HIST_BITS)
    # a pair whose distance floor puts its similarity (1 - distance / longer length) clearly
    # under min_similarity fails the edit check: it is not read back
    slack = 1.0 - ed.min_similarity
    lens = scan.norm_len
    out_p, out_s = [], []
    checked = 0
    for s in range(0, len(cand), PAIR_BLOCK):
        pi, qi = cand[s:s + PAIR_BLOCK, 0], cand[s:s + PAIR_BLOCK, 1]
        la, lb = lens[pi], lens[qi]
        shorter, longer = np.minimum(la, lb), np.maximum(la, lb)
        keep = shorter >= ed.min_similarity * longer
        long = shorter >= bins + ed.ngram - 1
        lg = np.flatnonzero(long & keep)
        # on the low 8 bits of each bin: at least as many agree as on the full values
        keep[lg] = np.count_nonzero(sig8[pi[lg]] == sig8[qi[lg]], axis=1) / bins >= ed.min_estimate
        ix = np.flatnonzero(keep)
        keep[ix] = _levenshtein_floor(hist[pi[ix]], hist[qi[ix]]) <= slack * longer[ix] + 1e-6
        pi, qi, long = pi[keep], qi[keep], long[keep]
        checked += len(pi)
        for c in range(0, len(pi), CHECK_PAIRS):
            pairs, sim = _check_edit_pairs(texts, pi[c:c + CHECK_PAIRS], qi[c:c + CHECK_PAIRS],
                                           long[c:c + CHECK_PAIRS], ed, scan.engine)
            out_p.append(pairs)
            out_s.append(sim)
    stats["edit_pairs_checked"] = checked
    if not out_p:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    return np.concatenate(out_p), np.concatenate(out_s)


# ---------------------------------------------------------------------------
# Survivors


def _rare_candidates(path: Path, reader: _Reader, members: np.ndarray, n: int) -> set:
    """The tokens that occur in exactly one record of the whole file and in a cluster member:
    ``clusters.rare_tokens`` over all records, for the members' tokens only."""
    seen: dict[str, int] = {}
    for s in range(0, len(members), CHUNK_ROWS):
        for rec in reader.records(members[s:s + CHUNK_ROWS]):
            for t in set(_tokens(full_text(rec))):
                seen[t] = seen.get(t, 0) + 1
    cand = {t for t, c in seen.items() if c == 1}
    del seen
    is_member = np.zeros(n, dtype=bool)
    is_member[members] = True
    for i, (_, _, rec) in enumerate(_records(path)):
        if not cand:
            break
        if not is_member[i]:
            cand.difference_update(_tokens(full_text(rec)))
    return cand


def _pick_survivors(path: Path, reader: _Reader, component: np.ndarray, p: DedupParams):
    """Per row, the row its cluster keeps (``clusters._survivors`` per block of clusters), the
    cluster members (sorted) and their ids."""
    n = len(component)
    survivor = np.arange(n, dtype=np.int64)
    members = np.flatnonzero(np.bincount(component, minlength=n)[component] > 1)
    ids: list = [None] * len(members)
    if not len(members):
        return survivor, members, ids
    cand = _rare_candidates(path, reader, members, n) if p.prefer_typical else None
    by_cluster = members[np.lexsort((members, component[members]))]
    comp_sorted = component[by_cluster]
    cut = np.flatnonzero(np.concatenate([[True], comp_sorted[1:] != comp_sorted[:-1]]))
    s = 0
    while s < len(by_cluster):
        j = int(np.searchsorted(cut, s + CHUNK_ROWS, side="left"))     # whole clusters, ~CHUNK_ROWS rows
        e = int(cut[j]) if j < len(cut) else len(by_cluster)
        rows = np.sort(by_cluster[s:e])
        recs = reader.records(rows)
        for r, rec in zip(rows.tolist(), recs):
            ids[int(np.searchsorted(members, r))] = rec["id"]
        comp = component[rows]
        if cand is not None:
            # the fewest rare tokens first: only a cluster's members with its minimum stay in the running
            rare = np.array([len(cand.intersection(_tokens(full_text(rec)))) for rec in recs], dtype=np.int64)
            _, inv = np.unique(comp, return_inverse=True)
            best = np.full(inv.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(best, inv, rare)
            run = np.flatnonzero(rare == best[inv])
        else:
            run = np.arange(len(rows))
        sub_comp = comp[run]
        first = {}
        local = np.array([first.setdefault(c, k) for k, c in enumerate(sub_comp.tolist())], dtype=np.int64)
        won = _survivors([recs[k] for k in run.tolist()], local, p.keep, False)
        winner = dict(zip(sub_comp.tolist(), rows[run[won]].tolist()))
        survivor[rows] = [winner[c] for c in comp.tolist()]
        s = e
    return survivor, members, ids


# ---------------------------------------------------------------------------
# Evidence


def _best_matches(pairs: np.ndarray, kind: np.ndarray, sim: np.ndarray, survivor: np.ndarray,
                  exact_rep: np.ndarray, rows: np.ndarray):
    """Per row of ``rows`` (near duplicates), as ``dedup_records`` picks them from ``clusters._matches``:
    (found, mask, partner, similarity, entry). Its matches are those of its exact group's first row, then,
    for another row of the group, its own (semantic pairs join rows, not groups); ``mask`` has bit k set when
    ``SIGNATURES + ("semantic",)``[k] matched it; the strongest match is one with the kept row first, then
    the most similar, then list order (signature, then partner); ``entry`` is the index of that pair in
    ``pairs`` (for the semantic pairs' evidence)."""
    m = len(pairs)
    node = np.concatenate([pairs[:, 0], pairs[:, 1]])
    partner = np.concatenate([pairs[:, 1], pairs[:, 0]])
    kk = np.concatenate([kind, kind]).astype(np.int64)
    ss = np.concatenate([sim, sim])
    entry = np.concatenate([np.arange(m), np.arange(m)])
    o = np.lexsort((partner, kk, node))         # _matches' list order: signature, then partner
    node, partner, kk, ss, entry = node[o], partner[o], kk[o], ss[o], entry[o]
    starts = np.flatnonzero(np.concatenate([[True], node[1:] != node[:-1]])) if len(node) else np.zeros(0, np.int64)
    mask = np.bitwise_or.reduceat(np.left_shift(1, kk), starts) if len(node) else np.zeros(0, np.int64)
    with_kept = (partner == survivor[node]) | (exact_rep[partner] == survivor[node])
    o2 = np.lexsort((np.arange(len(node)), -ss, ~with_kept, node))
    firsts = o2[np.flatnonzero(np.concatenate([[True], node[o2][1:] != node[o2][:-1]]))] if len(node) else starts
    nodes = node[starts]

    def at(x):
        pos = np.minimum(np.searchsorted(nodes, x), max(len(nodes) - 1, 0))
        found = (nodes[pos] == x) if len(nodes) else np.zeros(len(x), dtype=bool)
        return found, pos

    fa, pa = at(exact_rep[rows])
    fb, pb = at(rows)
    fb &= rows != exact_rep[rows]
    wa, wb = with_kept[firsts[pa]] & fa, with_kept[firsts[pb]] & fb
    sa, sb = ss[firsts[pa]], ss[firsts[pb]]
    use_b = fb & (~fa | (wb & ~wa) | ((wb == wa) & (sb > sa)))
    best = np.where(use_b, firsts[pb], firsts[pa])
    out_mask = np.where(fa, mask[pa] if len(mask) else 0, 0) | np.where(fb, mask[pb] if len(mask) else 0, 0)
    found = fa | fb
    return found, out_mask, partner[best] if len(node) else rows, ss[best] if len(node) else np.zeros(len(rows)), \
        entry[best] if len(node) else np.zeros(len(rows), np.int64)


def _semantic_pairs(scan: "_Scan", reader: _Reader, n: int):
    """The paraphrase pass (``semantic.find_pairs``) over the scanned rows' keys, their texts read back a
    batch of candidate groups at a time: (pairs, cosine, evidence)."""
    from .semantic import answer_text, find_pairs, request_text

    def fetch(rows):
        recs = reader.records(rows)
        return [request_text(r) for r in recs], [answer_text(r) for r in recs]

    return find_pairs(n, scan.sem_keys, fetch, scan.sem, return_evidence=True, **semantic_engine(scan.p, scan.engine))


def _near_evidence(reader: _Reader, near: np.ndarray, kept: np.ndarray, p: DedupParams, engine):
    """Exact Jaccard, MinHash estimate and (edits on) edit similarity of each near row and its kept row."""
    q = p.model_copy(update={"edits": p.edits.model_copy(update={"enabled": False}), "slot_check": True})
    jac = np.zeros(len(near))
    est = np.zeros(len(near))
    edit = np.zeros(len(near))
    step = max(1, CHUNK_ROWS // 2)
    for s in range(0, len(near), step):
        blk = np.stack([near[s:s + step], kept[s:s + step]], axis=1)
        rows = sorted_unique(blk.ravel())
        sk = engine.sketch([text_of(r, p.field) for r in reader.records(rows)], q)
        loc = _local(rows, blk)
        jac[s:s + step] = engine.check_pairs("jaccard", (sk.flat, sk.offsets), loc)
        est[s:s + step] = estimated_jaccard(loc, sk.sig)
        if p.edits.enabled:
            edit[s:s + step] = engine.check_pairs("edits", sk.norm, loc)
    return jac, est, edit


# ---------------------------------------------------------------------------
# The stage


class _Laps:
    """``lap(name)``: the seconds and peak RSS since the previous lap, into ``stats``."""

    def __init__(self, stats: dict):
        self.stats, self.clock = stats, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.stats[f"{name}_s"] = round(now - self.clock, 3)
        self.stats[f"{name}_peak_mb"] = _peak_mb()
        log.debug("%s: %.1f s, peak RSS so far %s MB", name, now - self.clock, self.stats[f"{name}_peak_mb"])
        self.clock = now


@contextlib.contextmanager
def _scanned(path: Path, p: DedupParams, chunk_rows: int, tmp_dir, lap, engine=None):
    """(scan, reader, texts) of ``path``, its spill files in a temporary directory removed on the way out."""
    from ..io import sweep_stale

    sweep_stale(tmp_dir or tempfile.gettempdir(), "sftpipe-dedup-")   # spill files of a killed run
    with tempfile.TemporaryDirectory(prefix=f"sftpipe-dedup-{os.getpid()}.", dir=tmp_dir) as tmp:
        scan = _Scan(Path(tmp), p, engine)
        scan.run(path, chunk_rows)
        lap("scan")
        reader = _Reader(path, scan.offsets, scan.lengths)
        texts = _Texts(Path(tmp) / "norm.utf8", scan.norm_bytes) if scan.keep_norm else None
        try:
            yield scan, reader, texts
        finally:
            reader.close()
            if texts is not None:
                texts.close()


def groups_jsonl(inp_path, dedup_params: DedupParams, threshold: float, chunk_rows: int = CHUNK_ROWS,
                 tmp_dir=None) -> np.ndarray:
    """``clusters.near_duplicate_groups`` of the rows' whole text (``schema.full_text``) at ``threshold``,
    streaming: a group number per row, 0, 1, ... in order of each group's first row. Holds the scan's
    per-row arrays, never the records."""
    p = dedup_params.model_copy(update={"exact": True, "near": True, "field": "all", "threshold": threshold,
                                        "semantic": dedup_params.semantic.model_copy(update={"enabled": False})})
    path = Path(inp_path)
    if not path.is_file():
        _reader_error(path)
    stats: dict = {}
    lap = _Laps(stats)
    with _scanned(path, p, chunk_rows, tmp_dir, lap) as (scan, reader, texts):
        comp = _find(scan, reader, texts, p, stats, lap).component
    return np.searchsorted(sorted_unique(comp), comp)


def _find(scan: _Scan, reader: _Reader, texts, p: DedupParams, stats: dict, lap) -> SimpleNamespace:
    """Exact groups, candidate pairs (word MinHash, typo signatures), the slot check and the connected
    components of a scanned file: what both the dedup stage and split's groups (:func:`groups_jsonl`) need."""
    n = scan.n
    threshold = float(p.threshold)
    exact_rep = _exact_reps(scan.text_hash) if p.exact else np.arange(n, dtype=np.int64)
    pairs = np.zeros((0, 2), dtype=np.int64)
    sim, ok, kind, slot = np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int8), []
    component = exact_rep
    if p.near:
        uniq = exact_rep == np.arange(n)
        pairs, sim = _word_pairs(scan, reader, np.flatnonzero(uniq & scan.shingled), stats)
        ok = sim >= threshold
        kind = np.zeros(len(pairs), dtype=np.int8)
        lap("word_pairs")
        if p.edits.enabled:
            pe, se = _edit_pairs(scan, texts, np.flatnonzero(uniq & (scan.norm_len > 0)), stats)
            pairs, sim = np.concatenate([pairs, pe]), np.concatenate([sim, se])
            ok = np.concatenate([ok, np.ones(len(pe), dtype=bool)])
            kind = np.concatenate([kind, np.ones(len(pe), dtype=np.int8)])
            lap("edit_pairs")
        slot = [None] * len(pairs)
        if p.slot_check and ok.any():
            idx = np.flatnonzero(ok)
            distinct, inverse = np.unique(pairs[idx], axis=0, return_inverse=True)
            reasons: list = []
            for s in range(0, len(distinct), CHUNK_ROWS):
                blk = distinct[s:s + CHUNK_ROWS]
                rows = sorted_unique(blk.ravel())
                reasons += scan.engine.check_pairs("slots", texts.get(rows), _local(rows, blk))
            for k, r in zip(idx.tolist(), inverse.ravel().tolist()):
                slot[k] = reasons[r]
            ok[idx] = [slot[k] is None for k in idx.tolist()]
            lap("slot_check")
        component = union_find(n, pairs[ok])[exact_rep]
    return SimpleNamespace(exact_rep=exact_rep, pairs=pairs, sim=sim, ok=ok, kind=kind, slot=slot,
                           component=component)


def dedup_jsonl(inp_path, out_dir, metrics_path, dedup_params: DedupParams, chunk_rows: int = CHUNK_ROWS,
                tmp_dir=None, stats: dict | None = None, engine=None) -> tuple[dict, dict]:
    """The dedup stage from ``inp_path`` (JSONL) to ``out_dir`` and ``metrics_path``, streaming.

    Writes what ``ledger.write_filter_outputs("dedup", records, clusters.dedup_records(records,
    dedup_params), out_dir, metrics_path)`` writes for ``records = io.read_jsonl(inp_path)``, byte
    for byte, holding compact per-row arrays instead of the records. ``chunk_rows``: records per scan chunk; spilled
    arrays go to a temporary directory under ``tmp_dir`` (default: the system's). ``stats``,
    when given, receives timings and pair counts. ``engine``: where the heavy steps run (None: a
    ``clusters.LocalEngine``; a ``ray_engine.RayEngine`` runs the signatures of the scan and of the rows
    read back, the band candidates, the pair checks and the paraphrase pass's request clusters and group
    checks as Ray tasks); the same bytes either way. Returns (metrics, details).
    """
    p = dedup_params
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    stats = {} if stats is None else stats
    path = Path(inp_path)
    if not path.is_file():
        _reader_error(path)
    lap = _Laps(stats)
    with _scanned(path, p, chunk_rows, tmp_dir, lap, engine) as (scan, reader, texts):
        n = stats["rows"] = scan.n
        threshold = float(p.threshold)
        found = _find(scan, reader, texts, p, stats, lap)
        exact_rep, component, ok, kind = found.exact_rep, found.component, found.ok, found.kind
        slot_count = Counter(r for r in found.slot if r is not None)
        pair_counts = {"candidate_pairs": int((kind == 0).sum()), "accepted_pairs": int((ok & (kind == 0)).sum()),
                       "verified_pairs": int((ok & (kind == 0)).sum()) if p.verify else 0,
                       "edit_pairs": int((ok & (kind == 1)).sum()), "slot_rejected_pairs": int(sum(slot_count.values()))}
        # from here on only the accepted pairs count (the evidence): the candidates' arrays go
        acc = np.flatnonzero(ok)
        pairs, sim, kind = found.pairs[acc], found.sim[acc], kind[acc]
        del found, ok, acc
        sem_pairs, sem_cos, sem_ev = np.zeros((0, 2), dtype=np.int64), np.zeros(0), []
        if scan.sem is not None and n >= 2:
            sem_pairs, sem_cos, sem_ev = _semantic_pairs(scan, reader, n)
            if len(sem_pairs):
                component = union_find(n, np.concatenate([np.stack([np.arange(n), component], axis=1), sem_pairs]))
            lap("semantic")
        survivor, members, member_ids = _pick_survivors(path, reader, component, p)
        lap("survivors")

        def id_of(rows):
            return [member_ids[k] for k in np.searchsorted(members, rows).tolist()]

        dropped = np.flatnonzero(survivor != np.arange(n))
        exact = (scan.text_hash[dropped] == scan.text_hash[survivor[dropped]]).all(axis=1)
        near_rows = dropped[~exact]
        jac, est, edit = _near_evidence(reader, near_rows, survivor[near_rows], p, scan.engine) if p.near \
            else ((),) * 3
        has_match, m_mask, m_partner, m_sim, m_entry = _best_matches(
            np.concatenate([pairs, sem_pairs]), np.concatenate([kind, np.full(len(sem_pairs), 2, np.int8)]),
            np.concatenate([sim, sem_cos]), survivor, exact_rep, near_rows)
        m_entry -= len(pairs)                   # >= 0: a semantic pair, its evidence is sem_ev[m_entry]
        lap("evidence")

        # per dropped row, in input order: its kept row's id; per near row: its strongest match
        kept_ids = id_of(survivor[dropped])
        partner_ids = id_of(m_partner[has_match])
        match_id = iter(partner_ids)
        size = np.bincount(component, minlength=n)
        reasons_count: Counter = Counter()
        out = Path(out_dir)
        with atomic_path(out / "kept.jsonl") as tk, atomic_path(out / "dropped.jsonl") as td, \
                open(tk, "w", encoding="utf-8", newline="\n") as fk, \
                open(td, "w", encoding="utf-8", newline="\n") as fd:
            i = -1
            d = k = n_kept = 0
            id_sum = 0
            for i, (_, _, rec) in enumerate(_records(path)):
                if i >= n or _id_hash(rec) != scan.id_hash[i:i + 1].tobytes():
                    raise UserError(f"{path}: changed while dedup was reading it (row {i + 1})")
                id_sum += int(scan.id_hash[i])
                if survivor[i] == i:
                    rec["meta"] = {**rec.get("meta", {}), "dedup_cluster": rec["id"],
                                   "dedup_cluster_size": int(size[component[i]])}
                    fk.write(dumps(rec))
                    fk.write("\n")
                    n_kept += 1
                    continue
                ev = {"kept_id": kept_ids[d], "cluster_size": int(size[component[i]]),
                      "jaccard": 1.0, "threshold": threshold}
                reason = "exact_duplicate"
                if not exact[d]:
                    reason = "near_duplicate"
                    ev["jaccard"] = round(float(jac[k]), 4)
                    ev["minhash_estimate"] = round(float(est[k]), 4)
                    if p.edits.enabled:
                        ev["edit_similarity"] = round(float(edit[k]), 4)
                    if has_match[k]:
                        by = sorted(name for b, name in enumerate(MATCHES) if m_mask[k] >> b & 1)
                        ev.update(matched_by=by, matched_id=next(match_id), similarity=round(float(m_sim[k]), 4))
                        if by == ["semantic"]:
                            reason = "paraphrase"
                            ev["rule"] = sem_ev[int(m_entry[k])]
                    k += 1
                fd.write(dumps(ledger.drop(rec, STAGE, reason, **ev)))
                fd.write("\n")
                reasons_count[reason] += 1
                d += 1
            expected = int(scan.id_hash.sum(dtype=np.uint64))
            if i + 1 != n or n_kept + d != n or id_sum % (1 << 64) != expected:
                raise AccountingError(f"{STAGE}: kept ({n_kept}) + dropped ({d}) != input ({n}), or the "
                                      f"ids written are not the ids read")
        lap("write")

    cluster_sizes = size[size > 0]
    hist = Counter(cluster_sizes.tolist())
    metrics = {
        "clusters": int((cluster_sizes > 1).sum()),
        "rows_in_clusters": int(cluster_sizes[cluster_sizes > 1].sum()),
        "largest_cluster": int(cluster_sizes.max()) if len(cluster_sizes) else 0,
        "exact_duplicates": int(exact.sum()),
        "near_duplicates": reasons_count["near_duplicate"],
        "paraphrases": reasons_count["paraphrase"],
        "bands": scan.bands, "band_rows": scan.rows, "threshold": threshold,
        **pair_counts,
        "semantic_pairs": int(len(sem_pairs)),
    }
    details = {"cluster_size_hist": {str(k): hist[k] for k in sorted(hist)},
               "slot_rejected_by": {k: slot_count[k] for k in sorted(slot_count)}}
    write_json(Path(out_dir) / "details.json", details)
    # ledger.counts reads only the lengths and the reasons of the dropped rows
    shadow = ledger.FilterResult(kept=range(n_kept), dropped=[x for r, c in reasons_count.items()
                                                              for x in [{"reason": r}] * c],
                                 extra_metrics=metrics)
    m = ledger.counts(n, shadow)
    write_json(metrics_path, m)
    lap("finish")
    return m, details
