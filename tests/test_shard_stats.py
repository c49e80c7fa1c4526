"""Mergeable float64 per-channel statistics (Chan et al. 1979) and the avgpool2 used for lo."""

from __future__ import annotations

import numpy as np
import pytest

from mhdsr.shard_builder.stats import ChannelStats, avgpool2_f64, merge_all


def _fields(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    # channels of very different scales and offsets, like the MHD fields (density ~ 1 +- 1e-2,
    # Bx ~ 1e-2, jz ~ 5): the offset makes a naive sum-of-squares variance lose digits
    scale = np.array([1e-2, 5e-2, 1e-4, 3.0])[:, None, None]
    offset = np.array([1.0, 0.0, -2e-3, 10.0])[:, None, None]
    return [
        (offset + scale * rng.standard_normal((4, 16, 24))).astype(np.float32) for _ in range(n)
    ]


def test_single_field_matches_numpy_float64() -> None:
    x = _fields(np.random.default_rng(0), 1)[0]
    s = ChannelStats.of(x)
    x64 = x.astype(np.float64).reshape(4, -1)
    assert s.count == 16 * 24
    np.testing.assert_allclose(s.mean, x64.mean(1), rtol=1e-14)
    np.testing.assert_allclose(s.std, x64.std(1), rtol=1e-12)
    np.testing.assert_array_equal(s.min, x64.min(1))
    np.testing.assert_array_equal(s.max, x64.max(1))


def test_merge_of_parts_equals_whole_in_any_order() -> None:
    parts = _fields(np.random.default_rng(1), 7)
    whole = np.stack(parts).astype(np.float64).transpose(1, 0, 2, 3).reshape(4, -1)
    stats = [ChannelStats.of(p) for p in parts]
    fwd = merge_all(stats, 4)
    # a tree merge (as when workers combine shard results) and a reversed order
    tree = merge_all([merge_all(stats[:3], 4), merge_all(stats[3:], 4)], 4)
    rev = merge_all(stats[::-1], 4)
    for s in (fwd, tree, rev):
        assert s.count == whole.shape[1]
        np.testing.assert_allclose(s.mean, whole.mean(1), rtol=1e-13)
        np.testing.assert_allclose(s.std, whole.std(1), rtol=1e-11)
        np.testing.assert_array_equal(s.min, whole.min(1))
        np.testing.assert_array_equal(s.max, whole.max(1))


def test_merge_with_empty_is_identity_and_state_round_trips_exactly() -> None:
    s = ChannelStats.of(_fields(np.random.default_rng(2), 1)[0])
    e = ChannelStats.empty(4)
    for m in (s.merge(e), e.merge(s)):
        np.testing.assert_array_equal(m.mean, s.mean)
        np.testing.assert_array_equal(m.m2, s.m2)
        assert m.count == s.count
    back = ChannelStats.from_state(s.to_state())
    for k in ("mean", "m2", "min", "max"):
        np.testing.assert_array_equal(getattr(back, k), getattr(s, k))
    assert back.count == s.count
    assert np.isnan(e.std).all()


def test_constant_channel_has_true_zero_std() -> None:
    x = np.full((2, 8, 8), 1.0, dtype=np.float32)
    x[1] = np.arange(64, dtype=np.float32).reshape(8, 8)
    s = merge_all([ChannelStats.of(x), ChannelStats.of(x)], 2)
    assert s.std[0] == 0.0 and s.mean[0] == 1.0
    np.testing.assert_allclose(s.std[1], np.arange(64).std(), rtol=1e-14)
    table = s.table(["a", "b"])
    assert table["a"] == {"count": 128, "mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0}


def test_avgpool2_f64_is_the_2x2_block_mean() -> None:
    x = np.random.default_rng(3).standard_normal((3, 6, 8)).astype(np.float32)
    want = x.astype(np.float64).reshape(3, 3, 2, 4, 2).mean(axis=(2, 4))
    got = avgpool2_f64(x)
    assert got.dtype == np.float64 and got.shape == (3, 3, 4)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    # the mean of a coarse field equals the mean of the fine field
    np.testing.assert_allclose(
        got.mean(axis=(1, 2)), x.astype(np.float64).mean(axis=(1, 2)), rtol=1e-12
    )
    with pytest.raises(ValueError, match="even"):
        avgpool2_f64(np.zeros((1, 5, 4), np.float32))
