"""sftpipe.select.methods: budgets, quotas and the selection algorithms, against brute-force references."""

from collections import Counter

import numpy as np
import pytest

from sftpipe.select.methods import METHODS, Selection, budget_rows, quotas, select

SEEDS = range(12)


# --------------------------------------------------------------------------- helpers

def unit_rows(rng, n, d, dups=0):
    """n random unit vectors in d dims (float32); ``dups`` of them copies of earlier rows."""
    X = rng.normal(size=(n, d))
    for _ in range(dups if n > 1 else 0):
        i, j = sorted(rng.choice(n, 2, replace=False))
        X[j] = X[i]
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32)


def random_case(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 70))
    d = int(rng.integers(2, 7))
    names = ["a", "b", "c", "d"][: int(rng.integers(1, 5))]
    groups = [str(rng.choice(names)) for _ in range(n)]
    weights = {}
    if rng.random() < 0.5:
        for g in rng.choice(names + ["zz"], int(rng.integers(1, 3)), replace=False):
            weights[str(g)] = round(float(rng.random()) * 0.45, 2)
    k = int(rng.integers(0, n + 5))
    balance = bool(rng.random() < 0.5)
    return dict(rng=rng, n=n, X=unit_rows(rng, n, d, dups=int(rng.integers(0, 4))), groups=groups,
                score=rng.random(n).round(1),     # rounded: ties in the score happen
                k=k, weights=weights, balance=balance, threshold=float(rng.choice([0.3, 0.6, 0.8, 0.95])))


def run(method, case, **kw):
    q = quotas(case["groups"], case["k"], case["weights"], case["balance"])
    args = dict(k=case["k"], order_score=case["score"], X=case["X"], groups=case["groups"], quota=q,
                threshold=case["threshold"], seed=3)
    args.update(kw)
    return select(method, **args), q


def check_accounting(sel: Selection, n: int):
    chosen = sel.chosen.tolist()
    assert sel.chosen.dtype == np.int64
    assert len(chosen) == len(set(chosen)), "a row chosen twice"
    assert not set(chosen) & set(sel.reasons), "a row both chosen and dropped"
    assert sorted(chosen + list(sel.reasons)) == list(range(n)), "a row neither chosen nor dropped"
    for r in sel.reasons.values():
        assert r["reason"] in {"budget", "too_similar", "quota"}


def same_reasons(a: dict, b: dict, tol=2e-4):
    """Equal reasons, similarities up to float noise (BLAS vs one dot at a time, rounded to 4 places)."""
    assert a.keys() == b.keys()
    for i in a:
        ra, rb = dict(a[i]), dict(b[i])
        sa, sb = ra.pop("similarity", None), rb.pop("similarity", None)
        assert ra == rb, (i, a[i], b[i])
        assert (sa is None) == (sb is None) and (sa is None or abs(sa - sb) <= tol), (i, a[i], b[i])


def walk_order(score, n):
    return list(range(n)) if score is None else sorted(range(n), key=lambda i: (-score[i], i))


# --------------------------------------------------------------------------- brute-force references

def naive_diverse(X, score, groups, quota, k, thr, ids=None):
    X = X.astype(np.float64)
    n = len(X)
    admitted, reasons, used = [], {}, Counter()
    name = (lambda j: ids[j]) if ids else (lambda j: j)
    order = walk_order(score, n)
    for p, i in enumerate(order):
        if len(admitted) == min(k, n):
            break
        g = groups[i]
        if used[g] >= quota.get(g, 0):
            reasons[i] = {"reason": "quota", "group": g, "quota": quota.get(g, 0)}
            continue
        best, arg = -np.inf, None
        for j in admitted:                     # one dot product at a time
            s = float(np.dot(X[i], X[j]))
            if s > best:
                best, arg = s, j
        if best >= thr:
            reasons[i] = {"reason": "too_similar", "nearest": name(arg), "similarity": round(best, 4)}
        else:
            admitted.append(i)
            used[g] += 1
    for i in order:
        if i not in reasons and i not in admitted:
            sims = [float(np.dot(X[i], X[j])) for j in admitted]
            if sims:
                j = admitted[int(np.argmax(sims))]
                reasons[i] = {"reason": "budget", "nearest": name(j), "similarity": round(max(sims), 4)}
            else:
                reasons[i] = {"reason": "budget", "nearest": None, "similarity": None}
    return admitted, reasons


def naive_kcenter(X, score, groups, quota, k):
    X = X.astype(np.float64)
    n = len(X)
    used = Counter()
    room = lambda i: used[groups[i]] < quota.get(groups[i], 0)  # noqa: E731
    chosen = []
    start = next((i for i in walk_order(score, n) if room(i)), None)
    if start is None or k == 0:
        return chosen
    chosen.append(start)
    used[groups[start]] += 1
    near = [float(np.dot(X[i], X[start])) for i in range(n)]     # highest similarity to a chosen row
    while len(chosen) < min(k, n):
        best, pick = np.inf, None
        for i in range(n):
            if i not in chosen and room(i) and near[i] < best:
                best, pick = near[i], i
        if pick is None:
            break
        chosen.append(pick)
        used[groups[pick]] += 1
        for i in range(n):
            near[i] = max(near[i], float(np.dot(X[i], X[pick])))
    return chosen


def naive_top(score, groups, quota, k):
    n = len(groups)
    used, out = Counter(), []
    for i in walk_order(score, n):
        if len(out) == min(k, n):
            break
        if used[groups[i]] < quota.get(groups[i], 0):
            used[groups[i]] += 1
            out.append(i)
    return out


# --------------------------------------------------------------------------- budget

def test_budget_rows():
    assert budget_rows(None, 7) == 7
    assert budget_rows(None, 0) == 0
    assert budget_rows(3, 10) == 3
    assert budget_rows(30, 10) == 10
    assert budget_rows(3.0, 10) == 3
    assert budget_rows(0.5, 10) == 5
    assert budget_rows(0.35, 10) == 4          # read as written: 3.5 rounds half up
    assert budget_rows(0.25, 10) == 3
    assert budget_rows(0.001, 10) == 1         # a fraction keeps at least one row
    assert budget_rows(0.5, 0) == 0
    assert budget_rows(0.999, 10) == 10
    with pytest.raises(ValueError):
        budget_rows(2.5, 10)
    with pytest.raises(ValueError):
        budget_rows(-1, 10)


# --------------------------------------------------------------------------- quotas

@pytest.mark.parametrize("seed", range(40))
def test_quotas_properties(seed):
    c = random_case(seed)
    q = quotas(c["groups"], c["k"], c["weights"], c["balance"])
    sizes = Counter(c["groups"])
    assert sum(q.values()) == min(c["k"], c["n"])
    assert set(q) == set(sizes) | set(c["weights"])
    for g, v in q.items():
        assert 0 <= v <= sizes.get(g, 0)
    assert q == quotas(c["groups"], c["k"], c["weights"], c["balance"])


def test_quotas_proportional_and_balanced():
    groups = ["a"] * 10 + ["b"] * 30
    assert quotas(groups, 8, {}, False) == {"a": 2, "b": 6}
    assert quotas(groups, 8, {}, True) == {"a": 4, "b": 4}
    # water-filling: the small group takes all it has, the others share the leftover evenly
    groups = ["a"] * 2 + ["b"] * 10 + ["c"] * 10
    assert quotas(groups, 12, {}, True) == {"a": 2, "b": 5, "c": 5}
    assert quotas(groups, 21, {}, True) == {"a": 2, "b": 10, "c": 9}   # tie (b, c) by name
    assert quotas(groups, 100, {}, True) == {"a": 2, "b": 10, "c": 10}  # k > n: everything


def test_quotas_ties_by_name():
    groups = ["c"] * 5 + ["a"] * 5 + ["b"] * 5
    assert quotas(groups, 2, {}, True) == {"a": 1, "b": 1, "c": 0}
    assert quotas(groups, 2, {}, False) == {"a": 1, "b": 1, "c": 0}


def test_quotas_weights():
    groups = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    q = quotas(groups, 20, {"a": 0.5}, False)
    assert q["a"] == 10 and q["b"] + q["c"] == 10 and q == {"a": 10, "b": 6, "c": 4}
    assert quotas(groups, 20, {"a": 0.5}, True) == {"a": 10, "b": 5, "c": 5}
    # two named groups with halves that round: 3 rows, 0.5 each -> 2 + 1 (tie by name), never 4
    assert quotas(["x"] * 5 + ["y"] * 5, 3, {"x": 0.5, "y": 0.5}, False) == {"x": 2, "y": 1}
    # a named share is capped by the group's size; the shortfall goes to the others
    q = quotas(["a"] * 2 + ["b"] * 30 + ["c"] * 30, 20, {"a": 0.5}, False)
    assert q == {"a": 2, "b": 9, "c": 9}
    # all groups named, weights below 1: 3 + 1, then the other 6 go to them by weight (4.5, 1.5: tie by name)
    q = quotas(["a"] * 50 + ["b"] * 50, 10, {"a": 0.3, "b": 0.1}, False)
    assert q == {"a": 8, "b": 2}


def test_quotas_zero_row_group_in_weights():
    groups = ["a"] * 10 + ["b"] * 10
    q = quotas(groups, 10, {"ghost": 0.4}, False)
    assert q == {"a": 5, "b": 5, "ghost": 0}
    q = quotas(groups, 10, {"ghost": 0.4, "a": 0.6}, False)
    assert q == {"a": 6, "b": 4, "ghost": 0}


def test_quotas_weight_zero_yields_only_when_needed():
    groups = ["a"] * 10 + ["b"] * 10
    assert quotas(groups, 8, {"a": 0.0}, False) == {"a": 0, "b": 8}
    assert quotas(groups, 15, {"a": 0.0}, False) == {"a": 5, "b": 10}


def test_quotas_edges():
    assert quotas([], 5, {}, False) == {}
    assert quotas([], 5, {"a": 0.5}, True) == {"a": 0}
    assert quotas(["a", "b"], 0, {}, False) == {"a": 0, "b": 0}
    with pytest.raises(ValueError):
        quotas(["a"], 1, {"a": 0.7, "b": 0.6}, False)
    with pytest.raises(ValueError):
        quotas(["a"], 1, {"a": -0.1}, False)


# --------------------------------------------------------------------------- every method

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", SEEDS)
def test_accounting_and_determinism(method, seed):
    c = random_case(seed)
    sel, q = run(method, c)
    check_accounting(sel, c["n"])
    again, _ = run(method, c)
    assert np.array_equal(sel.chosen, again.chosen) and sel.reasons == again.reasons
    assert sel.details == again.details
    if method == "all":
        assert sel.chosen.tolist() == list(range(c["n"])) and not sel.reasons
        return
    assert len(sel.chosen) <= min(c["k"], c["n"])
    used = Counter(c["groups"][i] for i in sel.chosen.tolist())
    assert all(v <= q.get(g, 0) for g, v in used.items()), (used, q)
    if method in ("random", "top", "kcenter"):        # only diverse may stop short
        assert len(sel.chosen) == min(c["k"], c["n"])
    assert sel.details["short"] == min(c["k"], c["n"]) - len(sel.chosen)


@pytest.mark.parametrize("method", METHODS)
def test_empty_input(method):
    sel = select(method, k=5, order_score=np.zeros(0), X=np.zeros((0, 4), np.float32), groups=[], quota={})
    assert sel.chosen.tolist() == [] and sel.reasons == {}


@pytest.mark.parametrize("method", ["random", "top", "diverse", "kcenter"])
def test_k_zero(method):
    rng = np.random.default_rng(0)
    X = unit_rows(rng, 10, 3)
    sel = select(method, k=0, order_score=rng.random(10), X=X, groups=["g"] * 10, quota={"g": 0})
    check_accounting(sel, 10)
    assert sel.chosen.tolist() == []
    assert all(r["reason"] in ("budget", "quota") for r in sel.reasons.values())
    sel = select(method, k=0, order_score=rng.random(10), X=X, groups=["g"] * 10, quota=None)
    assert {r["reason"] for r in sel.reasons.values()} == {"budget"}


@pytest.mark.parametrize("method", ["random", "top", "kcenter"])
def test_k_above_n_takes_everything(method):
    rng = np.random.default_rng(1)
    X = unit_rows(rng, 12, 5)
    g = ["a"] * 4 + ["b"] * 8
    sel = select(method, k=50, order_score=rng.random(12), X=X, groups=g, quota=quotas(g, 50, {}, False))
    assert sorted(sel.chosen.tolist()) == list(range(12)) and not sel.reasons


def test_unknown_method_and_missing_embeddings():
    with pytest.raises(ValueError):
        select("best", k=1, groups=["a"])
    with pytest.raises(ValueError):
        select("diverse", k=1, groups=["a"], order_score=np.ones(1))
    with pytest.raises(ValueError):
        select("top", k=1, groups=["a", "b"], order_score=np.ones(3))


# --------------------------------------------------------------------------- random, top

def test_random_seeded_within_quota():
    g = ["a"] * 30 + ["b"] * 30 + ["c"] * 40
    q = {"a": 5, "b": 5, "c": 0}
    s1 = select("random", k=10, groups=g, quota=q, seed=1)
    s2 = select("random", k=10, groups=g, quota=q, seed=1)
    s3 = select("random", k=10, groups=g, quota=q, seed=2)
    assert np.array_equal(s1.chosen, s2.chosen) and not np.array_equal(s1.chosen, s3.chosen)
    assert Counter(g[i] for i in s1.chosen.tolist()) == {"a": 5, "b": 5}
    assert all(s1.reasons[i] == {"reason": "budget", "group": g[i]} for i in range(60) if i not in s1.chosen)
    assert all(s1.reasons[i] == {"reason": "quota", "group": "c", "quota": 0} for i in range(60, 100))


@pytest.mark.parametrize("seed", SEEDS)
def test_top_matches_reference(seed):
    c = random_case(seed)
    sel, q = run("top", c)
    assert sel.chosen.tolist() == naive_top(c["score"], c["groups"], q, c["k"])


def test_top_reasons_and_ties():
    score = np.array([0.5, 0.9, 0.5, 0.9, 0.1, 0.7])
    g = ["a", "b", "a", "b", "a", "b"]
    sel = select("top", k=3, order_score=score, groups=g, quota={"a": 2, "b": 1})
    # order: 1 (b .9), 3 (b .9, b full), 5 (b .7, full), 0 (a .5), 2 (a .5), 4
    assert sel.chosen.tolist() == [1, 0, 2]
    assert sel.reasons[3] == {"reason": "quota", "group": "b", "quota": 1}
    assert sel.reasons[5] == {"reason": "quota", "group": "b", "quota": 1}
    assert sel.reasons[4] == {"reason": "budget", "score": 0.1, "rank": 6}
    sel = select("top", k=2, order_score=score, groups=g, quota=None)
    assert sel.chosen.tolist() == [1, 3]
    assert sel.reasons[5] == {"reason": "budget", "score": 0.7, "rank": 3}


# --------------------------------------------------------------------------- diverse

@pytest.mark.parametrize("seed", range(30))
def test_diverse_matches_reference(seed):
    c = random_case(seed)
    ids = [f"r{i}" for i in range(c["n"])]
    sel, q = run("diverse", c, ids=ids, block=int(c["rng"].integers(1, 9)))
    ref_chosen, ref_reasons = naive_diverse(c["X"], c["score"], c["groups"], q, c["k"], c["threshold"], ids)
    assert sel.chosen.tolist() == ref_chosen
    same_reasons(sel.reasons, ref_reasons)
    X = c["X"].astype(np.float64)[sel.chosen]
    S = X @ X.T
    np.fill_diagonal(S, -1)
    assert (S < c["threshold"] + 1e-6).all(), "two chosen rows are too similar"


@pytest.mark.parametrize("seed", range(6))
def test_diverse_block_size_does_not_matter(seed):
    rng = np.random.default_rng(seed)
    n = 300
    centers = unit_rows(rng, 8, 16)
    X = centers[rng.integers(0, 8, n)] + 0.06 * rng.normal(size=(n, 16))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    g = [str(x) for x in rng.integers(0, 3, n)]
    q = quotas(g, 60, {}, True)
    score = rng.random(n)
    args = dict(k=60, order_score=score, X=X, groups=g, quota=q, threshold=0.7)
    ref = select("diverse", **args, block=1)
    assert ref.details["reasons"].get("too_similar", 0) > 50
    for block in (2, 17, 64, 1000):
        sel = select("diverse", **args, block=block)
        assert sel.chosen.tolist() == ref.chosen.tolist()
        same_reasons(sel.reasons, ref.reasons, tol=1e-4)


def test_diverse_duplicates_are_too_similar():
    rng = np.random.default_rng(0)
    X = unit_rows(rng, 6, 8)
    X[4] = X[1]
    X[5] = X[1]
    ids = list("abcdef")
    sel = select("diverse", k=6, order_score=None, X=X, groups=["g"] * 6, quota={"g": 6}, ids=ids,
                 threshold=0.99)
    assert sel.chosen.tolist() == [0, 1, 2, 3]
    assert sel.reasons[4] == {"reason": "too_similar", "nearest": "b", "similarity": 1.0}
    assert sel.reasons[5] == {"reason": "too_similar", "nearest": "b", "similarity": 1.0}
    assert sel.details["ran_out"] and sel.details["short"] == 2


def test_diverse_budget_rows_get_nearest_chosen():
    rng = np.random.default_rng(2)
    X = unit_rows(rng, 40, 6)
    sel = select("diverse", k=5, order_score=np.arange(40.0)[::-1].copy(), X=X, groups=["g"] * 40,
                 quota=None, threshold=0.95)
    assert sel.chosen.tolist() == [0, 1, 2, 3, 4]          # random directions in 6 dims: none too close
    S = X[5:].astype(np.float64) @ X[:5].T.astype(np.float64)
    for i in range(5, 40):
        r = sel.reasons[i]
        assert r["reason"] == "budget" and r["nearest"] == int(S[i - 5].argmax())
        assert abs(r["similarity"] - S[i - 5].max()) < 2e-4
    assert sel.details["walked"] == 5 and sel.details["not_reached"] == 35


def test_diverse_quota_before_similarity():
    X = np.eye(4, dtype=np.float32)
    sel = select("diverse", k=3, order_score=None, X=X, groups=["a", "a", "b", "b"], quota={"a": 1, "b": 2})
    assert sel.chosen.tolist() == [0, 2, 3]
    assert sel.reasons == {1: {"reason": "quota", "group": "a", "quota": 1}}


# --------------------------------------------------------------------------- kcenter

@pytest.mark.parametrize("seed", range(20))
def test_kcenter_matches_reference(seed):
    c = random_case(seed)
    c["X"] = unit_rows(c["rng"], c["n"], 5)             # no duplicates: no exact ties to break by noise
    c["score"] = c["rng"].random(c["n"])
    sel, q = run("kcenter", c)
    assert sel.chosen.tolist() == naive_kcenter(c["X"], c["score"], c["groups"], q, c["k"])
    X = c["X"].astype(np.float64)
    for i, r in sel.reasons.items():
        if r["reason"] == "budget":
            s = X[i] @ X[sel.chosen].T
            assert r["nearest"] == int(sel.chosen[s.argmax()]) and abs(r["similarity"] - s.max()) < 2e-4


@pytest.mark.parametrize("batch, prefix", [(1, 1), (2, 3), (3, 16), (8, 1000)])
@pytest.mark.parametrize("seed", range(8))
def test_kcenter_lazy_folds_are_exact(monkeypatch, seed, batch, prefix):
    """The batched folds and the sorted prefix are speed knobs only: the same picks as the naive loop."""
    import sftpipe.select.methods as m

    monkeypatch.setattr(m, "_KCENTER_BATCH", batch)
    monkeypatch.setattr(m, "_KCENTER_PREFIX", prefix)
    rng = np.random.default_rng(50 + seed)
    n = int(rng.integers(20, 120))
    X = unit_rows(rng, n, int(rng.integers(2, 9)))
    g = [str(x) for x in rng.integers(0, 3, n)]
    k = int(rng.integers(1, n))
    q = quotas(g, k, {}, bool(seed % 2))
    score = rng.random(n)
    sel = select("kcenter", k=k, order_score=score, X=X, groups=g, quota=q)
    check_accounting(sel, n)
    assert sel.chosen.tolist() == naive_kcenter(X, score, g, q, k)
    X64 = X.astype(np.float64)
    for i, r in sel.reasons.items():
        s = X64[i] @ X64[sel.chosen].T
        assert r["nearest"] == int(sel.chosen[s.argmax()]) and abs(r["similarity"] - s.max()) < 2e-4


def test_kcenter_start_and_spread():
    X = np.array([[1, 0], [0.99, 0.141], [0, 1], [-1, 0], [0.7, 0.714]], dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    sel = select("kcenter", k=3, order_score=np.array([0, 1, 0, 0, 0.5]), X=X, groups=None, quota=None)
    assert sel.chosen.tolist()[0] == 1                   # the best-scored row first
    assert sel.chosen.tolist()[1] == 3                   # the farthest from it
    sel = select("kcenter", k=2, order_score=None, X=X, groups=["g"] * 5, quota={"g": 2})
    assert sel.chosen.tolist() == [0, 3]                 # no score: row 0 first
    assert sel.details["start"] == 0 and sel.details["radius"] is not None


def test_kcenter_quota_and_zero_groups():
    rng = np.random.default_rng(5)
    X = unit_rows(rng, 30, 4)
    g = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    sel = select("kcenter", k=6, order_score=rng.random(30), X=X, groups=g, quota={"a": 4, "b": 2, "c": 0})
    check_accounting(sel, 30)
    assert Counter(g[i] for i in sel.chosen.tolist()) == {"a": 4, "b": 2}
    assert all(sel.reasons[i] == {"reason": "quota", "group": "c", "quota": 0} for i in range(20, 30))


@pytest.mark.parametrize("method", ["random", "top", "diverse", "kcenter"])
def test_quota_below_k_stops_at_the_quotas(method):
    rng = np.random.default_rng(9)
    X = unit_rows(rng, 30, 6)
    g = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    sel = select(method, k=10, order_score=rng.random(30), X=X, groups=g, quota={"a": 2, "b": 1},
                 threshold=0.99)
    check_accounting(sel, 30)
    assert Counter(g[i] for i in sel.chosen.tolist()) == {"a": 2, "b": 1}
    assert sel.details["short"] == 7
    assert all(sel.reasons[i]["reason"] == "quota" for i in range(20, 30))
