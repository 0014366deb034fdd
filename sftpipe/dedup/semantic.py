"""Semantic dedup: rows that ask the same thing in other words and get the same answer.

SemDeDup-shaped (NeMo-Curator): embed, k-means, and inside each cluster every pair whose
cosine reaches ``threshold`` is a candidate (one block of ``X_c @ X_c.T`` at a time). A
candidate is returned only if it passes the rule below. Choosing the row to keep from each
group is up to the caller.

What is embedded: the answers (``field="response"``, the default). A paraphrase rewords
the prompt, so the surface features of two paraphrased prompts are far apart. On the
dupbench (seed 0), k-means over TF-IDF of the prompts put 3-11% of paraphrase/original
pairs in one cluster, and 10-30% over prompt + answer; ``field="prompt"`` found 5% of
the paraphrases and ``"all"`` 31% (bench/semantic_dedup.py --ablations). Equal answers
always share a cluster: every method embeds the canonical text (NFKC, case-folded,
runs of non-alphanumerics as one space) and each distinct text once, so their vectors are
bit-equal and have the same nearest centroid. (With raw text, the base model put
'a, b, c' and 'a b c' at cosine 0.93, and k-means split 52 of 300 paraphrase pairs.)

The rule. A paraphrase is "the same request in other words WITH THE SAME ANSWER":

1. **same answer**: the assistant turns are equal after :func:`normalize_text` (NFKC,
   case-folded, letters and digits only, so "a, b, c" equals "a b c"). An answer cosine
   >= 0.98 (tfidf, 128 dims) in place of this gave precision 0.930 (>= 0.95: 0.190),
   because SVD-compressed character n-grams make unrelated long Chinese texts look alike;
2. **same numbers**: the digit runs of request and answer are equal as multisets;
3. **same request content**: every *content token* of each request occurs in the other
   request. Tokens are words, or single characters for CJK. A token is *template* for a
   row when it occurs in at least ``template_share`` of the requests in the row's request
   cluster (k-means on TF-IDF of the requests, which groups the rows of one prompt
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
round(sqrt(rows)) for both clusterings; ``threshold`` 0.9 (equal answers have cosine 1,
so under rule 1 it only prunes candidates); ``template_share`` 0.2 (0.1: one pair that
differs only in the name got through; 0.3: recall 0.95); ``label_rows`` 5.

Measured on dupbench seeds 0/1/2 (4,820 rows each, bench/semantic_dedup.py): paraphrase
recall en 0.973/0.953/0.993, zh 0.993/0.993/0.967; precision 1.0000 on every seed;
0 one-slot pairs; about 1 s per 1,000 rows for tfidf on 2 busy CPU cores (1.3 s at
13,820 rows), and about 11 s per 1,000 rows for ``base_model`` with models/base on CPU.
Typo copies are mostly not found (their answers carry typos). They are MinHash's job.

Everything is a pure function of the rows and ``seed`` (seeded SVD and k-means).
"""

from __future__ import annotations

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

__all__ = ["SemanticParams", "embed", "semantic_pairs", "evidence", "request_text", "answer_text",
           "normalize_text", "task_input", "numbers", "tokens", "METHODS"]

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

    def __post_init__(self):
        if self.method not in METHODS:
            raise UserError(f"semantic.method: unknown method {self.method!r} (one of {', '.join(METHODS)})")
        if self.field not in ("response", "prompt", "all"):
            raise UserError(f"semantic.field: {self.field!r} is not one of response, prompt, all")
        if not -1.0 <= self.threshold <= 1.0:
            raise UserError(f"semantic.threshold: {self.threshold} is not a cosine in [-1, 1]")
        if not 0.0 < self.template_share <= 1.0:
            raise UserError(f"semantic.template_share: {self.template_share} is not in (0, 1]")
        if self.dims < 1 or self.batch_size < 1 or (self.n_clusters is not None and self.n_clusters < 1):
            raise UserError("semantic.dims, semantic.batch_size and semantic.n_clusters must be >= 1")


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
    from sklearn.decomposition import TruncatedSVD

    X = _tfidf(texts)
    if X is None:
        return np.zeros((len(texts), 1), dtype=np.float32)
    k = min(dims, X.shape[1] - 1, len(texts) - 1)
    if k < 2:
        return X.toarray()
    return TruncatedSVD(k, algorithm="randomized", random_state=seed).fit_transform(X)


def _tfidf(texts: list[str]):
    """Sparse TF-IDF over character 1-3-grams inside word boundaries (the label-noise featurizer;
    works for Chinese and English alike); None when no text has a feature."""
    from ..label_noise import tfidf_features

    spaced = [_spaced(t) for t in texts]
    try:
        return tfidf_features(spaced) if len(spaced) > 1 else _tfidf_one(spaced)
    except ValueError:                       # empty vocabulary: every text empty, or n-grams all once
        return None


def _tfidf_one(texts: list[str]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), dtype=np.float32).fit_transform(texts)


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
    X = np.asarray(X, dtype=np.float32)
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    return np.divide(X, norm, out=np.zeros_like(X), where=norm > 0)[inverse]


# ---------------------------------------------------------------------------
# Clusters


def n_clusters_for(n: int, params: SemanticParams) -> int:
    """``n_clusters`` when set, else round(sqrt(n)); never more than ``n``."""
    if n == 0:
        return 0
    k = params.n_clusters if params.n_clusters is not None else round(math.sqrt(n))
    return max(1, min(int(k), n))


def kmeans_labels(X, k: int, seed: int) -> np.ndarray:
    """Seeded k-means labels (dense or sparse rows); one cluster when k <= 1."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    n = X.shape[0]
    if k <= 1 or n <= 1:
        return np.zeros(n, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)     # fewer distinct rows than clusters
        return KMeans(k, n_init=1, random_state=seed).fit_predict(X).astype(np.int64)


def _members(labels: np.ndarray) -> list[np.ndarray]:
    """Row indices of each cluster, ascending."""
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(labels[order])) + 1) if len(order) else []


# ---------------------------------------------------------------------------
# The rule


def _factorize(values) -> np.ndarray:
    ids: dict = {}
    return np.fromiter((ids.setdefault(v, len(ids)) for v in values), dtype=np.int64)


@dataclass
class _Keys:
    answer: np.ndarray      # id of the normalized answer
    nums: np.ndarray        # id of (numbers of the request, numbers of the answer)
    inp: np.ndarray         # id of the normalized task input; -1: none
    weak: np.ndarray        # a label: the answer alone does not vouch for the request


def _keys(requests: list[str], answers: list[str], params: SemanticParams) -> _Keys:
    ans_norm = [normalize_text(a) for a in answers]
    answer = _factorize(ans_norm)
    askers: dict[int, set] = {}             # distinct requests per answer: a label answers many
    for a, q in zip(answer.tolist(), requests):
        askers.setdefault(a, set()).add(normalize_text(q))
    n_req = np.array([len(askers[a]) for a in answer.tolist()], dtype=np.int64)
    nums = _factorize((numbers(q), numbers(a)) for q, a in zip(requests, answers))
    inputs = [task_input(q) for q in requests]
    inp = np.where([_units(s) >= params.min_input_units for s in inputs], _factorize(inputs), -1)
    return _Keys(answer, nums, inp.astype(np.int64), n_req >= params.label_rows)


def _candidates(X: np.ndarray, labels: np.ndarray, keys: _Keys, threshold: float):
    """Pairs i < j of one cluster with cosine >= threshold that pass rules 1, 2 and 4 (vectorized)."""
    out_p, out_c = [], []
    for rows in _members(labels):
        if len(rows) < 2:
            continue
        Xc = X[rows]
        a_all, n_all, i_all, w_all = keys.answer[rows], keys.nums[rows], keys.inp[rows], keys.weak[rows]
        step = max(1, min(len(rows), _BLOCK_CELLS // len(rows)))
        for s in range(0, len(rows), step):
            e = min(s + step, len(rows))
            S = Xc[s:e] @ Xc.T
            ok = S >= threshold
            ok &= np.arange(len(rows))[None, :] > np.arange(s, e)[:, None]
            ok &= a_all[s:e, None] == a_all[None, :]
            ok &= n_all[s:e, None] == n_all[None, :]
            same_input = (i_all[s:e, None] == i_all[None, :]) & (i_all[s:e, None] >= 0)
            ok &= ~(w_all[s:e, None] | w_all[None, :]) | same_input
            a, b = np.nonzero(ok)
            if len(a):
                out_p.append(np.stack([rows[s + a], rows[b]], axis=1))
                out_c.append(S[a, b].astype(np.float64))
    if not out_p:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float64)
    return np.concatenate(out_p), np.concatenate(out_c)


def _content(requests: list[str], rows: np.ndarray, params: SemanticParams, k: int) -> dict[int, tuple]:
    """(tokens, content tokens) of the requests in ``rows``; template tokens come from
    request clusters over all rows (k-means on TF-IDF of the requests)."""
    toks = [set(tokens(q)) for q in requests]
    X = _tfidf(requests)
    labels = kmeans_labels(X, k, params.seed) if X is not None else np.zeros(len(requests), dtype=np.int64)
    need = set(labels[rows].tolist())
    template: dict[int, set] = {}
    for members in _members(labels):
        c = int(labels[members[0]])
        if c not in need:
            continue
        if len(members) < params.min_template_rows:
            template[c] = set()
            continue
        df = Counter(t for i in members.tolist() for t in toks[i])
        template[c] = {t for t, v in df.items() if v >= params.template_share * len(members)}
    return {i: (toks[i], toks[i] - template[int(labels[i])]) for i in rows.tolist()}


def semantic_pairs(records: list[dict], params=None, return_evidence: bool = False, **engine):
    """Semantic duplicate pairs of ``records``: ``(pairs, cosine)``.

    ``pairs`` is int64 (m, 2), i < j, sorted; ``cosine`` the embedding cosine of each pair
    (float64). With ``return_evidence`` a third item lists, per pair, a dict saying why it
    passed (see :func:`evidence`). Deterministic given ``params.seed``. ``engine``: :func:`embed`'s
    ``engine``, ``actors``, ``max_retries`` and ``section`` (where the model embeddings run; the same pairs).
    """
    params = _params(params)
    n = len(records)
    pairs, cos = np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float64)
    if n >= 2:
        requests = [request_text(r) for r in records]
        answers = [answer_text(r) for r in records]
        texts = {"response": answers, "prompt": requests,
                 "all": [q + "\n" + a for q, a in zip(requests, answers)]}[params.field]
        X = embed([_spaced(t) for t in texts], params.method, params.model, params.seed, dims=params.dims,
                  batch_size=params.batch_size, **engine)
        keys = _keys(requests, answers, params)
        k = n_clusters_for(n, params)
        cand, ccos = _candidates(X, kmeans_labels(X, k, params.seed), keys, params.threshold)
        if len(cand):
            content = _content(requests, np.unique(cand), params, k)
            ok = np.array([content[i][1] <= content[j][0] and content[j][1] <= content[i][0]
                           for i, j in cand.tolist()], dtype=bool)
            cand, ccos = cand[ok], ccos[ok]
            order = np.lexsort((cand[:, 1], cand[:, 0]))
            pairs, cos = cand[order], np.clip(ccos[order], -1.0, 1.0)
    if return_evidence:
        return pairs, cos, (_evidence(pairs, requests, answers, keys) if len(pairs) else [])
    return pairs, cos


def evidence(records: list[dict], pairs: np.ndarray, params=None) -> list[dict]:
    """Per pair, what the rule saw: the shared normalized answer (first 60 characters), the
    numbers, and for a label answer the shared task input."""
    params = _params(params)
    if not len(pairs):
        return []
    requests = [request_text(r) for r in records]
    answers = [answer_text(r) for r in records]
    return _evidence(pairs, requests, answers, _keys(requests, answers, params))


def _evidence(pairs: np.ndarray, requests: list[str], answers: list[str], keys: _Keys) -> list[dict]:
    out = []
    for i, j in np.asarray(pairs).tolist():
        weak = bool(keys.weak[i] or keys.weak[j])
        ev = {"rule": "label_same_input" if weak else "same_answer_same_content",
              "answer": normalize_text(answers[i])[:60], "numbers": list(numbers(requests[i]))}
        if weak:
            ev["task_input"] = task_input(requests[i])[:60]
        out.append(ev)
    return out

