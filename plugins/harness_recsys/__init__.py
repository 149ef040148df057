"""Recommenders through RecBole: MovieLens-100K and other atomic datasets, RecBole's
models as teacher and student, and the ranking distillers RD, RD-Rank, CD and DE-RRD."""
