"""Helpers for the evaluation tests: demo shards, truth read from them, fabricated sample files.

Sample files follow the inference layout of docs/design.md ("Formats"), written with h5py directly
(the tests do not need ``mhdsr sample``): ``samples`` (T, E, C, H, W), ``input`` (T, C, h, w),
``time``, ``snapshot``, ``key`` and the documented attributes.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from mhdsr.channels import CHANNELS
from mhdsr.method.grid import avgpool2, upsample

REPO = Path(__file__).resolve().parents[1]


def build_demo_shards(out: Path) -> Path:
    """The demo shard folder (configs/shard/demo.yaml) built into ``out`` (~5 s)."""
    cmd = [
        sys.executable,
        "-m",
        "mhdsr",
        "shard",
        "build",
        "--config",
        "configs/shard/demo.yaml",
        f"output_dir={out}",
        "progress=false",
    ]
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True)
    return out


def read_split(
    shards: Path, split: str, member: str = "hi.npy"
) -> dict[str, tuple[np.ndarray, dict]]:
    """``key -> (array, json record)`` of every sample of a split (read with tarfile)."""
    manifest = json.loads((shards / "manifest.json").read_text())
    out: dict[str, list[Any]] = {}
    for sh in manifest["splits"][split]["shards"]:
        with tarfile.open(shards / sh["name"]) as tf:
            for ti in tf:
                key, _, ext = ti.name.partition(".")
                data = tf.extractfile(ti).read()
                rec = out.setdefault(key, [None, None])
                if ext == member:
                    rec[0] = np.load(io.BytesIO(data))
                elif ext == "json":
                    rec[1] = json.loads(data)
    return {k: (v[0], v[1]) for k, v in sorted(out.items()) if v[0] is not None}


def truth_of_sim(shards: Path, split: str, sim: str, n: int | None = None, member: str = "hi.npy"):
    """``(keys, fields (T, 8, H, W) float32, snapshots, times, seed)`` of one sim, by snapshot."""
    recs = [(k, a, r) for k, (a, r) in read_split(shards, split, member).items() if r["sim"] == sim]
    recs.sort(key=lambda x: x[2]["snapshot"])
    recs = recs[:n] if n else recs
    keys = [k for k, _, _ in recs]
    fields = np.stack([a for _, a, _ in recs]).astype(np.float32)
    snaps = np.array([r["snapshot"] for _, _, r in recs], np.int64)
    times = np.array([r["time"] for _, _, r in recs], np.float64)
    return keys, fields, snaps, times, recs[0][2]["seed"]


def pool(hi: np.ndarray) -> np.ndarray:
    """avgpool2 of (..., H, W) float32 (the training input)."""
    return avgpool2(torch.from_numpy(hi)).numpy()


def up(lo: np.ndarray, mode: str) -> np.ndarray:
    """Periodic upsampling by 2 of (T, C, h, w) float32 (the baselines)."""
    return upsample(torch.from_numpy(np.ascontiguousarray(lo)), 2, mode).numpy()


def write_samples(
    path: Path,
    samples: np.ndarray,
    inputs: np.ndarray,
    *,
    snapshots: np.ndarray,
    times: np.ndarray,
    sim: str,
    sim_seed: int,
    keys: list[str] | None = None,
    lo_kind: str = "derived_avgpool2",
    source: str = "shards:test",
    sampler: str = "heun",
    steps: int = 8,
    weights: str = "ema",
    channels: tuple[str, ...] = CHANNELS,
) -> Path:
    """Write one inference file with the layout of docs/design.md ("Formats")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["samples"] = np.asarray(samples, np.float32)
        f["input"] = np.asarray(inputs, np.float32)
        f["time"] = np.asarray(times, np.float64)
        f["snapshot"] = np.asarray(snapshots, np.int64)
        if keys is not None:
            f["key"] = np.array(keys, dtype=h5py.string_dtype())
        a = f.attrs
        a["channels"] = list(channels)
        a["sampler"] = json.dumps(
            {
                "name": sampler,
                "steps": steps,
                "grid": "linear",
                "options": {},
                "nfe": 2 * steps - 1 if sampler == "heun" else steps,
            }
        )
        a["checkpoint"] = "runs/test/export/weights.pt"
        a["checkpoint_sha256"] = "0" * 64
        a["checkpoint_step"] = 100
        a["weights"] = weights
        a["sigma"] = 0.1
        a["seed"] = 0
        a["code_version"] = "test"
        a["sim"] = sim
        a["sim_seed"] = sim_seed
        a["source"] = source
        a["lo_kind"] = lo_kind
        a["upsample"] = "bilinear"
        a["complete"] = True
    return path


_SHARDS: dict[str, Path] = {}


def shared_demo_shards(tmp_path_factory: Any) -> Path:
    """Demo shards built once per test session (shared by the eval test modules)."""
    if "demo" not in _SHARDS:
        _SHARDS["demo"] = build_demo_shards(tmp_path_factory.mktemp("eval_shards") / "shards")
    return _SHARDS["demo"]
