"""`make bench`: run every benchmark, write benchmarks/results.json and a readable table.

Each benchmark module exposes ``run(quick: bool) -> dict``; ratios are measured inside one run
against their baseline (see each module's docstring). ../shared/data/athenak is used for the
larger cases when present (not in --quick mode).
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

BENCHES = ("bench_reader", "bench_shards", "bench_train", "bench_sampling")


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="benchmarks/results.json")
    ap.add_argument("--quick", action="store_true", help="small cases only (minutes)")
    ap.add_argument("--only", nargs="*", default=None, help="benchmark module names to run")
    args = ap.parse_args()
    results: dict = {"meta": {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(),
                              "cpus": os.cpu_count(), "quick": args.quick, "python": platform.python_version()}}  # fmt: skip
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
    _flatten("", {k: v for k, v in results.items() if k != "meta"}, rows)
    width = max(len(k) for k, _ in rows)
    table = "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
    out.with_suffix(".md").write_text("```\n" + table + "\n```\n")
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
