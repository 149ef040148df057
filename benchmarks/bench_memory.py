"""Memory across the cells of a long grid: resident memory after each cell, run in one
process as `harness run` does. Flat means no model or dataset leaks between cells.

    python benchmarks/bench_memory.py [--cells 32] [--passes 3]

The grid is run several times over (--passes) in the same process. During the first pass memory steps up
as each new dataset enters the per-process cache and the allocator's pools grow for
each new kind of work; later passes run exactly the same cells, so growth from
the end of the first pass to the end of the last is a leak.
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap
from pathlib import Path

from _common import hardware
from harness.grid import load_grid
from harness.plugins import get_registry
from harness.runner import RunOptions, run_cell


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=32)
    ap.add_argument("--passes", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        grid_file = Path(tmp) / "mem.yaml"
        grid_file.write_text(
            textwrap.dedent(f"""
            datasets: [{{name: imdb-movies, features: [numerical, categorical]}}]
            teacher: {{model: dcnn, preset: teacher}}
            student: {{model: dcnn, preset: student}}
            distillers: [none, kd]
            seeds: {max(1, args.cells // 4)}
            budget: {{epochs: 2, teacher_epochs: 2, batch_size: 256}}
            energy: {{inference_min_seconds: 0.0}}
        """)
        )
        cells = load_grid(grid_file, get_registry()).cells[: args.cells]
        opts = RunOptions(teacher_dir=str(Path(tmp) / "teachers"))
        print(f"{len(cells)} cells in one process; {hardware()}")
        ends = []
        for rep in range(1, args.passes + 1):
            for i, c in enumerate(cells):
                rec = run_cell(c.config, c.id, "mem", opts)
                if (i + 1) % 8 == 0 or i + 1 == len(cells):
                    print(
                        f"  pass {rep} cell {i + 1:>3} {rec['status']:<6} "
                        f"{rec['dataset']:<34} {rec['distiller']:<5} RSS {rss_mib():8.1f} MiB"
                    )
            ends.append(rss_mib())
        print("RSS at the end of each pass: " + ", ".join(f"{e:.1f}" for e in ends) + " MiB")
        print(
            f"growth from the end of pass 1 to the end of pass {len(ends)} (the same cells "
            f"again): {ends[-1] - ends[0]:+.1f} MiB ({(ends[-1] / ends[0] - 1) * 100:+.2f}%)"
        )


if __name__ == "__main__":
    main()
