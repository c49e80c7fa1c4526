"""Trainer pieces without DeepSpeed processes: config, LR schedule, data stream, device pairs,
the guarded optimizer, EMA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import REPO
from mhdsr.config import load_config
from mhdsr.dataset import npy as N
from mhdsr.dataset import stream as D
from mhdsr.dataset.manifest import normalization, read_manifest
from mhdsr.dataset.normalize import Normalizer
from mhdsr.errors import ConfigError, ShardError
from mhdsr.method.grid import avgpool2, upsample
from mhdsr.method.pairs import make_pair
from mhdsr.runtime.ema import EMA
from mhdsr.runtime.engine import GuardedAdamW, deepspeed_config, lr_at
from mhdsr.train.config import TrainConfig


def _cfg(*over: str) -> TrainConfig:
    return load_config(TrainConfig, REPO / "configs/train/cpu-small.yaml", list(over))


def test_shipped_configs_validate():
    c = _cfg()
    assert c.model.channels == 8 and c.engine.zero_stage == 1  # chosen by make bench
    g = load_config(TrainConfig, REPO / "configs/train/gpu-40m.yaml", [])
    assert g.engine.precision == "bf16" and g.model.width == 128


@pytest.mark.parametrize("over,match", [
    (["engine.zero_stage=3"], "ZeRO stage 3 is not supported"),
    (["engine.zero_stage=0", "engine.precision=bf16"], "bf16 needs ZeRO stage 1 or 2"),
    (["channels=[velx]"], "model.channels"),
    (["channels=[nope]", "model.channels=1"], "unknown channel 'nope'"),
    (["data.crop=36"], "data.crop"),
    (["optim.schedule=linear"], "optim.schedule"),
    (["no_such_key=1"], "no_such_key"),
    (["max_steps=abc"], "max_steps"),
])  # fmt: skip
def test_config_errors(over, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(*over)


def test_lr_schedule_values():
    c = _cfg(
        "optim.lr=1.0",
        "optim.warmup_steps=10",
        "max_steps=110",
        "optim.schedule=cosine",
        "optim.min_lr_ratio=0.1",
    )
    assert lr_at(c, 0) == pytest.approx(0.1) and lr_at(c, 9) == pytest.approx(1.0)
    assert lr_at(c, 10) == pytest.approx(1.0)
    assert lr_at(c, 60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert lr_at(c, 110) == pytest.approx(0.1) and lr_at(c, 500) == pytest.approx(0.1)
    c2 = _cfg("optim.lr=1.0", "optim.warmup_steps=4", "optim.schedule=inverse_sqrt")
    assert lr_at(c2, 15) == pytest.approx(math.sqrt(4 / 16))
    c3 = _cfg("optim.lr=0.5", "optim.warmup_steps=0", "optim.schedule=constant")
    assert lr_at(c3, 0) == lr_at(c3, 10_000) == 0.5


def test_deepspeed_config_generated():
    c = _cfg("data.micro_batch=3", "optim.grad_accum=2", "engine.zero_stage=1")
    ds = deepspeed_config(c, world_size=4, precision="bf16")
    assert ds["train_batch_size"] == 24 and ds["gradient_accumulation_steps"] == 2
    assert ds["bf16"]["enabled"] and ds["zero_optimization"]["stage"] == 1
    assert (
        ds["gradient_clipping"] == c.optim.grad_clip
        and ds["data_types"]["grad_accum_dtype"] == "fp32"
    )
    ds0 = deepspeed_config(_cfg("engine.zero_stage=0"), world_size=1, precision="fp32")
    assert ds0["gradient_clipping"] == 0.0  # the guarded optimizer clips in ZeRO-0 fp32


def test_guarded_adamw_skips_nonfinite_and_clips():
    p = torch.nn.Parameter(torch.ones(3))
    opt = GuardedAdamW([p], lr=0.1, clip=1.0)
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    opt.step()
    assert opt.overflow and torch.equal(p.data, torch.ones(3)) and not opt.state
    p.grad = torch.tensor([30.0, 40.0, 0.0])
    opt.step()
    assert not opt.overflow and opt._global_grad_norm == pytest.approx(50.0)
    assert torch.isfinite(p).all() and not torch.equal(p.data, torch.ones(3))


def test_ema_warmup_and_decay():
    m = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, decay=0.5, start_step=2, warmup=True)
    ema.update(1, {"weight": torch.full((1, 2), 3.0)})  # before start: copies
    assert torch.allclose(ema.model.weight, torch.full((1, 2), 3.0))
    ema.update(3, {"weight": torch.full((1, 2), 1.0)})  # n=0: beta = min(0.5, 1/10) = 0.1
    assert torch.allclose(ema.model.weight, torch.full((1, 2), 0.1 * 3 + 0.9 * 1))
    ema.update(4, {"weight": torch.zeros(1, 2)})  # n=1: beta = min(0.5, 2/11)
    assert torch.allclose(ema.model.weight, torch.full((1, 2), (2 / 11) * 1.2))
    assert m.weight.abs().sum() == 0  # never swapped into the training weights


def test_make_pair_crop_matches_full_field():
    """u of a periodic window equals the window of u computed on the full field, for even
    offsets with wrap-around; the crop of hi is the same window."""
    g = torch.Generator().manual_seed(0)
    hi = torch.randn(3, 2, 32, 32, generator=g, dtype=torch.float64)
    gen = torch.Generator().manual_seed(5)
    x1, u = make_pair(hi, crop=16, roll=True, upsample_mode="bilinear", generator=gen)
    assert x1.shape == u.shape == (3, 2, 16, 16)
    u_full = upsample(avgpool2(hi), 2, "bilinear")
    gen = torch.Generator().manual_seed(5)
    oy = torch.randint(0, 16, (3,), generator=gen) * 2
    ox = torch.randint(0, 16, (3,), generator=gen) * 2
    for b in range(3):
        rolled_hi = torch.roll(hi[b], (-int(oy[b]), -int(ox[b])), (-2, -1))
        rolled_u = torch.roll(u_full[b], (-int(oy[b]), -int(ox[b])), (-2, -1))
        assert torch.equal(x1[b], rolled_hi[:, :16, :16]) and torch.equal(
            u[b], rolled_u[:, :16, :16]
        )
        # even shifts commute with avgpool2 + Up: u of the rolled field is the rolled u
        assert torch.allclose(
            upsample(avgpool2(rolled_hi[None]), 2, "bilinear")[0], rolled_u, atol=1e-12
        )


def test_make_pair_identity_without_augmentation():
    hi = torch.randn(2, 1, 16, 16)
    x1, u = make_pair(hi, crop=0, roll=False, upsample_mode="bicubic", generator=None)
    assert torch.equal(x1, hi) and torch.allclose(u, upsample(avgpool2(hi), 2, "bicubic"))


def test_train_stream_normalized_and_keyed(demo_shards):
    m = read_manifest(demo_shards)
    urls = D.shard_list(demo_shards, m, "train")
    mean, std = normalization(m, "hi", ["velx", "jz"])
    norm = Normalizer(np.asarray(mean, np.float32), np.asarray(std, np.float32))

    def first(seed, rank, n=3):
        s = D.ShardStream(
            urls,
            "hi.npy",
            m["shapes"]["hi"],
            [1, 7],
            norm,
            2,
            seed=seed,
            rank=rank,
            segment=0,
            shuffle_buffer=2,
        )
        it = iter(s)
        return [next(it) for _ in range(n)]

    a, b, c = first(0, 0), first(0, 0), first(0, 1)
    assert [x["keys"] for x in a] == [x["keys"] for x in b]  # same key -> same stream
    assert [x["keys"] for x in a] != [x["keys"] for x in c]  # another rank -> another stream
    assert a[0]["x"].shape == (2, 2, 256, 256) and a[0]["x"].dtype == torch.float32
    # normalization with the train statistics: pooled over the train split, mean ~0 std ~1
    allhi = torch.cat([x["x"] for x in first(0, 0, 20)])
    assert abs(float(allhi.mean())) < 0.5 and 0.3 < float(allhi.std()) < 3
    raw_keys = {k for x in a for k in x["keys"]}
    assert all(
        k.startswith("s0000_") or k.startswith("s0002_") for k in raw_keys
    )  # train seeds only


def test_decode_npy_errors():
    import io

    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 4, 4), np.float64))
    with pytest.raises(ShardError, match="dtype float64"):
        N.decode_npy(buf.getvalue(), "s0001_n00002", "hi.npy")
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 4, 4), ">f4"))
    arr = N.decode_npy(buf.getvalue(), "k", "hi.npy", (2, 4, 4))
    assert arr.dtype == np.float32 and arr.dtype.isnative
    with pytest.raises(ShardError, match="shape"):
        N.decode_npy(buf.getvalue(), "k", "hi.npy", (8, 4, 4))
    with pytest.raises(ShardError, match="not a valid .npy"):
        N.decode_npy(b"garbage", "k", "hi.npy")


def test_truncated_shard_counted_once_per_visit(demo_shards, tmp_path, caplog):
    """webdataset reports a truncated tar twice; the counter counts (and warns) once per visit."""
    import webdataset as wds

    bad = tmp_path / "train-000000.tar"
    bad.write_bytes((demo_shards / "train-000000.tar").read_bytes()[: 3 * 512 + 100_000])
    counter = D._SkipCounter()

    def urls():
        for _ in range(3):
            counter.visit(str(bad))
            yield {"url": str(bad)}

    with caplog.at_level("WARNING", logger="mhdsr.dataset.stream"):
        samples = list(wds.tarfile_to_samples(handler=counter)(urls()))
    assert samples == [] and counter.count == 3
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3 and all(str(bad) in m for m in warned)


def test_loader_is_the_one_segment_iterator():
    """``Loader.segment`` returns the loader itself (read with ``next``); ``close`` ends the
    segment, a new ``segment`` restarts the stream, ``shutdown`` ends it for good."""
    from torch.utils.data import DataLoader, IterableDataset

    from mhdsr.dataset.stream import Loader

    class Counting(IterableDataset):
        segment = 0

        def __iter__(self):
            i = 100 * self.segment
            while True:
                yield {"x": torch.tensor(i)}
                i += 1

    ds = Counting()
    loader = Loader(DataLoader(ds, batch_size=None), ds)
    it = loader.segment(0)
    assert it is loader
    assert [int(next(it)["x"]) for _ in range(3)] == [0, 1, 2]
    it.close()
    with pytest.raises(StopIteration):
        next(it)
    it = loader.segment(2)
    assert int(next(it)["x"]) == 200
    loader.shutdown()
    with pytest.raises(StopIteration):
        next(loader)
