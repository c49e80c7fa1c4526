"""`make bench`: run every benchmark, write benchmarks/results.json and a readable table.

Each benchmark module exposes ``run(quick: bool) -> dict``; ratios are measured inside one run
against their baseline (see each module's docstring). A larger AthenaK data set given by
``$MHDSR_BENCH_DATA`` (benchmarks/common.py) is used for the larger cases when set (not in
--quick mode). ``--only NAME ... --merge`` re-runs some benchmarks and keeps the others' figures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DS_ACCELERATOR", "cpu")

BENCHES = (
    "bench_reader",
    "bench_shards",
    "bench_train",
    "bench_loader",
    "bench_sampling",
    "bench_forecast",
)


def _flatten(prefix: str, obj, out: list[tuple[str, str]]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    elif isinstance(obj, float):
        out.append((prefix, f"{obj:.4g}"))
    elif isinstance(obj, list) and len(obj) > 12:
        out.append((prefix, f"[{len(obj)} items]"))
    else:
        out.append((prefix, str(obj)))


# (path in results, what it measures, goal as (op, value) or None for "for the record")
HEADLINES = (
    ("bench_reader.bundled.ratio_cold_reused_buffer", "reader MB/s / np.fromfile MB/s, cold cache, bundled", (">=", 0.7)),
    ("bench_reader.extra.ratio_cold_reused_buffer", "reader MB/s / np.fromfile MB/s, cold cache, $MHDSR_BENCH_DATA", (">=", 0.7)),
    ("bench_reader.extra.ratio_warm_reused_buffer", "reader MB/s / np.fromfile MB/s, page cache, $MHDSR_BENCH_DATA", None),
    ("bench_shards.bundled.ratio_build_2w_vs_read_cold", "shard build MB/s (2 workers) / raw read MB/s, cold, bundled", (">=", 0.5)),
    ("bench_shards.extra.ratio_build_2w_vs_read_cold", "shard build MB/s (2 workers) / raw read MB/s, cold, $MHDSR_BENCH_DATA", (">=", 0.5)),
    ("bench_shards.bundled.speedup_1_to_2_workers_cold", "shard build speed-up 1 -> 2 workers, bundled", (">=", 1.8)),
    ("bench_shards.extra.speedup_1_to_2_workers_cold", "shard build speed-up 1 -> 2 workers, $MHDSR_BENCH_DATA", (">=", 1.8)),
    ("bench_train.engine_overhead.ratio_zero1_over_plain", "DeepSpeed ZeRO-1 step (cpu-small's stage) / plain AdamW step", ("<=", 1.1)),
    ("bench_train.engine_overhead.ratio_zero0_over_plain", "  same, ZeRO-0", None),
    ("bench_train.engine_overhead.ratio_zero2_over_plain", "  same, ZeRO-2", None),
    ("bench_train.engine_overhead.cpu_small_samples_per_s", "cpu-small samples/s under the engine (1 rank)", None),
    ("bench_train.data_wait.data_wait_frac", "data-wait fraction of a real mhdsr train run", ("<", 0.05)),
    ("bench_train.data_wait.mfu", "MFU of a real mhdsr train run (cpu-small, vs CPU matmul peak)", None),
    ("bench_loader.loader_1_worker_samples_per_s", "loader samples/s per worker, 256^2, 8 channels", None),
    ("bench_loader.ratio_loader_1_worker_vs_in_memory", "loader (1 worker) / in-memory decode of the same tar bytes", (">=", 0.8)),
    ("bench_loader.checksum_cost.ratio_checked_vs_unchecked", "in-memory decode with / without the per-sample checksum (sum64) check", (">=", 0.95)),
    ("bench_loader.workers_per_gpu_for_160", "loader workers per GPU for 160 samples/s (CPU-derived)", None),
    ("bench_train.gpu_40m.fwd_bwd_s_cpu_fp32_256sq_batch1", "gpu-40m fwd+bwd s, 256^2 batch 1, fp32 on this CPU", None),
    ("bench_train.gpu_40m.training_TFLOP_per_sample_256sq", "gpu-40m training TFLOP per 256^2 sample (counted)", None),
    ("bench_forecast.ms_per_member_step_nfe8", "generative forecast step ms per member, 8 NFE (Heun 4), 128^2, this CPU", None),
    ("bench_forecast.ratio_nfe8_over_fno", "  same / the FNO's deterministic step", None),
    ("bench_sampling.throughput.samples_per_s_at_8_nfe", "256^2 samples/s at 8 NFE, cpu-small, this CPU", None),
)  # fmt: skip


def _get(results: dict, path: str):
    node = results
    for k in path.split("."):
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def headline_table(results: dict) -> str:
    """Markdown table of the headline figures with their goals (missing ones left out)."""
    ops = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}
    lines = ["| measure | value | goal | met |", "|---|---|---|---|"]
    for path, label, goal in HEADLINES:
        v = _get(results, path)
        if not isinstance(v, (int, float)):
            continue
        g, met = (
            ("(record)", "")
            if goal is None
            else (f"{goal[0]} {goal[1]}", "yes" if ops[goal[0]](v, goal[1]) else "no")
        )
        lines.append(f"| {label} | {v:.4g} | {g} | {met} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="benchmarks/results.json")
    ap.add_argument("--quick", action="store_true", help="small cases only (minutes)")
    ap.add_argument("--only", nargs="*", default=None, help="benchmark module names to run")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other benchmarks' results already in --out (with --only)")  # fmt: skip
    args = ap.parse_args()
    results: dict = {}
    if args.merge and Path(args.out).is_file():
        results = {k: v for k, v in json.loads(Path(args.out).read_text()).items() if k in BENCHES}
    results["meta"] = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(),
                       "cpus": os.cpu_count(), "quick": args.quick, "python": platform.python_version(),
                       "load_avg": list(os.getloadavg()), "ran": list(args.only or BENCHES)}  # fmt: skip
    failed = []
    for name in args.only or BENCHES:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            results[name] = importlib.import_module(name).run(args.quick)
        except Exception as e:  # keep the other benchmarks' numbers
            traceback.print_exc()
            results[name] = {"error": repr(e)}
            failed.append(name)
        results[name]["_seconds"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=2) + "\n")
    rows: list[tuple[str, str]] = []
    tables = []  # markdown tables a benchmark rendered itself (keys ending in _md)
    for name, res in results.items():
        if name != "meta":
            tables += [
                f"### {name}.{k[:-3]}\n\n{v}"
                for k, v in res.items()
                if k.endswith("_md") and isinstance(v, str)
            ]
            _flatten(name, {k: v for k, v in res.items() if not k.endswith("_md")}, rows)
    width = max(len(k) for k, _ in rows)
    table = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    head = headline_table(results)
    doc = f"## Headline figures\n\n{head}\n\n" + "".join(f"{t}\n\n" for t in tables)
    out.with_suffix(".md").write_text(doc + "## All figures\n\n```\n" + table + "\n```\n")
    print(table + "\n\n" + head + "\n\n" + "\n\n".join(tables))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
