"""The plots beside each compact table: the Pareto front, and valid PNG/SVG files that
the markdown embeds."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
from matplotlib import image

from harness.leaderboard import write_leaderboards
from harness.plots import pareto_front
from tests.test_compact import board_records


def test_pareto_front_of_a_hand_made_point_set():
    # (size, error): a dominated point, a tie in size, an equal duplicate, one alone at the top
    xs = [1, 2, 2, 3, 4, 5, 5]
    ys = [0.9, 0.7, 0.8, 0.75, 0.5, 0.5, 0.6]
    assert pareto_front(xs, ys, lower_y_better=True) == [0, 1, 4]
    # higher is better (NDCG): the front is the upper-left staircase
    assert pareto_front(xs, ys, lower_y_better=False) == [0]
    assert pareto_front([1, 2, 3], [0.1, 0.2, 0.3], lower_y_better=False) == [0, 1, 2]
    assert pareto_front([1.0, float("nan")], [0.5, 0.1], lower_y_better=True) == [0]


def test_every_table_embeds_a_png_and_an_svg_that_exist_and_are_valid(tmp_path):
    records, teachers = board_records(np.random.default_rng(2))
    (md_path,) = write_leaderboards(records, teachers, tmp_path)
    md = md_path.read_text()
    embedded = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    svgs = re.findall(r"\[SVG\]\(([^)]+\.svg)\)", md)
    assert len(embedded) == len(svgs) == 3  # one per compact table
    for png in embedded:
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = image.imread(tmp_path / png)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 600
        assert pixels[..., :3].std() > 0.05  # not a blank canvas
    for svg in svgs:
        root = ET.parse(tmp_path / svg).getroot()
        assert root.tag.endswith("svg")
        text = (tmp_path / svg).read_text()
        assert "KD" in text and "Teacher" in text  # points labelled with their methods
    # a pruned family's plot has the third panel: the levels against % size
    pruned = next(p for p in embedded if p.endswith("-sp.png"))
    assert image.imread(tmp_path / pruned).shape[1] > image.imread(tmp_path / embedded[0]).shape[1]
    assert "% of the student" in (tmp_path / pruned.replace(".png", ".svg")).read_text()
    # rebuilding gives the same files (no timestamps, fixed SVG ids)
    again = tmp_path / "again"
    write_leaderboards(records, teachers, again)
    for f in embedded + svgs:
        assert (again / f).read_bytes() == (tmp_path / f).read_bytes(), f
