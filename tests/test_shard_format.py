"""Sample encoding (npy bytes, keys), shard cutting, the split rule and manifest helpers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from mhdsr.dataset.manifest import (
    SCHEMA_VERSION,
    manifest_sha256,
    normalization,
    read_manifest,
    shard_paths,
)
from mhdsr.dataset.npy import encode_npy, sample_key
from mhdsr.errors import ConfigError, ShardError
from mhdsr.shard_builder.common import assign_splits, cut_shards, npy_bytes
from mhdsr.shard_builder.config import ShardBuildConfig


def _decode(b: bytes) -> np.ndarray:
    return np.load(io.BytesIO(b), allow_pickle=False)


@pytest.mark.parametrize(
    "make",
    [
        lambda x: x.astype(">f4"),  # big-endian
        lambda x: x[:, ::-1, ::2],  # negative/strided view
        lambda x: np.asfortranarray(x),  # Fortran order
        lambda x: x.astype(">f4").transpose(0, 2, 1),  # big-endian and transposed
    ],
)
def test_encode_npy_stores_little_endian_c_contiguous_with_values_preserved(make) -> None:
    base = np.random.default_rng(0).standard_normal((8, 6, 10)).astype(np.float32)
    x = make(base)
    b = encode_npy(x)
    y = _decode(b)
    assert y.dtype.str == "<f4" and y.flags.c_contiguous and y.shape == x.shape
    np.testing.assert_array_equal(y, x)
    # byte-identical to what np.save writes for the canonical array
    ref = io.BytesIO()
    np.save(ref, np.ascontiguousarray(x, dtype="<f4"))
    assert b == ref.getvalue()
    # raw payload is little-endian: the last bytes are the last value in '<f4'
    assert b[-4:] == np.float32(np.ascontiguousarray(x).ravel()[-1]).astype("<f4").tobytes()


def test_encode_npy_refuses_lossy_dtypes_and_sizes_match_plan() -> None:
    with pytest.raises(ValueError, match="float32"):
        encode_npy(np.zeros((2, 2), np.float64))
    assert len(encode_npy(np.zeros((8, 256, 256), np.float32))) == npy_bytes((8, 256, 256))
    assert len(encode_npy(np.zeros((8, 128, 128), np.float32))) == npy_bytes((8, 128, 128))


def test_sample_key_has_no_dots_and_zero_pads() -> None:
    assert sample_key(3, 12) == "s0003_n00012"
    assert "." not in sample_key(12345, 123456)


def test_cut_balances_and_never_leaves_an_empty_shard() -> None:
    items = [{"i": i} for i in range(10)]
    chunks = cut_shards(items, 4)
    assert [len(c) for c in chunks] == [3, 4, 3]
    assert [x for c in chunks for x in c] == items
    assert cut_shards([], 4) == []
    assert [len(c) for c in cut_shards(items, 1)] == [1] * 10
    assert [len(c) for c in cut_shards(items, 100)] == [10]


def test_fraction_split_is_exact_deterministic_and_disjoint() -> None:
    cfg = ShardBuildConfig(hi_runs=["x"], output_dir="o")
    seeds = list(range(20))
    a = assign_splits(seeds, cfg, set())
    assert [len(a[k]) for k in ("train", "val", "test")] == [16, 2, 2]
    assert sorted(a["train"] + a["val"] + a["test"]) == seeds
    assert assign_splits(seeds, cfg, set()) == a
    cfg.split.seed = 1
    assert assign_splits(seeds, cfg, set()) != a
    # tiny: every split with a positive fraction still gets a seed
    b = assign_splits([4, 7, 9], cfg, set())
    assert sorted(len(v) for v in b.values()) == [1, 1, 1]


def test_config_validation_names_the_key() -> None:
    from mhdsr.config import load_config

    with pytest.raises(ConfigError, match="split.fractions"):
        load_config(
            ShardBuildConfig, None, ["hi_runs=[a]", "output_dir=o", "split.fractions.val=0.3"]
        )
    with pytest.raises(ConfigError, match="split.seeds.val.*seed 2"):
        load_config(
            ShardBuildConfig,
            None,
            ["hi_runs=[a]", "output_dir=o", "split.seeds.train=[1,2]", "split.seeds.val=[2]"],
        )
    with pytest.raises(ConfigError, match="on_bad"):
        load_config(ShardBuildConfig, None, ["hi_runs=[a]", "output_dir=o", "on_bad=ignore"])
    with pytest.raises(ConfigError, match="hi_runs"):
        load_config(ShardBuildConfig, None, ["output_dir=o"])
    with pytest.raises(ConfigError, match="window.snap_end"):
        load_config(
            ShardBuildConfig,
            None,
            ["hi_runs=[a]", "output_dir=o", "window.snap_start=5", "window.snap_end=2"],
        )


def _manifest(tmp_path: Path, **changes) -> Path:
    m = {
        "schema_version": SCHEMA_VERSION,
        "channels": ["density", "velx"],
        "dtype": "float32",
        "byte_order": "little",
        "shapes": {"hi": [2, 4, 4], "lo": [2, 2, 2]},
        "splits": {
            "train": {
                "seeds": [0],
                "samples": 1,
                "source": "hi",
                "shards": [{"name": "train-000000.tar", "samples": 1, "bytes": 10, "sha256": "x"}],
            }
        },
        "stats": {
            "hi": {
                "density": {"count": 4, "mean": 2.0, "std": 0.0, "min": 2.0, "max": 2.0},
                "velx": {"count": 4, "mean": 0.0, "std": 0.5, "min": -1.0, "max": 1.0},
            },
            "lo": {
                "density": {"count": 4, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0},
                "velx": {"count": 4, "mean": 0.0, "std": 0.5, "min": -1.0, "max": 1.0},
            },
        },
        "std_floor": {"relative": 1e-6, "absolute": 1e-12, "rule": "..."},
        "provenance": {},
        "config": {},
    }
    m.update(changes)
    p = tmp_path / "manifest.json"
    p.write_text(json.dumps(m))
    return p


def test_normalization_applies_the_documented_floor(tmp_path: Path) -> None:
    m = read_manifest(_manifest(tmp_path))
    mean, std = normalization(m, "hi")
    np.testing.assert_array_equal(mean, [2.0, 0.0])
    np.testing.assert_array_equal(std, [2e-6, 0.5])  # constant channel: 1e-6 * |2|
    mean, std = normalization(m, "lo", ["velx", "density"])
    np.testing.assert_array_equal(std, [0.5, 1e-12])  # all-zero channel: absolute floor
    with pytest.raises(ShardError, match="no channel 'Bx'"):
        normalization(m, "hi", ["Bx"])
    with pytest.raises(ShardError, match="kind 'mid'"):
        normalization(m, "mid")


def test_read_manifest_errors_name_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="nope does not exist"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardError, match=r"empty/manifest.json: no manifest"):
        read_manifest(tmp_path / "empty")
    p = _manifest(tmp_path, schema_version=99)
    with pytest.raises(ShardError, match="schema_version 99"):
        read_manifest(tmp_path)
    m = json.loads(p.read_text())
    m["schema_version"] = SCHEMA_VERSION
    del m["splits"]["train"]["shards"][0]["sha256"]
    p.write_text(json.dumps(m))
    with pytest.raises(ShardError, match=r"splits.train.shards\[0\].sha256"):
        read_manifest(p)
    p.write_text("{not json")
    with pytest.raises(ShardError, match="cannot read manifest"):
        read_manifest(p)


def test_shard_paths_are_absolute_and_sha_is_of_the_file(tmp_path: Path) -> None:
    p = _manifest(tmp_path)
    m = read_manifest(p)
    paths = shard_paths(tmp_path, m, "train")
    assert paths == [str((tmp_path / "train-000000.tar").resolve())]
    assert shard_paths(p, m, "train") == paths
    with pytest.raises(ShardError, match="no split 'val'"):
        shard_paths(tmp_path, m, "val")
    import hashlib

    assert manifest_sha256(tmp_path) == hashlib.sha256(p.read_bytes()).hexdigest()
