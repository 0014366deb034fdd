"""Semantic dedup: rows that ask the same thing in other words and get the same answer.

SemDeDup-shaped (NeMo-Curator: embed, then pairs at a cosine threshold inside blocks), but the blocks
are the rule's own: a paraphrase needs the same normalized answer and the same numbers (rules 1 and 2
below; a label answer also the same task input, rule 4), so rows are grouped on 64-bit hashes of
those (:func:`row_keys`, :func:`candidate_groups`) and only pairs inside a group are compared: every
pair of a group whose embedding cosine reaches ``threshold``, then rule 3. Choosing the row to keep
from each group is up to the caller. The blocks are exact (no pair outside them can pass rule 1),
need no fit over every row, and let the pass stream (:func:`find_pairs` reads back the rows of a
batch of groups at a time; ``dedup/stream.py``).

Before, the blocks were k-means clusters of every row's embedding (round(sqrt(rows)) clusters); on
the pipeline's 5,244 rows the pairs are the same, bit for bit, and on the dupbench (seeds 0/1/2)
the same but one more true pair on seed 0 (a typo copy whose answer k-means had put in another
cluster). What is embedded: the answers (``field="response"``, the default); with answer blocks any
field works (dupbench recall: prompt 0.967, all 0.950 at thresholds 0.3/0.5; with k-means blocks
over prompts, 0.05: a paraphrase rewords the prompt, so k-means split them). Every method embeds
the canonical text (NFKC, case-folded, runs of non-alphanumerics as one space), each distinct text
once, so equal texts have bit-equal vectors.

Fits. The TF-IDF embedder (``tfidf``: character 1-3-grams + TruncatedSVD, seeded) and the request
clusters of rule 3 are fitted on ``fit_rows`` rows (:func:`fit_rows_of`: all rows up to it, else
rows evenly spaced through the input); other rows are transformed / assigned to their nearest
cluster. Up to ``fit_rows`` rows the result is that of fitting on every row. Sampling costs recall,
not precision: on the dupbench (4,820 rows) with ``fit_rows`` 2,000, recall 0.910/0.933/0.977 instead
of 0.983/0.973/0.980 and precision 1.0000 (fewer request clusters, k = sqrt(fit rows), merge
templates, so fewer template tokens and a stricter rule 3).

The rule. A paraphrase is "the same request in other words WITH THE SAME ANSWER":

1. **same answer**: the assistant turns are equal after :func:`normalize_text` (NFKC,
   case-folded, letters and digits only, so "a, b, c" equals "a b c"). An answer cosine
   >= 0.98 (tfidf, 128 dims) in place of this gave precision 0.910 (>= 0.95: 0.196),
   because SVD-compressed character n-grams make unrelated long Chinese texts look alike;
2. **same numbers**: the digit runs of request and answer are equal as multisets;
3. **same request content**: every *content token* of each request occurs in the other
   request. Tokens are words, or single characters for CJK. A token is *template* for a
   row when it occurs in at least ``template_share`` of the requests in the row's request
   cluster (k-means on TF-IDF of the fit rows' requests, which groups the rows of one prompt
   template; clusters under ``min_template_rows`` rows have no template tokens). All other
   tokens are content. This rule keeps "Tom has 12 marbles and loses 4" apart from "Rosa has
   12 marbles and loses 4", although both answers read "12 - 4 = 8. There are 8 marbles
   left." Without it, precision was 0.968;
4. **a label needs the same task input**: an answer given to at least ``label_rows``
   distinct requests (a label: "positive", "Yes.") says little about the request. So both
   requests must have a task input (:func:`task_input`: the quoted spans, else the text
   after the first ':' / '?' / newline), and the two inputs must be equal. Two reviews
   with the answer "positive" are paired only if they have the same review text. Without
   this rule, precision was 0.954, with 5 one-slot pairs ("The X was Y." vs "The X was Y.
   I would recommend it.", whose extra sentence reads as template).

Defaults (``SemanticParams``): method ``tfidf`` (character 1-3-grams within word boundaries,
the label-noise featurizer, + TruncatedSVD to ``dims=128``, seeded); ``n_clusters``
round(sqrt(fit rows)) request clusters; ``threshold`` 0.9 (equal answers have cosine 1, so
under rule 1 it only prunes candidates); ``template_share`` 0.2 (0.1: one pair that differs only
in the name got through; 0.3: recall 0.95); ``label_rows`` 5; ``fit_rows`` 100,000.

Measured on dupbench seeds 0/1/2 (4,820 rows each, bench/semantic_dedup.py): paraphrase
recall en 0.973/0.953/0.993, zh 0.993/0.993/0.967; precision 1.0000 on every seed;
0 one-slot pairs; 0.74 s per 1,000 rows for tfidf on 2 busy CPU cores (about 1 s with the
k-means blocks), and about 11 s per 1,000 rows for ``base_model`` with models/base on CPU when
every row was embedded (now only the candidate groups' rows are). Typo copies are mostly not found
(their answers carry typos). They are MinHash's job.

Everything is a pure function of the rows and ``seed`` (seeded SVD and k-means).
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import UserError
from ..schema import response_text

__all__ = ["SemanticParams", "embed", "semantic_pairs", "find_pairs", "row_keys", "RowKeys", "candidate_groups",
           "fit_rows_of", "evidence", "request_text", "answer_text", "normalize_text", "task_input", "numbers",
           "tokens", "METHODS"]

METHODS = ("tfidf", "base_model", "sentence_transformers")
_BLOCK_CELLS = 1 << 25      # cells per block of a cluster's similarity matrix (128 MiB of float32)


@dataclass(frozen=True)
class SemanticParams:
    """Knobs of the semantic pass (to move into sftpipe.config as a pydantic section)."""
    method: Literal["tfidf", "base_model", "sentence_transformers"] = "tfidf"
    model: str | None = None          # base_model: a local causal LM dir; sentence_transformers: path or hub id
    field: Literal["response", "prompt", "all"] = "response"    # what is embedded and clustered
    dims: int = 128                   # tfidf: TruncatedSVD components
    n_clusters: int | None = None     # None: round(sqrt(rows)), for the candidates and the request templates
    threshold: float = 0.9            # cosine of a candidate pair, inside one cluster
    template_share: float = 0.2       # a token in >= this share of its request cluster is template
    min_template_rows: int = 5        # smaller request clusters have no template tokens
    label_rows: int = 5               # an answer given to >= this many distinct requests is a label
    min_input_units: int = 3          # a shorter task input counts as none
    seed: int = 0
    batch_size: int = 64              # model methods
    fit_rows: int = 100_000           # rows the TF-IDF embedder and the request clusters are fitted on (evenly spaced)

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"semantic.method: unknown method {self.method!r} (one of {', '.join(METHODS)})")
        if self.field not in ("response", "prompt", "all"):
            raise UserError(f"semantic.field: {self.field!r} is not one of response, prompt, all")
        if not -1.0 <= self.threshold <= 1.0:
            raise UserError(f"semantic.threshold: {self.threshold} is not a cosine in [-1, 1]")
        if not 0.0 < self.template_share <= 1.0:
            raise UserError(f"semantic.template_share: {self.template_share} is not in (0, 1]")
        if self.dims < 1 or self.batch_size < 1 or self.fit_rows < 1 or \
                (self.n_clusters is not None and self.n_clusters < 1):
            raise UserError("semantic.dims, semantic.batch_size, semantic.fit_rows and semantic.n_clusters must be >= 1")


def _params(params) -> SemanticParams:
    """A SemanticParams from None, a SemanticParams, or any object with the same attributes
    (e.g. the pydantic section this dataclass will become)."""
    if params is None:
        return SemanticParams()
    if isinstance(params, SemanticParams):
        return params
    return SemanticParams(**{f.name: getattr(params, f.name) for f in fields(SemanticParams)
                             if hasattr(params, f.name)})


# ---------------------------------------------------------------------------
# Texts


def request_text(rec: dict) -> str:
    """The user turns, joined by newlines (a system prompt is shared by many rows: left out)."""
    return "\n".join(m["content"] for m in rec["messages"] if m["role"] == "user")


def answer_text(rec: dict) -> str:
    """The assistant turns (reasoning, text and tool calls), joined by newlines."""
    return response_text(rec)


_OTHER = re.compile(r"[\W_]+")      # anything but letters and digits (\w without the underscore)


def normalize_text(text: str) -> str:
    """NFKC, case-folded, letters and digits only: 'a, b, c' == 'A B C' == 'abc'."""
    return _OTHER.sub("", unicodedata.normalize("NFKC", text).casefold())


def _spaced(text: str) -> str:
    """NFKC, case-folded, every run of other characters one space (what the embedders see)."""
    return _OTHER.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


_DIGITS = re.compile(r"\d+")
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff]|[^\W_\u3400-\u4dbf\u4e00-\u9fff"
                    r"\uf900-\ufaff\u3040-\u30ff]+")


def numbers(text: str) -> tuple[str, ...]:
    """The digit runs of ``text`` (NFKC first: full-width digits count), leading zeros dropped, sorted."""
    return tuple(sorted(m.lstrip("0") or "0" for m in _DIGITS.findall(unicodedata.normalize("NFKC", text))))


def tokens(text: str) -> list[str]:
    """Words, and single CJK characters (Chinese has no spaces), case-folded."""
    return _TOKEN.findall(_spaced(text))


_QUOTED = re.compile(r'"([^"\n]+)"|“([^”]+)”|「([^」]+)」|『([^』]+)』')
_DELIM = re.compile(r"[:：?？\n]")


def task_input(request: str) -> str:
    """The part of a request that is the task's input, normalized; '' when there is none.

    The quoted spans when there are any ('How do you say "red cat" in Chinese?'), else the
    text after the first ':', '?' or newline, full-width forms too ('Classify the review: ...',
    'Is this review positive?\\n...').
    """
    quoted = ["".join(m.groups("")) for m in _QUOTED.finditer(request)]
    quoted = [q for q in quoted if normalize_text(q)]
    if quoted:
        return normalize_text(" ".join(quoted))
    text = request.strip()
    m = _DELIM.search(text)
    return normalize_text(text[m.end():]) if m else ""


def _units(norm: str) -> int:
    """Length in letters, a CJK character counting 3 (about one word, like an English word's letters)."""
    return sum(3 if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" else 1 for ch in norm)


# ---------------------------------------------------------------------------
# Embeddings


def _tfidf_embed(texts: list[str], dims: int, seed: int) -> np.ndarray:
    return _TfidfEmbedder(texts, dims, seed).fitted


class _TfidfEmbedder:
    """TF-IDF of character 1-3-grams + TruncatedSVD to ``dims``, fitted on ``texts`` (distinct). ``fitted``:
    their rows (what ``fit_transform`` gives); calling it embeds other texts with the same fit."""

    def __init__(self, texts: list[str], dims: int, seed: int):
        from sklearn.decomposition import TruncatedSVD

        self.vec, X = _tfidf(texts)
        self.svd = None
        if X is None:
            self.fitted = np.zeros((len(texts), 1), dtype=np.float32)
            return
        k = min(dims, X.shape[1] - 1, len(texts) - 1)
        if k < 2:
            self.fitted = X.toarray()
            return
        self.svd = TruncatedSVD(k, algorithm="randomized", random_state=seed)
        self.fitted = self.svd.fit_transform(X)

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self.vec is None:
            return np.zeros((len(texts), 1), dtype=np.float32)
        X = self.vec.transform([_spaced(t) for t in texts])
        return self.svd.transform(X) if self.svd is not None else X.toarray()


def _tfidf(texts: list[str]):
    """(vectorizer, sparse matrix): TF-IDF over character 1-3-grams inside word boundaries (the label-noise
    featurizer; works for Chinese and English alike); (None, None) when no text has a feature."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from ..label_noise import tfidf_vectorizer

    spaced = [_spaced(t) for t in texts]
    vec = tfidf_vectorizer() if len(spaced) > 1 else TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3),
                                                                      dtype=np.float32)
    try:
        X = vec.fit_transform(spaced)
    except ValueError:                       # empty vocabulary: every text empty, or n-grams all once
        vec = X = None
    return vec, X


def _model_embed(texts: list[str], model: str | None, batch_size: int, engine: str = "local", actors=None,
                 max_retries: int = 3, section: str = "semantic.ray") -> np.ndarray:
    from ..label_noise import embedding_features

    if not model:
        raise UserError("semantic.method is 'base_model' but semantic.model (a local model directory) is not set")
    if not Path(model).is_dir():
        raise UserError(f"semantic.model: {model} is not a local directory (method 'base_model' loads a causal "
                        f"LM from disk, e.g. models/base)")
    try:
        if engine == "ray":
            return _ray_model_embed(texts, str(Path(model).resolve()), batch_size, actors, max_retries, section)
        return embedding_features(texts, str(model), batch_size=batch_size)
    except UserError as e:                   # its message names label_noise's param
        if not str(e).startswith("label_noise."):
            raise
        raise UserError(f"semantic.model: {str(e).split(': ', 1)[-1]}") from None


class _EmbedActor:
    """A Ray actor holding one copy of the embedding model: embeds the batches the driver sends."""

    def __init__(self, model: str, threads: int, fault: str | None):
        import torch

        from ..label_noise import load_embedder

        torch.set_num_threads(threads)
        self.tok, self.model = load_embedder(model)
        self.fault = fault

    def embed(self, texts: list[str]) -> np.ndarray:
        from ..label_noise import embed_batch
        from ..ray_session import die_if_asked

        die_if_asked(self.fault)
        return embed_batch(self.tok, self.model, texts)


def _ray_model_embed(texts: list[str], model: str, batch_size: int, actors, max_retries: int,
                     section: str) -> np.ndarray:
    """:func:`~sftpipe.label_noise.embedding_features` on a pool of Ray actors (``actors``: an
    :class:`~sftpipe.config.ActorPoolParams`, the params section ``section``), each loading ``model`` once:
    the driver cuts the very batches the local path cuts (consecutive, in order), an idle actor takes the
    next one, and the rows come back in input order, so the floats are the local ones whatever the number
    of actors. An actor whose process dies is restarted and its batch retried, up to ``max_retries``
    times. Uses the connected Ray (the stage's ``ray_session``), else starts a local one for the call."""
    from ..config import ActorPoolParams, RayParams
    from ..label_noise import embedding_batches
    from ..ray_session import check_pool_fits, fault_for, ray, ray_errors, ray_session

    actors = actors if actors is not None else ActorPoolParams()
    stage = section.split(".")[0]
    batches = [[texts[i] for i in b] for b in embedding_batches(len(texts), batch_size)]
    with ray_session(RayParams(max_retries=max_retries), stage):
        from ray.util import ActorPool

        check_pool_fits(section, actors)
        cls = ray.remote(_EmbedActor).options(num_cpus=actors.num_cpus_per_actor, num_gpus=actors.num_gpus_per_actor,
                                              max_restarts=max_retries, max_task_retries=max_retries)
        fault = fault_for("embed")
        pool = [cls.remote(model, actors.num_cpus_per_actor, fault) for _ in range(min(actors.actors, len(batches)))]
        try:
            with ray_errors(stage, "embedding a batch", max_retries):
                return np.concatenate(list(ActorPool(pool).map(lambda a, b: a.embed.remote(b), batches)))
        finally:
            for a in pool:
                ray.kill(a, no_restart=True)


def _st_embed(texts: list[str], model: str | None, batch_size: int) -> np.ndarray:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError("semantic.method 'sentence_transformers' needs the sentence-transformers package, which "
                        "is not installed: pip install sentence-transformers") from None
    if not model:
        raise UserError("semantic.method is 'sentence_transformers' but semantic.model (a path or hub id) is not set")
    try:
        encoder = SentenceTransformer(str(model))
    except (OSError, ValueError) as e:
        raise UserError(f"semantic.model: cannot load {model}: {str(e).splitlines()[0]}") from None
    return encoder.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)


def embed(texts: list[str], method: str = "tfidf", model: str | None = None, seed: int = 0, *,
          dims: int = SemanticParams.dims, batch_size: int = SemanticParams.batch_size, engine: str = "local",
          actors=None, max_retries: int = 3, section: str = "semantic.ray") -> np.ndarray:
    """One L2-normalized float32 row per text; a text without features gets a zero row.
    Equal texts are embedded once, so their rows are bit-identical.

    * ``tfidf``: TF-IDF of character 1-3-grams (within words) + TruncatedSVD to ``dims``, seeded;
    * ``base_model``: mean-pooled last hidden states of a local causal LM directory (e.g. models/base;
      safetensors, no remote code, eval mode, batched, no gradients);
    * ``sentence_transformers``: ``SentenceTransformer(model).encode`` (path or hub id; the package is
      optional and not a dependency).

    ``engine="ray"``: ``base_model`` embeds on a pool of Ray actors (``actors``: an
    :class:`~sftpipe.config.ActorPoolParams`, ``section`` its params section for messages, ``max_retries``
    restarts of a dead actor), the local batches, so bit-identical rows; ``tfidf`` (one global fit) and
    ``sentence_transformers`` run here either way.
    """
    if method not in METHODS:
        raise UserError(f"semantic.method: unknown method {method!r} (one of {', '.join(METHODS)})")
    if not texts:
        return np.zeros((0, 1), dtype=np.float32)
    first: dict[str, int] = {}                  # equal texts are embedded once: bit-equal rows
    inverse = np.fromiter((first.setdefault(t, len(first)) for t in texts), dtype=np.int64, count=len(texts))
    uniq = list(first)
    if method == "tfidf":
        X = _tfidf_embed(uniq, dims, seed)
    elif method == "base_model":
        X = _model_embed(uniq, model, batch_size, engine, actors, max_retries, section)
    else:
        X = _st_embed(uniq, model, batch_size)
    return _normalized(X)[inverse]


# ---------------------------------------------------------------------------
# Request clusters (template tokens)


def n_clusters_for(n: int, params: SemanticParams) -> int:
    """``n_clusters`` when set, else round(sqrt(n)); never more than ``n``."""
    if n == 0:
        return 0
    k = params.n_clusters if params.n_clusters is not None else round(math.sqrt(n))
    return max(1, min(int(k), n))


def _kmeans(X, k: int, seed: int):
    """Seeded k-means: (labels, fitted model); one cluster (model None) when k <= 1."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    n = X.shape[0]
    if k <= 1 or n <= 1:
        return np.zeros(n, dtype=np.int64), None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)     # fewer distinct rows than clusters
        model = KMeans(k, n_init=1, random_state=seed)
        return model.fit_predict(X).astype(np.int64), model


def _members(labels: np.ndarray) -> list[np.ndarray]:
    """Row indices of each cluster, ascending."""
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if len(order) else []


class _Templates:
    """Rule 3's template tokens: k-means on TF-IDF of the fit rows' requests (``n_clusters_for`` their
    number of clusters); a token is template in a cluster when it occurs in ``template_share`` of its
    requests. A request of another row goes to its nearest cluster."""

    def __init__(self, requests: list[str], params: SemanticParams):
        self.params = params
        self.vec, X = _tfidf(requests)
        if X is not None:
            # the vectorizer's column remap leaves each row's indices unsorted, and k-means++ then sorts a copy
            # of its rows at every centre it draws (45 of 73 s of the init at 100k rows); sorted once, the
            # centres and labels are the same bits (checked on the sample and on 30k generated rows)
            X.sort_indices()
        self.labels, self.model = (_kmeans(X, n_clusters_for(len(requests), params), params.seed) if X is not None
                                   else (np.zeros(len(requests), dtype=np.int64), None))
        toks = [set(tokens(q)) for q in requests]
        self.template: dict[int, set] = {}
        for members in _members(self.labels):
            if len(members) < params.min_template_rows:
                self.template[int(self.labels[members[0]])] = set()
                continue
            df = Counter(t for i in members.tolist() for t in toks[i])
            self.template[int(self.labels[members[0]])] = {t for t, v in df.items()
                                                           if v >= params.template_share * len(members)}

    def content(self, requests: list[str], fit_pos: np.ndarray) -> list[tuple[set, set]]:
        """(tokens, content tokens) per request; ``fit_pos``: its position among the fit rows, -1 if none."""
        labels = np.where(fit_pos >= 0, self.labels[np.maximum(fit_pos, 0)], 0) if len(self.labels) else \
            np.zeros(len(requests), dtype=np.int64)
        other = np.flatnonzero(fit_pos < 0)
        if len(other) and self.model is not None:
            labels[other] = self.model.predict(self.vec.transform([_spaced(requests[i]) for i in other.tolist()]))
        toks = [set(tokens(q)) for q in requests]
        return [(t, t - self.template.get(int(c), set())) for t, c in zip(toks, labels.tolist())]


# ---------------------------------------------------------------------------
# The rule


def _h64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def embedded_text(request: str, answer: str, field: str) -> str:
    """What is embedded for a row (``field``), as the embedders see it."""
    return _spaced({"response": answer, "prompt": request}.get(field, request + "\n" + answer))


@dataclass
class RowKeys:
    """Per row, what the rule compares, hashed (64-bit BLAKE2b of the normalized texts)."""
    answer: np.ndarray      # uint64: the normalized answer (rule 1)
    nums: np.ndarray        # uint64: the numbers of request and answer (rule 2)
    request: np.ndarray     # uint64: the normalized request (how many distinct requests an answer has: rule 4)
    inp: np.ndarray         # uint64: the normalized task input (rule 4)
    has_input: np.ndarray   # bool: the task input is long enough to count
    has_text: np.ndarray    # bool: the embedded text has a letter or a digit

    @classmethod
    def concat(cls, parts: list["RowKeys"]) -> "RowKeys":
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) if parts else
                     np.zeros(0, dtype=bool if f.name.startswith("has_") else np.uint64) for f in fields(cls)))


def row_keys(requests: list[str], answers: list[str], params: SemanticParams) -> RowKeys:
    """:class:`RowKeys` of rows given by their requests and answers (:func:`request_text`, :func:`answer_text`)."""
    def u64(values):
        return np.fromiter(values, dtype=np.uint64, count=len(requests))

    inputs = [task_input(q) for q in requests]
    return RowKeys(
        answer=u64(_h64(normalize_text(a)) for a in answers),
        nums=u64(_h64(repr((numbers(q), numbers(a)))) for q, a in zip(requests, answers)),
        request=u64(_h64(normalize_text(q)) for q in requests),
        inp=u64(_h64(s) for s in inputs),
        has_input=np.fromiter((_units(s) >= params.min_input_units for s in inputs), dtype=bool, count=len(inputs)),
        has_text=np.fromiter((bool(embedded_text(q, a, params.field)) for q, a in zip(requests, answers)),
                             dtype=bool, count=len(requests)))


def candidate_groups(keys: RowKeys, params: SemanticParams):
    """Rows that rules 1, 2 and 4 allow to pair, as groups: (rows, starts, weak). ``rows`` ascending inside each
    group, ``starts`` where each group of two or more rows begins (and its end), ``weak`` per row: its answer
    is a label (given to ``label_rows`` or more distinct requests), so its group also shares the task input.
    A row whose embedded text is empty has a zero embedding: no cosine reaches a positive threshold."""
    n = len(keys.answer)
    asked = np.unique(np.stack([keys.answer, keys.request], axis=1), axis=0)
    answers, askers = np.unique(asked[:, 0], return_counts=True)
    weak = askers[np.searchsorted(answers, keys.answer)] >= params.label_rows if n else np.zeros(0, dtype=bool)
    eligible = ~weak | keys.has_input
    if params.threshold > 0:
        eligible &= keys.has_text
    idx = np.flatnonzero(eligible)
    inp = np.where(weak[idx], keys.inp[idx], np.uint64(0))
    order = np.lexsort((idx, inp, keys.nums[idx], keys.answer[idx]))
    rows, inp = idx[order], inp[order]
    a, m = keys.answer[rows], keys.nums[rows]
    new = np.concatenate([[True], (a[1:] != a[:-1]) | (m[1:] != m[:-1]) | (inp[1:] != inp[:-1])]) if len(rows) \
        else np.zeros(0, dtype=bool)
    starts = np.append(np.flatnonzero(new), len(rows))
    sizes = np.diff(starts)
    rows = rows[np.repeat(sizes >= 2, sizes)]
    sizes = sizes[sizes >= 2]
    return rows, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), weak


def fit_rows_of(n: int, params: SemanticParams) -> np.ndarray:
    """The rows the TF-IDF embedder and the request clusters are fitted on: every row up to ``fit_rows``,
    else ``fit_rows`` rows evenly spaced through the input."""
    if n <= params.fit_rows:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.arange(params.fit_rows, dtype=np.int64) * n // params.fit_rows)


GROUP_ROWS = 32768      # candidate rows whose texts are held at once (whole groups)


def find_pairs(n: int, keys: RowKeys, fetch, params=None, return_evidence: bool = False, **engine):
    """The semantic pairs of ``n`` rows given their :class:`RowKeys` and ``fetch(rows) -> (requests, answers)``
    for ascending row numbers; see :func:`semantic_pairs`. Holds the texts of the fit rows
    (:func:`fit_rows_of`) and of one batch of candidate groups at a time, never all the rows'.

    With ``engine="ray"`` (the connected Ray of the dedup stage's session, else a local one for the call)
    the request templates are fitted in a Ray task while the driver fits the TF-IDF embedder, and each
    batch's checks (:func:`_batch_pairs`: the TF-IDF embedding of rows past the fit, the cosines inside
    each group, the template rule) run as one Ray task, a few in flight, their answers taken in batch
    order: the pairs are the local ones. The driver keeps the grouping, reading the texts back, the
    embedder's fit and model embeddings (``base_model`` on the actor pool)."""
    if engine.get("engine") == "ray":
        from ..config import RayParams
        from ..ray_session import ray_session

        with ray_session(RayParams(max_retries=engine.get("max_retries", 3)),
                         engine.get("section", "semantic.ray").split(".")[0]):
            return _find_pairs(n, keys, fetch, params, return_evidence, engine)
    return _find_pairs(n, keys, fetch, params, return_evidence, engine)


def _find_pairs(n: int, keys: RowKeys, fetch, params, return_evidence: bool, engine: dict):
    params = _params(params)
    empty = (np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float64))
    rows, starts, weak = candidate_groups(keys, params) if n >= 2 else (np.zeros(0, np.int64), np.zeros(1, np.int64),
                                                                         np.zeros(n, dtype=bool))
    if not len(rows):
        return (*empty, []) if return_evidence else empty
    fit = fit_rows_of(n, params)
    fit_q, fit_a = fetch(fit)
    on_ray = engine.get("engine") == "ray"
    max_retries, section = engine.get("max_retries", 3), engine.get("section", "semantic.ray")
    # on Ray the templates fit in a task, beside the embedder's fit here; locally when first needed
    templates = _templates_on_ray(fit_q, params, max_retries) if on_ray else _LazyTemplates(fit_q, params)
    embedder = first = fitted = None
    if params.method == "tfidf":
        first = {}
        for q, a in zip(fit_q, fit_a):
            first.setdefault(embedded_text(q, a, params.field), len(first))
        embedder = _TfidfEmbedder(list(first), params.dims, params.seed)
        fitted = _normalized(embedder.fitted)

    def batches():
        g = 0
        while g < len(starts) - 1:
            h = g + 1                   # groups g..h-1 make a batch of about GROUP_ROWS rows
            while h < len(starts) - 1 and starts[h + 1] - starts[g] <= GROUP_ROWS:
                h += 1
            batch = rows[starts[g]:starts[h]]
            local = np.argsort(batch, kind="stable")
            q_sorted, a_sorted = fetch(batch[local])
            where = np.empty(len(batch), dtype=np.int64)
            where[local] = np.arange(len(batch))
            reqs = [q_sorted[k] for k in where.tolist()]
            ans = [a_sorted[k] for k in where.tolist()]
            X = None                    # None: _batch_pairs embeds with the fitted TF-IDF
            if embedder is None:
                X = embed([embedded_text(q, a, params.field) for q, a in zip(reqs, ans)], params.method, params.model,
                          params.seed, dims=params.dims, batch_size=params.batch_size, **engine)
            elif len(fit) == n:
                X = fitted[[first[embedded_text(q, a, params.field)] for q, a in zip(reqs, ans)]]
            pos = np.minimum(np.searchsorted(fit, batch), len(fit) - 1)
            fit_pos = np.where(fit[pos] == batch, pos, -1)
            yield batch, (reqs, ans, weak[batch], starts[g:h + 1] - starts[g], fit_pos, X)
            g = h

    if on_ray:
        answers = _ray_batch_pairs(batches(), embedder, templates, params, return_evidence, max_retries, section)
    else:
        answers = ((batch, _batch_pairs(*args, embedder, templates, params, return_evidence))
                   for batch, args in batches())
    out_p, out_c, out_e = [], [], []
    for batch, (cand, ccos, ev) in answers:
        if len(cand):
            out_p.append(batch[cand])
            out_c.append(ccos)
            out_e += ev
    if not out_p:
        return (*empty, []) if return_evidence else empty
    pairs, cos = np.concatenate(out_p), np.concatenate(out_c)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    pairs, cos = pairs[order], np.clip(cos[order], -1.0, 1.0)
    if return_evidence:
        return pairs, cos, [out_e[k] for k in order.tolist()]
    return pairs, cos


class _LazyTemplates:
    """The :class:`_Templates` of the fit rows' requests, fitted on the first call (a local pass without
    candidates never fits them)."""

    def __init__(self, fit_q: list[str], params: SemanticParams):
        self.fit_q, self.params, self._t = fit_q, params, None

    def __call__(self) -> "_Templates":
        if self._t is None:
            self._t = _Templates(self.fit_q, self.params)
        return self._t


def _batch_pairs(reqs: list[str], ans: list[str], weak: np.ndarray, bounds: np.ndarray, fit_pos: np.ndarray, X,
                 embedder, templates, params: SemanticParams, return_evidence: bool):
    """The checks of one batch of candidate groups (rows ``bounds[k]..bounds[k+1]-1`` make group k; ``fit_pos``:
    each row's position among the fit rows, -1 if none; ``X``: the rows' embeddings, or None to embed them
    with ``embedder``; ``templates()``: the :class:`_Templates`): (pairs as batch positions, their cosines,
    the evidence of each pair when asked for). Depends on the batch alone, wherever it runs."""
    if X is None:
        X = _normalized(embedder([embedded_text(q, a, params.field) for q, a in zip(reqs, ans)]))
    cand, ccos = [], []
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        p, c = _group_pairs(X[s:e], params.threshold)
        cand.append(p + s)
        ccos.append(c)
    cand, ccos = np.concatenate(cand), np.concatenate(ccos)
    if not len(cand):
        return cand, ccos, []
    used = np.unique(cand)
    content = dict(zip(used.tolist(), templates().content([reqs[i] for i in used.tolist()], fit_pos[used])))
    ok = np.array([content[i][1] <= content[j][0] and content[j][1] <= content[i][0]
                   for i, j in cand.tolist()], dtype=bool)
    cand, ccos = cand[ok], ccos[ok]
    ev = [_rule(reqs[i], ans[i], bool(weak[i])) for i in cand[:, 0].tolist()] if return_evidence else []
    return cand, ccos, ev


def _batch_task(args, embedder, templates, params, return_evidence, fault):
    from ..ray_session import die_if_asked

    die_if_asked(fault)
    return _batch_pairs(*args, embedder, lambda: templates, params, return_evidence)


def _templates_on_ray(fit_q: list[str], params: SemanticParams, max_retries: int):
    """A Ray task fitting :class:`_Templates` on ``fit_q``: its object ref (the batch tasks take it as it is)."""
    from ..ray_session import ray

    return ray.remote(num_cpus=1)(_fit_templates).options(max_retries=max_retries).remote(fit_q, params)


def _fit_templates(fit_q: list[str], params: SemanticParams) -> "_Templates":
    return _Templates(fit_q, params)


def _ray_batch_pairs(batches, embedder, templates, params, return_evidence: bool, max_retries: int, section: str):
    """(batch, :func:`_batch_pairs`' answer) of each of ``batches`` (batch rows, its arguments), the checks
    run as Ray tasks (the embedder put once in the object store; ``templates``: the ref of their fitting
    task), at most two per CPU in flight, the answers in batch order. A task whose worker dies is run
    again, up to ``max_retries`` times. Needs a connected Ray."""
    from collections import deque

    from ..ray_session import fault_for, in_order, ray, ray_errors

    stage = section.split(".")[0]
    task = ray.remote(num_cpus=1)(_batch_task).options(max_retries=max_retries)
    shared = [ray.put(embedder), templates, ray.put(params)]
    fault = fault_for("groups")
    waiting: deque = deque()        # the rows of each batch submitted, in order

    def submit(item):
        k, (batch, args) = item
        waiting.append(batch)
        return task.remote(args, *shared, return_evidence, fault if k == 0 else None)

    limit = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    with ray_errors(stage, "checking paraphrase groups", max_retries):
        for answer in in_order(submit, enumerate(batches), limit):
            yield waiting.popleft(), answer


def _normalized(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    return np.divide(X, norm, out=np.zeros_like(X), where=norm > 0)


def _group_pairs(X: np.ndarray, threshold: float):
    """Pairs a < b of one group's rows (ascending row numbers) whose cosine reaches ``threshold``, a block of
    the group's similarity matrix at a time."""
    m = len(X)
    out_p, out_c = [np.zeros((0, 2), dtype=np.int64)], [np.zeros(0, dtype=np.float64)]
    step = max(1, min(m, _BLOCK_CELLS // max(m, 1)))
    for s in range(0, m, step):
        e = min(s + step, m)
        S = X[s:e] @ X.T
        ok = (S >= threshold) & (np.arange(m)[None, :] > np.arange(s, e)[:, None])
        a, b = np.nonzero(ok)
        out_p.append(np.stack([s + a, b], axis=1).astype(np.int64))
        out_c.append(S[a, b].astype(np.float64))
    return np.concatenate(out_p), np.concatenate(out_c)


def _rule(request: str, answer: str, weak: bool) -> dict:
    """What the rule saw for a pair (its first row's texts): the shared normalized answer (first 60 characters),
    the numbers, and for a label answer the shared task input."""
    ev = {"rule": "label_same_input" if weak else "same_answer_same_content",
          "answer": normalize_text(answer)[:60], "numbers": list(numbers(request))}
    if weak:
        ev["task_input"] = task_input(request)[:60]
    return ev


def semantic_pairs(records: list[dict], params=None, return_evidence: bool = False, **engine):
    """Semantic duplicate pairs of ``records``: ``(pairs, cosine)``.

    ``pairs`` is int64 (m, 2), i < j, sorted; ``cosine`` the embedding cosine of each pair
    (float64). With ``return_evidence`` a third item lists, per pair, a dict saying why it
    passed (see :func:`evidence`). Deterministic given ``params.seed``. ``engine``: :func:`embed`'s
    ``engine``, ``actors``, ``max_retries`` and ``section`` (where the model embeddings run; the same pairs).
    """
    params = _params(params)
    requests = [request_text(r) for r in records]
    answers = [answer_text(r) for r in records]

    def fetch(rows):
        return [requests[i] for i in rows.tolist()], [answers[i] for i in rows.tolist()]

    return find_pairs(len(records), row_keys(requests, answers, params), fetch, params, return_evidence, **engine)


def evidence(records: list[dict], pairs: np.ndarray, params=None) -> list[dict]:
    """Per pair, what the rule saw: the shared normalized answer (first 60 characters), the
    numbers, and for a label answer the shared task input."""
    params = _params(params)
    if not len(pairs):
        return []
    requests = [request_text(r) for r in records]
    answers = [answer_text(r) for r in records]
    weak = candidate_groups(row_keys(requests, answers, params), params)[2]
    return [_rule(requests[i], answers[i], bool(weak[i])) for i in np.asarray(pairs)[:, 0].tolist()]
