"""Memory of a grid's cells, as `harness run` records it.

    python benchmarks/bench_memory.py [--epochs 2] [--seeds 1] [--passes 3] [--leak-cells 32]

1. Peak memory of each cell of the largest published grid, grids/cd-ml100k.yaml
   --section cpu (CDAE on MovieLens-100K: the plain student and every distiller of the
   section), run by `harness run` in this process (-j 1) from a trimmed copy: --seeds
   seeds (the grid has 5) and --epochs student and teacher epochs (the grid has 100
   and 80). Epochs repeat the same work on the same tensors and
   seeds change no shape, so the trim changes the run time, not what a cell holds at its
   peak. Each cell's record carries `memory` (harness/memory.py): the process's peak
   RSS over the cell (the kernel's VmHWM, reset when the cell starts), its RSS at the
   start (the interpreter, torch, data cached by earlier cells), and on CUDA the
   allocator's peak. The cost of measuring it is printed too.
2. A leak check: a small grid run --passes times over in one process, RSS after each
   pass; growth from the end of the first pass to the end of the last is a leak.

Ends with one JSON line: {"bench": "memory", "hardware": ..., "ratios": {...}}: each
cell's peak RSS over the plain student's ("cdae/<method>"), and the leak check's RSS at
the end of the last pass over the first ("leak/last-over-first-pass").
"""

from __future__ import annotations

import argparse
import os
import tempfile
import textwrap
import time
from pathlib import Path

import yaml

from _common import emit, hardware
from harness.cli import main as harness
from harness.compact import short_labels
from harness.grid import apply_section, load_grid
from harness.gridfile import load_yaml
from harness.memory import PeakMemory, release_freed_memory, reset_kernel_peak
from harness.plugins import get_registry
from harness.runner import RunOptions, run_cell
from harness.store import Store

GRID = Path(__file__).resolve().parents[1] / "grids" / "cd-ml100k.yaml"


def rss_mib() -> float:
    """The live RSS: what the process holds once the freed memory a training keeps for
    reuse (harness/memory.py) is given back, so a pass's end is comparable to another's."""
    release_freed_memory()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def trimmed_grid(folder: Path, epochs: int, seeds: int) -> Path:
    """grids/cd-ml100k.yaml --section cpu as one flat grid, with fewer epochs and seeds."""
    doc = load_yaml(GRID)
    apply_section(doc, "cpu")
    data = doc.data
    data["name"] = "cd-ml100k-cpu-trimmed"
    data["seeds"] = seeds
    data.pop("published", None)
    for model in data["overrides"].values():
        budget = model.setdefault("budget", {})
        budget["epochs"] = epochs
        budget["teacher_epochs"] = epochs
    path = folder / "cd-ml100k-cpu-trimmed.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def measuring_cost() -> str:
    """What measuring a cell's peak costs: the kernel's peak reset and read (once per
    cell), and one sample of the fallback sampler (every 50 ms)."""
    n = 200
    t0 = time.perf_counter()
    for _ in range(n):
        m = PeakMemory("cpu")
        m.start()
        m.stop()
    per_cell = (time.perf_counter() - t0) / n
    m = PeakMemory("cpu", kernel=False)
    t0 = time.perf_counter()
    for _ in range(n):
        m._sample()
    per_sample = (time.perf_counter() - t0) / n
    kernel = "kernel peak resettable" if reset_kernel_peak() else "kernel peak NOT resettable here: sampled"
    return (
        f"{kernel}; start+stop {per_cell * 1e6:.0f} µs per cell; a fallback sample "
        f"{per_sample * 1e6:.0f} µs (every 50 ms: {per_sample / 0.05:.2%} of a core)"
    )


def peaks(epochs: int, seeds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        grid = trimmed_grid(Path(tmp), epochs, seeds)
        print(
            f"1. peak memory per cell: {GRID.name} --section cpu, trimmed to {seeds} seed(s) and "
            f"{epochs} epochs (student and teacher), run by `harness run -j 1` in this process"
        )
        code = harness(["run", "--grid", str(grid), "--out", str(Path(tmp) / "run"), "--no-progress"])
        store = Store.open_existing(Path(tmp) / "run" / "results.db")
        records = sorted(store.records(), key=lambda r: r["started"] or 0)
        store.close()
    print(f"   harness run exited {code}")
    ran = [r for r in records if r["status"] in ("ok", "failed") and r.get("memory")]
    labels = short_labels(sorted({r["method"] for r in ran}))
    print(f"   {'cell (in run order)':<34} {'seed':>4} {'start':>8} {'peak':>8} {'peak-start':>10}  MiB")
    for r in ran:
        m = r["memory"]
        trained = " (trained the teacher)" if (r.get("teacher_run") or {}).get("cached") is False else ""
        print(
            f"   {labels[r['method']]:<34} {r['seed']:>4} {m['start_rss_mib']:8.1f} {m['peak_rss_mib']:8.1f} "
            f"{m['peak_rss_mib'] - m['start_rss_mib']:10.1f}  {m['rss_method']}"
            + (f", CUDA {m['cuda_max_allocated_mib']:.1f}" if m.get("cuda_max_allocated_mib") else "")
            + f" [{r['status']}]{trained}"
        )
    plain = [r["memory"]["peak_rss_mib"] for r in ran if r["distiller"] == "none"]
    base = max(plain) if plain else None
    ratios = {}
    for r in ran:
        if base:
            key = f"cdae/{labels[r['method']]}"
            ratios[key] = round(max(ratios.get(key, 0.0), r["memory"]["peak_rss_mib"] / base), 4)
    return ratios


def leak(cells: int, passes: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        grid_file = Path(tmp) / "mem.yaml"
        grid_file.write_text(
            textwrap.dedent(f"""
            datasets: [{{name: imdb-movies, features: [numerical, categorical]}}]
            teacher: {{model: dcnn, preset: teacher}}
            student: {{model: dcnn, preset: student}}
            distillers: [none, kd]
            seeds: {max(1, cells // 4)}
            budget: {{epochs: 2, teacher_epochs: 2, batch_size: 256}}
            energy: {{inference_min_seconds: 0.0}}
        """)
        )
        grid_cells = load_grid(grid_file, get_registry()).cells[:cells]
        opts = RunOptions(teacher_dir=str(Path(tmp) / "teachers"))
        print(f"2. leak check: {len(grid_cells)} cells in one process, {passes} passes")
        ends = []
        for rep in range(1, passes + 1):
            for i, c in enumerate(grid_cells):
                rec = run_cell(c.spec, "mem", opts)
                if (i + 1) % 8 == 0 or i + 1 == len(grid_cells):
                    print(
                        f"   pass {rep} cell {i + 1:>3} {rec['status']:<6} "
                        f"{rec['dataset']:<34} {rec['distiller']:<5} RSS {rss_mib():8.1f} MiB"
                    )
            ends.append(rss_mib())
    print("   RSS at the end of each pass: " + ", ".join(f"{e:.1f}" for e in ends) + " MiB")
    print(
        f"   growth from the end of pass 1 to the end of pass {len(ends)} (the same cells "
        f"again): {ends[-1] - ends[0]:+.1f} MiB ({(ends[-1] / ends[0] - 1) * 100:+.2f}%)"
    )
    return {"leak/last-over-first-pass": round(ends[-1] / ends[0], 4)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--leak-cells", type=int, default=32)
    args = ap.parse_args()
    print(f"{hardware()}; load {os.getloadavg()[0]:.2f}; measuring: {measuring_cost()}")
    ratios = peaks(args.epochs, args.seeds)
    ratios |= leak(args.leak_cells, args.passes)
    emit("memory", ratios)


if __name__ == "__main__":
    main()
