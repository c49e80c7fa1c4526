"""The 8-element symmetry group of the shearing box (mhdsr.method.symmetry; docs/design.md,
"Symmetries") on hand-built and real bundled snapshots, and the augmented training pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import HI
from mhdsr.analysis.physics import curl_z, rms
from mhdsr.athenak import open_run
from mhdsr.channels import CHANNELS
from mhdsr.method import symmetry as S
from mhdsr.method.grid import avgpool2, upsample
from mhdsr.method.pairs import make_pair

R, M, P = 4, 2, 1  # the generators as element indices (bits r, m, p)


@pytest.fixture(scope="module")
def real() -> torch.Tensor:
    """A turbulent 256^2 snapshot of the bundled data (8, H, W), float32."""
    run = open_run(HI / "seed_0000")
    return torch.from_numpy(np.ascontiguousarray(run.read_snapshot(run.snapshots()[-1]).data))


def test_hand_built_field_shows_each_sign_and_axis() -> None:
    # channel c holds (c + 1) * (1 + x-index + 10 * y-index): every flip and sign is visible
    ny, nx = 4, 6
    base = 1 + torch.arange(nx)[None, :] + 10 * torch.arange(ny)[:, None]
    x = torch.stack([(c + 1) * base for c in range(8)]).double()
    neg = {
        R: {"velx", "velz", "Bx", "Bz", "jz"},
        M: {"vely", "By", "jz"},
        P: {"Bx", "By", "Bz", "jz"},
    }
    for g, flip in ((R, [-1]), (M, [-2]), (P, [])):
        y = S.apply(x, g, CHANNELS)
        for c, name in enumerate(CHANNELS):
            want = torch.flip(x[c], flip) if flip else x[c]
            want = -want if name in neg[g] else want
            assert torch.equal(y[c], want), (g, name)


def test_every_element_is_an_involution_and_the_group_closes(real: torch.Tensor) -> None:
    for a in range(8):
        assert torch.equal(S.apply(S.apply(real, a, CHANNELS), a, CHANNELS), real)
        for b in range(8):
            ab = S.apply(S.apply(real, b, CHANNELS), a, CHANNELS)
            assert torch.equal(ab, S.apply(real, S.compose(a, b), CHANNELS))
            assert S.compose(a, b) == S.compose(b, a) and 0 <= S.compose(a, b) < 8
    # the generators produce all 8 elements
    assert {S.compose(S.compose(r, m), p) for r in (0, R) for m in (0, M) for p in (0, P)} == set(
        range(8)
    )


def test_transformed_snapshot_still_satisfies_jz_curl_b(real: torch.Tensor) -> None:
    """jz - (dBy/dx - dBx/dy) of g(snapshot) equals the original's to float32 rounding."""
    ix = {c: i for i, c in enumerate(CHANNELS)}

    def residual(x: torch.Tensor) -> np.ndarray:
        f = x.double().numpy()
        return f[ix["jz"]] - curl_z(f[ix["Bx"]], f[ix["By"]])

    r0 = residual(real)
    scale = float(rms(real[ix["jz"]].double().numpy()))
    assert float(rms(r0)) / scale < 1e-5  # AthenaK's own jz is curl B on the grid
    for g in range(8):
        rg = residual(S.apply(real, g, CHANNELS))
        assert float(rms(rg)) == pytest.approx(float(rms(r0)), rel=1e-6, abs=1e-7 * scale)


def test_group_commutes_with_avgpool2_and_up(real: torch.Tensor) -> None:
    x = real[None].double()
    for g in range(8):
        gx = S.apply(x, g, CHANNELS)
        torch.testing.assert_close(avgpool2(gx), S.apply(avgpool2(x), g, CHANNELS), rtol=0, atol=0)
        for mode in ("bilinear", "bicubic", "spline"):
            up = upsample(avgpool2(gx), 2, mode)
            torch.testing.assert_close(up, S.apply(upsample(avgpool2(x), 2, mode), g, CHANNELS))


def test_subset_channels_and_unknown_names() -> None:
    assert S.signs(R | P, ["velx", "By", "density"]) == [-1.0, -1.0, 1.0]
    with pytest.raises(Exception, match="unknown channel"):
        S.signs(0, ["pressure"])


def test_augmented_pair_is_consistent_and_keyed(real: torch.Tensor) -> None:
    hi = real[None].repeat(4, 1, 1, 1)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = make_pair(hi, crop=0, roll=False, upsample_mode="bilinear", generator=g1, augment=CHANNELS)
    b = make_pair(hi, crop=0, roll=False, upsample_mode="bilinear", generator=g2, augment=CHANNELS)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # same key -> same draw
    elements = S.draw(4, torch.Generator().manual_seed(3))
    for k in range(4):  # each sample is g(hi) for its drawn element, and u = Up(avgpool2(g(hi)))
        assert torch.equal(a[0][k], S.apply(real, int(elements[k]), CHANNELS))
        torch.testing.assert_close(a[1][k], upsample(avgpool2(a[0][k : k + 1]), 2, "bilinear")[0])
    # without augmentation nothing is drawn: the same generator state gives the same offsets
    g3, g4 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    c = make_pair(hi, crop=64, roll=True, upsample_mode="bilinear", generator=g3)
    d = make_pair(hi, crop=64, roll=True, upsample_mode="bilinear", generator=g4, augment=None)
    assert torch.equal(c[0], d[0])
