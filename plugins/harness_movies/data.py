"""The imdb-movies dataset: predict a film's IMDB rating from one group of its attributes.

Two sources, one normalised table, one encoder:
- "vega" (default): the vega-datasets movies file vendored in data/vega-movies.json
  (3,201 films; card in datasets/imdb-movies/README.md). It is not the file of
  Bharadhwaj et al. (2024, arXiv 2401.10484):
  the leaderboard says so. Its deliberate errors are cleaned (see `clean_vega`).
- "imdb5000": that paper's data, the IMDB-5000 movie_metadata.csv, merged with
  TMDB-5000's tmdb_5000_movies.csv when given (by normalised title and year), read from
  paths the user gives. Train on 2000-2013, test after 2013, as the paper does.

Feature groups (that paper's four, each used on its own, or joined with "+"):
  numerical, social, categorical, textual.
Encoding is fitted on the training films only: numbers log-scaled where heavy-tailed,
missing values filled with the training median plus a missing-indicator, standardised;
categories one-hot over the most frequent training values (the rest "other");
text as a hashed bag of words and bigrams (crc32, stable across processes).
The split is by release year: older films train, newer films test, the latest
training years validate.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from harness.api import DataBundle, Dataset, Param, TensorSplit
from harness.errors import UsageError, closest

GROUPS = ("numerical", "social", "categorical", "textual")
VEGA_FILE = Path(__file__).parent / "data" / "vega-movies.json"
VEGA_SHA1 = "c1410ac26602d650a25c6db6805c815fdfc01b10"

#: The last year a release date in the vega file can truly have (the file was compiled
#: around 2010): later years are two-digit years read into the wrong century.
VEGA_LAST_YEAR = 2011


@dataclass
class Table:
    """A normalised movie table: one row per film."""

    frame: pd.DataFrame  # has columns "year" and "target"
    numerical: list[str]
    social: list[str]
    categorical: list[str]  # single-valued columns
    multi: list[str] = field(default_factory=list)  # list-valued categorical columns
    textual: list[str] = field(default_factory=list)
    log_columns: set[str] = field(default_factory=set)
    source: str = ""


# --------------------------------------------------------------------------- sources


def clean_vega(raw: list[dict[str, Any]]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Clean the vega movies file's known errors; returns the frame and what was fixed.

    - release years after 2011 are two-digit years read as 20xx (e.g. "Dec 31 2046" for
      Duel in the Sun, 1946): moved back a century;
    - titles stored as numbers (e.g. 1776, 300) become text;
    - a production budget under $1,000 is a data-entry error: treated as missing;
    - films without an IMDB rating (the target) are dropped;
    - exact duplicate rows are dropped.
    """
    df = pd.DataFrame(raw)
    fixes = {}
    dates = pd.to_datetime(df["Release Date"], format="%b %d %Y", errors="coerce")
    bad = dates.isna() & df["Release Date"].notna()
    if bad.any():
        dates[bad] = pd.to_datetime(df.loc[bad, "Release Date"], errors="coerce", format="mixed")
    future = dates.dt.year > VEGA_LAST_YEAR
    fixes["years_moved_back_a_century"] = int(future.sum())
    dates[future] = dates[future] - pd.DateOffset(years=100)
    df["date"] = dates
    numeric_title = df["Title"].map(lambda t: isinstance(t, (int, float)) and not pd.isna(t))
    fixes["numeric_titles"] = int(numeric_title.sum())
    df["Title"] = df["Title"].map(
        lambda t: "" if t is None or (isinstance(t, float) and pd.isna(t)) else str(t)
    )
    tiny = df["Production Budget"] < 1000
    fixes["implausible_budgets"] = int(tiny.sum())
    df.loc[tiny, "Production Budget"] = np.nan
    before = len(df)
    df = df[df["IMDB Rating"].notna() & df["date"].notna()]
    fixes["dropped_without_rating_or_date"] = before - len(df)
    before = len(df)
    df = df.drop_duplicates(subset=[c for c in df.columns if c != "date"])
    fixes["dropped_duplicates"] = before - len(df)
    return df.reset_index(drop=True), fixes


def vega_table(path: Path) -> tuple[Table, dict[str, int]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{path}: cannot read a vega movies JSON file: {e}") from None
    df, fixes = clean_vega(raw)
    frame = pd.DataFrame(
        {
            "year": df["date"].dt.year.astype(int),
            "target": df["IMDB Rating"].astype(float),
            "budget": df["Production Budget"],
            "us_gross": df["US Gross"],
            "worldwide_gross": df["Worldwide Gross"],
            "dvd_sales": df["US DVD Sales"],
            "running_time": df["Running Time min"],
            "release_year": df["date"].dt.year,
            "release_month": df["date"].dt.month,
            "release_weekday": df["date"].dt.weekday,
            "imdb_votes": df["IMDB Votes"],
            "rotten_tomatoes": df["Rotten Tomatoes Rating"],
            "mpaa": df["MPAA Rating"],
            "genre": df["Major Genre"],
            "distributor": df["Distributor"],
            "source": df["Source"],
            "creative_type": df["Creative Type"],
            "director": df["Director"],
            "title": df["Title"],
        }
    )
    table = Table(
        frame,
        numerical=[
            "budget",
            "us_gross",
            "worldwide_gross",
            "dvd_sales",
            "running_time",
            "release_year",
            "release_month",
            "release_weekday",
        ],
        social=["imdb_votes", "rotten_tomatoes"],
        categorical=["mpaa", "genre", "distributor", "source", "creative_type", "director"],
        textual=["title"],
        log_columns={"budget", "us_gross", "worldwide_gross", "dvd_sales", "imdb_votes"},
        source="vega-datasets movies.json",
    )
    return table, fixes


def _norm_title(t: Any) -> str:
    return re.sub(r"[^a-z0-9]+", " ", str(t).replace("\xa0", " ").lower()).strip()


def _json_names(cell: Any) -> list[str]:
    """TMDB stores lists as JSON [{"id":..,"name":..}, ...]."""
    if not isinstance(cell, str) or not cell.strip():
        return []
    try:
        return [d["name"] for d in json.loads(cell) if isinstance(d, dict) and "name" in d]
    except (json.JSONDecodeError, TypeError):
        return []


def _pipes(cell: Any) -> list[str]:
    return [s.strip() for s in cell.split("|") if s.strip()] if isinstance(cell, str) else []


#: IMDB-5000's social columns: Facebook likes of the director, the actors, the cast, the film.
IMDB_SOCIAL = ("director_likes", "actor1_likes", "actor2_likes", "actor3_likes", "cast_likes", "movie_likes")


def imdb5000_table(path: Path, tmdb_path: Path | None) -> Table:
    """IMDB-5000 (movie_metadata.csv), optionally merged with TMDB-5000 (Bharadhwaj et al. 2024)."""
    try:
        imdb = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read IMDB-5000 CSV: {e}") from None
    need = {"movie_title", "imdb_score", "title_year"}
    missing = need - set(imdb.columns)
    if missing:
        raise UsageError(f"{path}: not an IMDB-5000 movie_metadata.csv (missing {sorted(missing)})")
    imdb = imdb[imdb["imdb_score"].notna() & imdb["title_year"].notna()].copy()
    imdb["key"] = imdb["movie_title"].map(_norm_title) + "|" + imdb["title_year"].astype(int).astype(str)
    imdb = imdb.drop_duplicates("key")
    frame = pd.DataFrame(
        {
            "year": imdb["title_year"].astype(int),
            "target": imdb["imdb_score"].astype(float),
            "budget": imdb.get("budget"),
            "duration": imdb.get("duration"),
            "release_year": imdb["title_year"],
            "director_likes": imdb.get("director_facebook_likes"),
            "actor1_likes": imdb.get("actor_1_facebook_likes"),
            "actor2_likes": imdb.get("actor_2_facebook_likes"),
            "actor3_likes": imdb.get("actor_3_facebook_likes"),
            "cast_likes": imdb.get("cast_total_facebook_likes"),
            "movie_likes": imdb.get("movie_facebook_likes"),
            "content_rating": imdb.get("content_rating"),
            "country": imdb.get("country"),
            "genres": imdb.get("genres", pd.Series(dtype=object)).map(_pipes),
            "title": imdb["movie_title"].astype(str).str.replace("\xa0", " ").str.strip(),
            "keywords": imdb.get("plot_keywords", pd.Series(dtype=object)).map(lambda c: " ".join(_pipes(c))),
            "key": imdb["key"],
        }
    ).reset_index(drop=True)
    numerical = ["budget", "duration", "release_year"]
    categorical = ["content_rating", "country"]
    multi = ["genres"]
    textual = ["title", "keywords"]
    if tmdb_path is not None:
        try:
            tmdb = pd.read_csv(tmdb_path)
        except (OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
            raise UsageError(f"{tmdb_path}: cannot read TMDB-5000 CSV: {e}") from None
        if not {"title", "release_date"} <= set(tmdb.columns):
            raise UsageError(f"{tmdb_path}: not a tmdb_5000_movies.csv (needs title, release_date)")
        date = pd.to_datetime(tmdb["release_date"], errors="coerce")
        tmdb = pd.DataFrame(
            {
                "key": tmdb["title"].map(_norm_title) + "|" + date.dt.year.astype("Int64").astype(str),
                "release_month": date.dt.month,
                "release_day": date.dt.day,
                "n_companies": tmdb.get("production_companies", pd.Series(dtype=object)).map(
                    lambda c: len(_json_names(c))
                ),
                "n_languages": tmdb.get("spoken_languages", pd.Series(dtype=object)).map(
                    lambda c: len(_json_names(c))
                ),
                "production_countries": tmdb.get("production_countries", pd.Series(dtype=object)).map(
                    _json_names
                ),
                "overview": tmdb.get("overview", pd.Series(dtype=object)).fillna("").astype(str),
                "tagline": tmdb.get("tagline", pd.Series(dtype=object)).fillna("").astype(str),
            }
        ).drop_duplicates("key")
        frame = frame.merge(tmdb, on="key", how="left")
        numerical += ["release_month", "release_day", "n_companies", "n_languages"]
        multi += ["production_countries"]
        textual += ["overview", "tagline"]
    for col in multi:
        frame[col] = frame[col].map(lambda v: v if isinstance(v, list) else [])
    for col in textual:
        frame[col] = frame[col].fillna("").astype(str)
    return Table(
        frame,
        numerical=numerical,
        social=list(IMDB_SOCIAL),
        categorical=categorical,
        multi=multi,
        textual=textual,
        log_columns={"budget", *IMDB_SOCIAL},  # counts of likes are heavy-tailed
        source="IMDB-5000" + (" + TMDB-5000" if tmdb_path is not None else ""),
    )


# --------------------------------------------------------------------------- encoding


TOKEN = re.compile(r"[a-z0-9]+")


def hashed_bag(texts: list[str], dim: int) -> np.ndarray:
    """Binary bag of unigrams and bigrams hashed into `dim` buckets with crc32."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        toks = TOKEN.findall(text.lower())
        grams = toks + [f"{a} {b}" for a, b in zip(toks, toks[1:], strict=False)]
        for g in grams:
            out[i, zlib.crc32(g.encode()) % dim] = 1.0
    return out


def encode(
    table: Table, groups: list[str], train_mask: np.ndarray, text_dim: int, max_categories: int
) -> tuple[np.ndarray, list[str]]:
    """Encode the chosen feature groups; every statistic comes from the training rows."""
    df = table.frame
    blocks: list[np.ndarray] = []
    names: list[str] = []

    def numeric(cols: list[str]) -> None:
        for col in cols:
            v = pd.to_numeric(df[col], errors="coerce").astype(float).to_numpy()
            if col in table.log_columns:
                v = np.sign(v) * np.log1p(np.abs(v))
            miss = np.isnan(v)
            train_vals = v[train_mask & ~miss]
            fill = float(np.median(train_vals)) if len(train_vals) else 0.0
            v = np.where(miss, fill, v)
            mu, sd = float(v[train_mask].mean()), float(v[train_mask].std())
            blocks.append(((v - mu) / (sd if sd > 0 else 1.0))[:, None])
            names.append(col)
            if miss.any():
                blocks.append(miss.astype(np.float32)[:, None])
                names.append(f"{col}:missing")

    for g in groups:
        if g in ("numerical", "social"):
            numeric(getattr(table, g))
        elif g == "categorical":
            for col in table.categorical:
                vals = df[col].fillna("<missing>").astype(str)
                counts = vals[train_mask].value_counts()
                keep = [c for c in counts.index[:max_categories] if counts[c] >= 2]
                index = {c: i for i, c in enumerate(keep)}
                onehot = np.zeros((len(df), len(keep) + 1), dtype=np.float32)
                for r, val in enumerate(vals):
                    onehot[r, index.get(val, len(keep))] = 1.0
                blocks.append(onehot)
                names += [f"{col}={c}" for c in keep] + [f"{col}=<other>"]
            for col in table.multi:
                counts = pd.Series([x for lst in df.loc[train_mask, col] for x in lst]).value_counts()
                keep = [c for c in counts.index[:max_categories] if counts[c] >= 2]
                index = {c: i for i, c in enumerate(keep)}
                multi = np.zeros((len(df), len(keep)), dtype=np.float32)
                for r, lst in enumerate(df[col]):
                    for x in lst:
                        if x in index:
                            multi[r, index[x]] = 1.0
                blocks.append(multi)
                names += [f"{col}={c}" for c in keep]
        elif g == "textual":
            text = df[table.textual].fillna("").astype(str).agg(" ".join, axis=1).tolist()
            blocks.append(hashed_bag(text, text_dim))
            names += [f"text#{i}" for i in range(text_dim)]
    x = np.concatenate(blocks, axis=1).astype(np.float32)
    return x, names


# --------------------------------------------------------------------------- dataset


def parse_groups(value: str) -> list[str]:
    if value == "all":
        return list(GROUPS)
    groups = [g.strip() for g in value.split("+")]
    return groups


class ImdbMovies(Dataset):
    name = "imdb-movies"
    label = "IMDB movies"
    description = (
        "film rating from numerical, social, categorical or textual attributes "
        "(Bharadhwaj et al.'s (2024) movie task); vendored vega movies, or IMDB-5000/TMDB-5000 CSVs"
    )
    tasks = frozenset({"rating"})
    params = {
        "features": Param(
            "numerical",
            "feature group: numerical, social, categorical, textual; "
            "join with + (numerical+social) or say all",
        ),
        "source": Param(
            "vega", "vega (vendored file) or imdb5000 (movie_metadata.csv)", choices=("vega", "imdb5000")
        ),
        "path": Param(
            None,
            "data file: a vega movies JSON (source vega; default: the vendored "
            "copy) or movie_metadata.csv (source imdb5000)",
            type=str,
        ),
        "tmdb_path": Param(None, "tmdb_5000_movies.csv to merge with IMDB-5000", type=str),
        "test_from_year": Param(
            None, "first release year of the test split (default: 2007 for vega, 2014 for imdb5000)", type=int
        ),
        "val_from_year": Param(
            None,
            "first release year of the validation split (default: 2005 for vega, 2013 for imdb5000)",
            type=int,
        ),
        "train_from_year": Param(
            None, "drop films released earlier (default: none for vega, 2000 for imdb5000)", type=int
        ),
        "text_dim": Param(256, "buckets of the hashed bag of words (textual)"),
        "max_categories": Param(50, "most frequent training values kept per categorical column"),
    }

    DEFAULT_YEARS = {"vega": (None, 2005, 2007), "imdb5000": (2000, 2013, 2014)}

    @classmethod
    def check(cls, params: dict[str, Any], where: str) -> None:
        for g in parse_groups(params["features"]):
            if g not in GROUPS:
                raise UsageError(
                    f"{where}.features: unknown feature group {g!r}"
                    + (closest(g, GROUPS) or f" (groups: {', '.join(GROUPS)})")
                )
        if params["source"] == "imdb5000" and not params["path"]:
            raise UsageError(f"{where}.path: source imdb5000 needs the path of movie_metadata.csv")
        if params["tmdb_path"] and params["source"] != "imdb5000":
            raise UsageError(f"{where}.tmdb_path: only used with source imdb5000")
        for key in ("path", "tmdb_path"):
            if params[key] and not Path(params[key]).expanduser().is_file():
                raise UsageError(f"{where}.{key}: file not found: {params[key]}")
        v, t = params["val_from_year"], params["test_from_year"]
        if v is not None and t is not None and v >= t:
            raise UsageError(f"{where}.val_from_year must be before test_from_year ({v} >= {t})")
        for key in ("text_dim", "max_categories"):
            if params[key] < 1:
                raise UsageError(f"{where}.{key}: must be at least 1")

    def table(self) -> tuple[Table, dict[str, int]]:
        p = self.hparams
        if p["source"] == "imdb5000":
            tmdb = Path(p["tmdb_path"]).expanduser() if p["tmdb_path"] else None
            return imdb5000_table(Path(p["path"]).expanduser(), tmdb), {}
        return vega_table(Path(p["path"]).expanduser() if p["path"] else VEGA_FILE)

    def load(self, task: str) -> DataBundle:
        p = self.hparams
        table, fixes = self.table()
        d_train, d_val, d_test = self.DEFAULT_YEARS[p["source"]]
        train_from = p["train_from_year"] if p["train_from_year"] is not None else d_train
        val_from = p["val_from_year"] if p["val_from_year"] is not None else d_val
        test_from = p["test_from_year"] if p["test_from_year"] is not None else d_test
        df = table.frame
        year = df["year"].to_numpy()
        keep = np.ones(len(df), bool) if train_from is None else year >= train_from
        table.frame = df = df[keep].reset_index(drop=True)
        year = df["year"].to_numpy()
        test_m = year >= test_from
        val_m = (year >= val_from) & ~test_m
        train_m = ~test_m & ~val_m
        for name, m in (("train", train_m), ("validation", val_m), ("test", test_m)):
            if m.sum() < 2:
                raise UsageError(
                    f"imdb-movies: the {name} split has {int(m.sum())} films "
                    f"(years: train < {val_from} <= val < {test_from} <= test)"
                )
        groups = parse_groups(p["features"])
        x, names = encode(table, groups, train_m, p["text_dim"], p["max_categories"])
        y = df["target"].to_numpy(dtype=np.float32)
        mean, std = float(y[train_m].mean()), float(y[train_m].std())
        ys = (y - mean) / std

        def split(m: np.ndarray) -> TensorSplit:
            return TensorSplit({"x": torch.from_numpy(x[m].copy()), "y": torch.from_numpy(ys[m].copy())})

        note = (
            f"{table.source}, features {'+'.join(groups)} ({x.shape[1]} inputs); "
            f"train < {val_from} <= val < {test_from} <= test by release year "
            f"({int(train_m.sum())}/{int(val_m.sum())}/{int(test_m.sum())} films)"
        )
        if p["source"] == "vega":
            note += (
                "; not the IMDB-5000/TMDB-5000 file of Bharadhwaj et al. (2024), so "
                "figures are not comparable with their Table 4"
            )
        return DataBundle(
            task="rating",
            train=split(train_m),
            val=split(val_m),
            test=split(test_m),
            info={
                "n_features": x.shape[1],
                "feature_names": names,
                "target_mean": mean,
                "target_std": std,
                "cleaning": fixes,
                "groups": groups,
            },
            note=note,
        )
