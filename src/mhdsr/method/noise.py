"""Reproducible per-sample noise for bulk generation.

Every sample owns a CPU :class:`torch.Generator` seeded from a stable hash of an integer key
(for instance ``(seed of the sim, snapshot, ensemble member)``) and the run's base seed, so the
noise a sample receives depends on its key only: not on the batch size, the order of samples in
a batch, the number of ranks, or the device the model runs on (the numbers are drawn on the CPU
in float32 and then moved; CUDA generators are an opt-in for speed). This is the per-sample-generator idea of EDM's ``generate_images.py``.

Samplers draw through the :class:`NoiseSource` protocol (``draw(shape) -> (B, *shape)``), so
a test can pass a fixed tensor instead of :class:`PerSampleNoise`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "NoiseSource",
    "PerSampleNoise",
    "SourceTemperature",
    "generator_for",
    "name_word",
    "seed_for",
]


@runtime_checkable
class NoiseSource(Protocol):
    """Anything that returns a batch of standard normal draws, ``(B, *shape)``."""

    def draw(self, shape_per_sample: Sequence[int]) -> Tensor: ...


def seed_for(base_seed: int, *key: int) -> int:
    """Stable 64-bit seed for ``(base_seed, *key)``.

    Uses :class:`numpy.random.SeedSequence` (a documented, platform-independent hash of the
    entropy words), never Python's salted ``hash()``. Different keys give well-separated
    streams; ``(1, 23)`` and ``(12, 3)`` differ because every int is its own entropy word.

    Args:
        base_seed: run-level seed, >= 0.
        *key: non-negative ints identifying the sample.

    Returns:
        An int in ``[0, 2**64)``.

    Raises:
        ValueError: a negative or non-integer entry.
    """
    words = (base_seed, *key)
    for w in words:
        if isinstance(w, bool) or not isinstance(w, int | np.integer) or w < 0:
            raise ValueError(f"seed and key entries must be non-negative ints, got {words}")
    state = np.random.SeedSequence([int(w) for w in words]).generate_state(1, dtype=np.uint64)
    return int(state[0])


def name_word(name: str) -> int:
    """A stable non-negative 32-bit key word for a name (CRC-32 of its UTF-8 bytes).

    Sim names such as ``"mri128_nu3e-5/seed_0002"`` carry the resolution folder: seed ids are
    per resolution, so a 128^2 and a 256^2 sim with the same seed id must not share noise.
    """
    return zlib.crc32(name.encode("utf-8"))


def generator_for(base_seed: int, *key: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded with :func:`seed_for` ``(base_seed, *key)``.

    On the CPU (default) the stream is the same on every machine. A CUDA generator
    (``device="cuda"``) avoids host-side generation and copies for large SDE batches; its
    numbers differ from the CPU stream and are only guaranteed to repeat on the same GPU model
    (PyTorch's CUDA sampling kernels size their launch grid by the device).
    """
    return torch.Generator(device=device).manual_seed(seed_for(base_seed, *key))


class PerSampleNoise:
    """Standard normal noise with one independent stream per sample.

    Row ``b`` of every :meth:`draw` comes from ``generators[b]`` (in float32 on the generator's
    device, the CPU by default, then moved to ``device`` and cast to ``dtype``), so sample ``b``
    gets the same numbers whatever the rest of the batch is, as long as the sequence of draw shapes is the same (which holds
    within a sampler: first ``x0``, then one draw per stochastic step).

    Args:
        generators: one generator per sample (see :func:`generator_for`), all on the same
            device; they are advanced in place by each draw.
        device: device of the returned tensors.
        dtype: dtype of the returned tensors (the draw itself is always float32).
    """

    def __init__(
        self,
        generators: Sequence[torch.Generator],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if len(generators) == 0:
            raise ValueError("PerSampleNoise needs at least one generator")
        if len({str(g.device) for g in generators}) != 1:
            raise ValueError("per-sample generators must all live on the same device")
        self.generators = list(generators)
        self.device = torch.device(device)
        self.dtype = dtype

    @classmethod
    def from_keys(
        cls,
        base_seed: int,
        keys: Iterable[Sequence[int]],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        generator_device: torch.device | str = "cpu",
    ) -> PerSampleNoise:
        """One generator per key: ``generator_for(base_seed, *key, device=generator_device)``."""
        gens = [generator_for(base_seed, *k, device=generator_device) for k in keys]
        return cls(gens, device=device, dtype=dtype)

    def __len__(self) -> int:
        return len(self.generators)

    def draw(self, shape_per_sample: Sequence[int]) -> Tensor:
        """Draw ``(B, *shape_per_sample)`` standard normals, row ``b`` from generator ``b``."""
        shape = tuple(int(n) for n in shape_per_sample)
        rows = [
            torch.randn(shape, generator=g, device=g.device, dtype=torch.float32)
            for g in self.generators
        ]
        return torch.stack(rows).to(device=self.device, dtype=self.dtype)


class SourceTemperature:
    """A :class:`NoiseSource` whose FIRST draw (the sampler's source ``x0 = sigma eps``) is
    multiplied by a per-channel temperature ``T_c``; later draws (an SDE's Langevin noise) are
    passed through unchanged, so the SDE still preserves the marginals of the path it starts.

    ``T > 1`` widens an under-dispersed ensemble, ``T < 1`` narrows an over-dispersed one
    (noise inflation, tuned on a validation split: ``sampler.temperature``). With ``T = 1``
    the draws are bit-identical to the wrapped source's.

    Args:
        noise: the wrapped source (draws ``(B, C, H, W)``).
        temperature: ``(C,)`` per-channel factors, > 0 (a float applies to every channel).
    """

    def __init__(self, noise: NoiseSource, temperature: Sequence[float] | float) -> None:
        t = torch.as_tensor(temperature, dtype=torch.float32).reshape(-1)
        if not bool(torch.isfinite(t).all() and (t > 0).all()):
            raise ValueError(f"temperature must be finite and > 0, got {t.tolist()}")
        self.noise, self.temperature, self._first = noise, t, True

    def draw(self, shape_per_sample: Sequence[int]) -> Tensor:
        """``noise.draw(shape)``, the first one scaled by ``T_c`` on axis 1 (the channels)."""
        x = self.noise.draw(shape_per_sample)
        if self._first:
            self._first = False
            c = x.shape[1]
            t = self.temperature
            if t.numel() not in (1, c):
                raise ValueError(f"temperature has {t.numel()} values for {c} channels")
            x = x * t.to(x.device, x.dtype).reshape(1, -1, *([1] * (x.dim() - 2)))
        return x
