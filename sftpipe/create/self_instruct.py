"""Self-instruct: new instructions from seed tasks, written by a generator and kept only if novel.

1. :func:`self_instruct_requests`: each request shows ``examples_per_prompt`` seed instructions (a
   deterministic sample per request: request i draws from ``random.Random(f"{seed}:{lang}:{i}")``,
   so asking for more requests leaves the earlier ones, and their cached replies, unchanged) and
   asks for new ones, in English or Chinese (:data:`DEFAULT_REQUEST_TEMPLATES`);
2. :func:`sftpipe.create.backends.generate` answers them (any backend; the OpenAI one caches);
3. :func:`parse_instructions` reads the instructions out of each reply (a numbered or bulleted list,
   else one per line);
4. :func:`filter_novel` keeps a candidate only if it is novel: its ROUGE-L F against EVERY existing
   instruction (the seeds, then each candidate kept before it, in order: the self-instruct paper's
   rule, Wang et al. 2023) is below ``rouge_threshold`` (0.7), and, optionally, it is no MinHash
   near duplicate (:func:`sftpipe.dedup.clusters.find_duplicates`) of one of them;
5. :func:`self_instruct` glues them and returns prompt-only rows (a single user turn; the
   ``generate`` stage writes their responses), ids ``si:<sha1 of the text>[:12]``.

ROUGE-L is ``rouge_score``'s, with a CJK-aware tokenizer (:class:`CjkTokenizer`: each CJK character
a token, other text lowercased alphanumeric words, as the repo's ``sft_rouge`` metric), so Chinese
instructions are compared fairly.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..ledger import FilterResult, drop
from ..schema import detect_lang

STAGE = "self_instruct"
SOURCE = "self_instruct"
EPS = 1e-9     # float slack between the bound and rouge_score's own arithmetic (never skips a pair)

# ---------------------------------------------------------------------------------------------- ROUGE-L

_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]|[^\W_]+", re.UNICODE)


class CjkTokenizer:
    """Each CJK character a token, other text lowercased alphanumeric words: the tokenizer of the
    repo's ``sft_rouge`` metric (not imported from there: that module pulls in ``evaluate``),
    memoized, since the novelty filter tokenizes each instruction against thousands of others."""

    def __init__(self, memo: bool = False):
        self._cache: dict[str, list[str]] | None = {} if memo else None

    def tokenize(self, text: str) -> list[str]:
        if self._cache is None:
            return _TOKEN.findall(text.lower())
        toks = self._cache.get(text)
        if toks is None:
            toks = self._cache[text] = _TOKEN.findall(text.lower())
        return toks


def rouge_l_scorer(tokenizer: CjkTokenizer | None = None):
    """``rouge_score``'s ROUGE-L scorer with the CJK-aware tokenizer."""
    from rouge_score import rouge_scorer    # imports nltk: seconds, so only when scoring

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=tokenizer or CjkTokenizer())


@lru_cache(maxsize=1)
def _shared_scorer():
    return rouge_l_scorer()


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F of two texts (symmetric), CJK-aware."""
    return _shared_scorer().score(a, b)["rougeL"].fmeasure


# ---------------------------------------------------------------------------------------------- requests

DEFAULT_REQUEST_TEMPLATES = {
    "en": ("You are asked to come up with new task instructions for training a helpful assistant.\n"
           "Here are some example instructions:\n\n{examples}\n\n"
           "Write {n_new} new instruction(s) that are different from all of the examples, as a numbered list, "
           "one per line. Write only the instructions, not their answers."),
    "zh": ("请为训练一个乐于助人的助手想出新的任务指令。下面是一些指令示例：\n\n{examples}\n\n"
           "请写出{n_new}条与所有示例都不同的新指令，编号列出，每行一条。只写指令，不要写答案。"),
}


def instruction_of(item) -> str:
    """A string as is; a record's last user message."""
    if isinstance(item, str):
        return item
    for m in reversed(item["messages"]):
        if m["role"] == "user":
            return m["content"]
    return ""


def _lang_of(item, text: str) -> str:
    lang = (item.get("meta") or {}).get("lang") if isinstance(item, dict) else None
    return lang if lang in ("en", "zh") else detect_lang(text)


def _id_of(item, i: int, prefix: str) -> str:
    return item["id"] if isinstance(item, dict) else f"{prefix}:{i}"


def self_instruct_requests(seeds: list, *, n_prompts: int, examples_per_prompt: int = 8, seed: int = 0,
                           lang: str = "en", template: str | dict | None = None, n_new: int = 1) -> list[dict]:
    """``n_prompts`` generator requests (records with one user turn, ids ``si-req:<lang>:<i>``), each
    showing ``examples_per_prompt`` distinct seed instructions of language ``lang`` (all of them when
    there are fewer) as a numbered list and asking for ``n_new`` new ones. ``template`` has the
    slots ``{examples}`` and ``{n_new}`` (a string, or one per language; default
    :data:`DEFAULT_REQUEST_TEMPLATES`). ``meta.self_instruct`` names the seeds shown."""
    if n_prompts < 0 or examples_per_prompt < 1 or n_new < 1:
        raise ValueError("self_instruct: n_prompts must be >= 0, examples_per_prompt and n_new >= 1")
    tmpl = (template or DEFAULT_REQUEST_TEMPLATES)
    tmpl = tmpl.get(lang) if isinstance(tmpl, dict) else tmpl
    if not isinstance(tmpl, str) or "{examples}" not in tmpl:
        raise ValueError(f"self_instruct: the request template for {lang!r} must be a string with {{examples}}, "
                         f"got {tmpl!r}")
    pool, seen = [], set()
    for i, s in enumerate(seeds):
        text = instruction_of(s).strip()
        if text and text not in seen and _lang_of(s, text) == lang:
            seen.add(text)
            pool.append((_id_of(s, i, "seed"), text))
    if not pool and n_prompts:
        raise ValueError(f"self_instruct: no seed instruction in language {lang!r} among {len(seeds)} seeds")
    k = min(examples_per_prompt, len(pool))
    out = []
    for i in range(n_prompts):
        picks = random.Random(f"{seed}:{lang}:{i}").sample(range(len(pool)), k)
        examples = "\n".join(f"{j + 1}. {pool[p][1]}" for j, p in enumerate(picks))
        prompt = tmpl.replace("{examples}", examples).replace("{n_new}", str(n_new))
        out.append({"id": f"si-req:{lang}:{i}", "messages": [{"role": "user", "content": prompt}],
                    "source": SOURCE, "label": None,
                    "meta": {"lang": lang, "self_instruct": {"request": i, "examples": [pool[p][0] for p in picks]}}})
    return out


# ---------------------------------------------------------------------------------------------- parsing

_ITEM = re.compile(r"^\s*(?:(?:(?:task|instruction|指令|任务)\s*)?(?:\d{1,3}|[一二三四五六七八九十]{1,3})\s*[.)、:：）．]"
                   r"|[(（]\d{1,3}[)）]|[-*•·])\s*", re.I)
_LABEL = re.compile(r"^(?:(?:new\s+)?instruction|task|新指令|指令|任务)\s*[:：]\s*", re.I)
_OPEN, _CLOSE = "\"'“‘「『", "\"'”’」』"


def _clean_item(text: str) -> str:
    text = _LABEL.sub("", text.strip()).strip()
    while len(text) >= 2 and text[0] in _OPEN and text[-1] in _CLOSE and _OPEN.index(text[0]) == _CLOSE.index(text[-1]):
        inner = text[1:-1]
        if text[0] in inner or text[-1] in inner:   # "a" and "b": not one quoted whole
            break
        text = inner.strip()
    return text


def parse_instructions(reply: str | None) -> list[str]:
    """The instructions in a generator's reply, in order.

    When some lines start a list item (``1.``, ``2)``, ``3、``, ``Task 4:``, ``(5)``, ``一、``, ``-``,
    ``*``), each item is one instruction: its text after the marker, with the unmarked lines that
    follow it (a multi-line instruction) up to a blank line; lines before the first item (a
    preamble) and after a blank line that ends an item (a closing remark) are ignored. Otherwise
    every non-empty line is one. Labels ("Instruction:") and quotes around a whole item are
    removed; an empty reply gives none."""
    lines = (reply or "").splitlines()
    items: list[str] = []
    if any(_ITEM.match(line) and line[_ITEM.match(line).end():].strip() for line in lines):
        cur: list[str] | None = None
        for line in lines:
            m = _ITEM.match(line)
            if m and line[m.end():].strip():
                if cur:
                    items.append("\n".join(cur))
                cur = [line[m.end():].strip()]
            elif not line.strip():
                if cur:
                    items.append("\n".join(cur))
                cur = None
            elif cur is not None:
                cur.append(line.strip())
        if cur:
            items.append("\n".join(cur))
    else:
        items = [line for line in lines if line.strip()]
    return [t for t in (_clean_item(i) for i in items) if t]


# ---------------------------------------------------------------------------------------------- novelty

def instruction_row(text: str, meta: dict | None = None, source: str = SOURCE) -> dict:
    """A prompt-only row (one user turn), id ``si:<sha1 of the text>[:12]``."""
    return {"id": "si:" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:12],
            "messages": [{"role": "user", "content": text}], "source": source, "label": None,
            "meta": {"lang": detect_lang(text), **(meta or {})}}


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _occurrence_matrix(token_lists: list[list[str]]):
    """Binary CSR matrix over (token, occurrence number) features: the k-th copy of token t in a text
    is feature (t, k). The dot product of two rows is then the size of the MULTISET intersection of
    their tokens, sum over t of min(count_a(t), count_b(t))."""
    from scipy import sparse

    vocab: dict[tuple[str, int], int] = {}
    indptr, indices = [0], []
    for toks in token_lists:
        seen: Counter = Counter()
        for t in toks:
            seen[t] += 1
            indices.append(vocab.setdefault((t, seen[t]), len(vocab)))
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.int32)
    return sparse.csr_matrix((data, np.asarray(indices, dtype=np.int64), np.asarray(indptr, dtype=np.int64)),
                             shape=(len(token_lists), max(len(vocab), 1)))


def _near_pairs(texts: list[str], near_dup) -> dict[int, dict[int, tuple[float, str]]]:
    """Accepted MinHash (and typo-level) near-duplicate pairs among ``texts``: index -> {partner:
    (similarity, kind)}."""
    from ..config import DedupParams
    from ..dedup.clusters import find_duplicates

    # True: the dedup defaults without the slot check, which keeps rows differing in one slot apart
    # (right for templated data rows; for instructions a one-slot change is a near copy)
    params = DedupParams(slot_check=False) if near_dup is True else near_dup
    res = find_duplicates(texts, params.model_copy(update={"exact": True, "near": True}))
    adj: dict[int, dict[int, tuple[float, str]]] = {}
    for (a, b), sim, ok, kind in zip(res.pairs.tolist(), res.similarity.tolist(), res.accepted.tolist(),
                                     res.signature.tolist()):
        if ok:
            k = "minhash" if kind == 0 else "edits"
            adj.setdefault(a, {})[b] = (sim, k)
            adj.setdefault(b, {})[a] = (sim, k)
    return adj


def filter_novel(candidates: list, existing: list, *, rouge_threshold: float = 0.7, min_chars: int = 5,
                 max_chars: int = 1000, near_dup=None, prefilter: bool = True, chunk: int = 256,
                 stage: str = STAGE) -> FilterResult:
    """Keep the candidates that are novel against ``existing`` and against each other, in order.

    ``candidates``: rows (their instruction is the last user message) or strings (wrapped by
    :func:`instruction_row`); ``existing``: rows or strings (ids ``existing:<i>``). Each candidate,
    in order, is dropped as

    * ``empty``: nothing, or no letter or digit, after stripping;
    * ``too_short`` / ``too_long``: fewer than ``min_chars`` / more than ``max_chars`` characters;
    * ``duplicate``: the same text (whitespace and case aside) as an earlier candidate;
    * ``too_similar``: ROUGE-L F >= ``rouge_threshold`` against an existing instruction or a candidate
      kept before it (evidence: the nearest one's id and text, its ROUGE-L; a copy of a seed lands
      here with ROUGE-L 1);
    * ``near_duplicate`` (only with ``near_dup``: a ``DedupParams``, or True for its defaults with
      ``slot_check`` off): a MinHash / typo-level near duplicate, by the dedup stage's own check
      (:func:`sftpipe.dedup.clusters.find_duplicates`), of one of those;

    else it is kept and joins the instructions later candidates are compared with.

    Speed: scoring every candidate against every instruction with ``rouge_score`` (a pure-Python
    LCS) is O(N·M) slow calls. With ``prefilter``, a pair is scored only when a cheap upper bound
    says it could reach the threshold. For token sequences A and B, LCS(A, B) <= |A ∩ B| (the
    multiset intersection: a common subsequence uses each token no more often than either holds
    it), and rouge_score's F = 2PR/(P+R) with P = LCS/|A|, R = LCS/|B| equals 2·LCS/(|A|+|B|), so

        ROUGE-L F(A, B) <= 2·|A ∩ B| / (|A| + |B|).

    The intersections of one chunk of candidates with all instructions are one sparse matrix
    product (:func:`_occurrence_matrix`). A pair whose bound is below ``rouge_threshold - EPS``
    cannot reach the threshold and is skipped; the others are scored exactly in decreasing order of
    their bound, stopping once the bound falls below the best score found, so the nearest
    instruction (highest ROUGE-L, ties to the earliest) is the same as by brute force
    (``prefilter=False``): a test checks both give identical results.
    """
    if not 0.0 < rouge_threshold <= 1.0:
        raise ValueError(f"self_instruct: rouge_threshold must be in (0, 1], got {rouge_threshold}")
    rows = [c if isinstance(c, dict) else instruction_row(c) for c in candidates]
    ex_texts = [instruction_of(e).strip() for e in existing]
    ex_ids = [_id_of(e, i, "existing") for i, e in enumerate(existing)]
    c_texts = [instruction_of(r).strip() for r in rows]
    n_ex = len(ex_texts)
    texts = ex_texts + c_texts
    ids = ex_ids + [r["id"] for r in rows]
    tok = CjkTokenizer(memo=True)       # per call: every text is tokenized once
    scorer = rouge_l_scorer(tok)
    toks = [tok.tokenize(t) for t in texts]
    lens = np.array([len(t) for t in toks], dtype=np.float64)
    mat = _occurrence_matrix(toks) if prefilter and texts else None
    near = _near_pairs(texts, near_dup) if near_dup else {}

    in_pool = np.zeros(len(texts), dtype=bool)
    in_pool[:n_ex] = True
    kept, dropped = [], []
    first_of: dict[str, str] = {}
    checks = 0
    block, block_start = None, None
    for ci, rec in enumerate(rows):
        i = n_ex + ci
        text = c_texts[ci]
        if not text or not re.search(r"[^\W_]", text):
            dropped.append(drop(rec, stage, "empty", text=text[:200]))
            continue
        if len(text) < min_chars:
            dropped.append(drop(rec, stage, "too_short", chars=len(text), min_chars=min_chars))
            continue
        if len(text) > max_chars:
            dropped.append(drop(rec, stage, "too_long", chars=len(text), max_chars=max_chars))
            continue
        key = _norm(text)
        if key in first_of:
            dropped.append(drop(rec, stage, "duplicate", of=first_of[key]))
            continue
        first_of[key] = rec["id"]

        if mat is not None:
            if block is None or ci >= block_start + chunk:
                block_start = ci
                block = (mat[i:min(i + chunk, len(texts))] @ mat.T).tocsr()
            row = block[ci - block_start]
            cols = row.indices
            bound = 2.0 * row.data / np.maximum(lens[i] + lens[cols], 1.0)
            ok = in_pool[cols] & (bound >= rouge_threshold - EPS)
            cols, bound = cols[ok], bound[ok]
            order = np.lexsort((cols, -bound))
            cand = zip(cols[order].tolist(), bound[order].tolist())
        else:
            cand = ((j, np.inf) for j in np.flatnonzero(in_pool).tolist())
        best, best_j = -1.0, -1
        for j, b in cand:
            if b < best - EPS:
                break
            s = scorer.score(texts[j], text)["rougeL"].fmeasure
            checks += 1
            if s > best or (s == best and j < best_j):
                best, best_j = s, j
        if best >= rouge_threshold:
            dropped.append(drop(rec, stage, "too_similar", nearest_id=ids[best_j], nearest=texts[best_j][:200],
                                rouge_l=round(best, 4), threshold=rouge_threshold))
            continue
        partners = [(j, v) for j, v in sorted(near.get(i, {}).items()) if in_pool[j]]
        if partners:
            j, (sim, kind) = partners[0]
            dropped.append(drop(rec, stage, "near_duplicate", nearest_id=ids[j], nearest=texts[j][:200],
                                similarity=round(float(sim), 4), signature=kind))
            continue
        in_pool[i] = True
        kept.append(rec)
    return FilterResult(kept, dropped, {"existing": n_ex, "candidates": len(rows), "novel": len(kept),
                                        "rouge_threshold": rouge_threshold},
                        {"rouge_scored_pairs": checks})


# ---------------------------------------------------------------------------------------------- glue

def self_instruct(seeds: list, gp, model_params, *, n_prompts: int, examples_per_prompt: int = 8, seed: int = 0,
                  lang: str | list[str] = "en", template: str | dict | None = None, n_new: int = 1,
                  rouge_threshold: float = 0.7, min_chars: int = 5, max_chars: int = 1000, near_dup=None,
                  cache_dir: str | Path | None = None, progress=None) -> FilterResult:
    """Requests (``n_prompts`` per language in ``lang``) -> :func:`backends.generate` -> parsed
    instructions -> :func:`filter_novel` against every seed instruction.

    Kept rows have one user turn, ``source = "self_instruct"``, ids ``si:<sha1>[:12]`` and
    ``meta.self_instruct = {"from_request": i, "request_id", "reply": j, "item": k, "examples":
    [seed ids shown]}``. The FilterResult accounts for every parsed candidate; a failed request
    gives none and is counted in ``extra_metrics.requests_failed`` (its error in
    ``details.errors``), a reply with no instruction in it in ``replies_without_instruction``."""
    from .backends import generate

    langs = [lang] if isinstance(lang, str) else list(lang)
    requests = [r for lg in langs for r in self_instruct_requests(
        seeds, n_prompts=n_prompts, examples_per_prompt=examples_per_prompt, seed=seed, lang=lg,
        template=template, n_new=n_new)]
    results = generate(requests, gp, model_params, cache_dir=cache_dir, progress=progress) if requests else []
    candidates, errors, empty_replies, n_replies = [], {}, 0, 0
    for i, (req, res) in enumerate(zip(requests, results)):
        if res.get("replies") is None:
            errors[req["id"]] = res.get("error")
            continue
        for j, reply in enumerate(res["replies"]):
            n_replies += 1
            found = parse_instructions(reply)
            empty_replies += not found
            for k, text in enumerate(found):
                candidates.append(instruction_row(text, {"self_instruct": {
                    "from_request": i, "request_id": req["id"], "reply": j, "item": k,
                    "examples": req["meta"]["self_instruct"]["examples"]}}))
    res = filter_novel(candidates, seeds, rouge_threshold=rouge_threshold, min_chars=min_chars,
                       max_chars=max_chars, near_dup=near_dup)
    res.extra_metrics = {"requests": len(requests), "requests_failed": len(errors), "replies": n_replies,
                         "replies_without_instruction": empty_replies, **res.extra_metrics}
    if errors:
        res.details["errors"] = errors
    return res
