"""Dedup: exact and near-duplicate removal with MinHash LSH.

``sketch`` (normalize, shingle, hash, MinHash signatures), ``lsh`` (candidate
pairs, Jaccard, union-find), ``clusters`` (the stage: duplicates found, one
survivor per cluster, the ledger; and the near-duplicate groups split uses).
"""
