"""The imdb-movies dataset (cleaning, split, encoding, IMDB-5000 reader) and dcnn."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from harness.errors import UsageError
from harness_movies.data import (
    GROUPS,
    VEGA_FILE,
    VEGA_SHA1,
    ImdbMovies,
    clean_vega,
    hashed_bag,
)
from harness_movies.dcnn import DCNNFactory


def load(**opts):
    params = ImdbMovies.resolve_params(opts, "test")
    return ImdbMovies(**params).load("rating")


def test_vendored_file_is_the_one_on_its_card():
    assert hashlib.sha1(VEGA_FILE.read_bytes()).hexdigest() == VEGA_SHA1


def test_cleaning_fixes_the_deliberate_errors():
    raw = json.loads(VEGA_FILE.read_text())
    df, fixes = clean_vega(raw)
    assert df["date"].dt.year.max() <= 2011
    assert fixes["years_moved_back_a_century"] == 22
    duel = df[df["Title"] == "Duel in the Sun"].iloc[0]
    assert duel["date"].year == 1946  # "Dec 31 2046" in the file
    assert fixes["numeric_titles"] == 9 and all(isinstance(t, str) for t in df["Title"])
    assert df["IMDB Rating"].notna().all()
    assert (df["Production Budget"].dropna() >= 1000).all()
    assert len(df) == 3201 - fixes["dropped_without_rating_or_date"] - fixes["dropped_duplicates"]


@pytest.mark.parametrize("group", GROUPS)
def test_each_feature_group_splits_by_year(group):
    b = load(features=group)
    assert b.task == "rating"
    assert len(b.train) > 1500 and len(b.val) > 200 and len(b.test) > 300
    assert b.train["x"].shape[1] == b.info["n_features"] == b.test["x"].shape[1]
    assert torch.isfinite(b.train["x"]).all() and torch.isfinite(b.test["x"]).all()
    # the target is standardised on the training split only
    assert abs(float(b.train["y"].mean())) < 1e-4
    assert float(b.train["y"].std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)
    assert "not the IMDB-5000/TMDB-5000 file of Bharadhwaj et al." in b.note


def test_groups_join_and_differ():
    widths = {g: load(features=g).info["n_features"] for g in GROUPS}
    assert widths["textual"] == 256
    assert load(features="numerical+social").info["n_features"] == (widths["numerical"] + widths["social"])
    assert load(features="all").info["n_features"] == sum(widths.values())


def test_split_years_are_options():
    a = load(test_from_year=2009, val_from_year=2008)
    b = load()
    assert len(a.test) < len(b.test)
    with pytest.raises(UsageError, match="the test split has 0 films"):
        load(test_from_year=2100, val_from_year=2008)
    with pytest.raises(UsageError, match="val_from_year must be before test_from_year"):
        load(test_from_year=2005, val_from_year=2008)


def test_bad_options_name_the_place():
    with pytest.raises(
        UsageError,
        match=r"here.features: unknown feature group 'socail' "
        r"\(closest: social\)",
    ):
        ImdbMovies.resolve_params({"features": "socail"}, "here")
    with pytest.raises(UsageError, match="source imdb5000 needs the path"):
        ImdbMovies.resolve_params({"source": "imdb5000"}, "here")
    with pytest.raises(UsageError, match="file not found"):
        ImdbMovies.resolve_params({"path": "/nope.json"}, "here")


def test_hashed_bag_is_stable_and_binary():
    a = hashed_bag(["The Dark Knight", "dark knight"], 64)
    assert a.shape == (2, 64) and set(np.unique(a)) <= {0.0, 1.0}
    assert a[0].sum() == 5  # the, dark, knight, "the dark", "dark knight"
    assert (a[1] <= a[0]).all()
    assert (hashed_bag(["The Dark Knight"], 64) == a[:1]).all()


IMDB_HEADER = (
    "movie_title,title_year,imdb_score,budget,duration,director_facebook_likes,"
    "actor_1_facebook_likes,actor_2_facebook_likes,actor_3_facebook_likes,"
    "cast_total_facebook_likes,movie_facebook_likes,content_rating,country,genres,"
    "plot_keywords"
)


def write_imdb5000(path, n=60):
    rng = np.random.default_rng(0)
    rows = [IMDB_HEADER]
    for i in range(n):
        year = 2000 + i % 17
        rows.append(
            f"Film {i}\xa0,{year},{rng.uniform(3, 9):.1f},{rng.integers(1, 9) * 1e6},"
            f"{rng.integers(80, 160)},{rng.integers(0, 999)},{rng.integers(0, 9999)},"
            f"{rng.integers(0, 999)},{rng.integers(0, 99)},{rng.integers(0, 20000)},"
            f"{rng.integers(0, 50000)},{'PG-13' if i % 2 else 'R'},{'USA' if i % 3 else 'UK'},"
            f"{'Action|Drama' if i % 2 else 'Comedy'},{'hero|city' if i % 2 else 'love'}"
        )
    path.write_text("\n".join(rows) + "\n")


def write_tmdb(path, n=60):
    rows = ["title,release_date,production_companies,spoken_languages,production_countries,overview,tagline"]
    for i in range(n):
        year = 2000 + i % 17
        companies = json.dumps([{"name": "A"}, {"name": "B"}][: 1 + i % 2]).replace('"', '""')
        langs = json.dumps([{"name": "English"}]).replace('"', '""')
        countries = json.dumps([{"name": "United States of America"}]).replace('"', '""')
        rows.append(
            f'Film {i},{year}-0{1 + i % 9}-15,"{companies}","{langs}","{countries}",'
            f"A story about film {i},Tagline {i}"
        )
    path.write_text("\n".join(rows) + "\n")


def test_reads_the_papers_imdb5000_and_tmdb_csvs(tmp_path):
    write_imdb5000(tmp_path / "movie_metadata.csv")
    write_tmdb(tmp_path / "tmdb_5000_movies.csv")
    b = load(source="imdb5000", path=str(tmp_path / "movie_metadata.csv"), features="numerical")
    # the paper's protocol: train 2000-2012, validate 2013, test after 2013
    assert len(b.test) == sum(1 for i in range(60) if 2000 + i % 17 >= 2014)
    assert "IMDB-5000" in b.note and "not the IMDB-5000/TMDB-5000 file" not in b.note
    merged = load(
        source="imdb5000",
        path=str(tmp_path / "movie_metadata.csv"),
        tmdb_path=str(tmp_path / "tmdb_5000_movies.csv"),
        features="all",
    )
    names = merged.info["feature_names"]
    assert "n_companies" in names and "release_month" in names
    assert any(n.startswith("production_countries=") for n in names)
    assert any(n.startswith("genres=") for n in names)
    assert merged.info["n_features"] > b.info["n_features"]


def test_imdb5000_wrong_file_is_a_clear_error(tmp_path):
    p = tmp_path / "other.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(UsageError, match="not an IMDB-5000 movie_metadata.csv"):
        load(source="imdb5000", path=str(p))


def test_dcnn_shapes_features_and_presets():
    b = load(features="categorical")
    for preset in ("teacher", "student"):
        params = DCNNFactory.resolve_params(dict(DCNNFactory.presets[preset]), "m")
        model = DCNNFactory(**params).build(b)
        x = b.train["x"][:5]
        out = model(x)
        assert out.shape == (5,)
        feats: list[torch.Tensor] = []
        hooks = [
            m.register_forward_hook(lambda _m, _i, o, out=feats: out.append(o))
            for m in model.feature_layers()
        ]
        model(x)
        for h in hooks:
            h.remove()
        assert [f.shape[1] for f in feats] == [*params["channels"], params["hidden"]]
    t = DCNNFactory(**DCNNFactory.resolve_params(dict(DCNNFactory.presets["teacher"]), "m")).build(b)
    s = DCNNFactory(**DCNNFactory.resolve_params(dict(DCNNFactory.presets["student"]), "m")).build(b)
    assert sum(p.numel() for p in s.parameters()) < 0.1 * sum(p.numel() for p in t.parameters())


def test_dcnn_rejects_bad_sizes():
    with pytest.raises(UsageError, match="kernel: expected an odd"):
        DCNNFactory.resolve_params({"kernel": 4}, "m")
    with pytest.raises(UsageError, match="channels: expected a non-empty list"):
        DCNNFactory.resolve_params({"channels": []}, "m")


def test_dataset_card_names_the_checksum():
    from pathlib import Path

    card = Path(__file__).resolve().parents[1] / "datasets" / "imdb-movies" / "README.md"
    text = card.read_text()
    assert VEGA_SHA1 in text
    assert "BSD-3-Clause" in text
