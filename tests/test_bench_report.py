"""benchmarks/run_all.py: the headline table reads the results tree and judges each goal."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import run_all  # noqa: E402


def test_headline_table_values_and_goals() -> None:
    results = {
        "bench_reader": {"bundled": {"ratio_cold_reused_buffer": 0.75}},
        "bench_train": {
            "engine_overhead": {"ratio_zero1_over_plain": 1.2, "cpu_small_samples_per_s": 13.0},
            "data_wait": {"error": "boom"},
        },
    }
    rows = run_all.headline_table(results).splitlines()
    assert rows[0] == "| measure | value | goal | met |"
    body = {r.split(" | ")[0].lstrip("| "): r for r in rows[2:]}
    assert len(body) == 3  # missing and failed benchmarks are left out
    assert body["reader MB/s / np.fromfile MB/s, cold cache, bundled"].endswith(
        "| 0.75 | >= 0.7 | yes |"
    )
    assert body["DeepSpeed ZeRO-1 step (cpu-small's stage) / plain AdamW step"].endswith(
        "| 1.2 | <= 1.1 | no |"
    )
    assert body["cpu-small samples/s under the engine (1 rank)"].endswith("| 13 | (record) |  |")
