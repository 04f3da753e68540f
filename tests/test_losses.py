"""scene/training/losses.py: the photometric loss and GaussianAvatars' regularisers."""
import torch

from scene.training.losses import photometric_loss
from scene.model.flame_bound import splat_regularisers
from utils.image_metrics import ssim


def test_photometric_loss_mixes_l1_and_zero_padded_dssim():
    g = torch.Generator().manual_seed(0)
    image, gt = torch.rand(16, 14, 3, generator=g), torch.rand(16, 14, 3, generator=g)
    loss, l1, d_ssim = photometric_loss(image, gt, 0.2)
    chw = lambda x: x.permute(2, 0, 1)[None]  # noqa: E731
    assert torch.isclose(l1, (image - gt).abs().mean())
    assert torch.isclose(d_ssim, 1 - ssim(chw(image), chw(gt), padding="same").mean())
    assert not torch.isclose(d_ssim, 1 - ssim(chw(image), chw(gt)).mean())  # "same" padding, not valid
    assert torch.isclose(loss, 0.8 * l1 + 0.2 * d_ssim)
    assert photometric_loss(gt, gt, 0.2)[0].abs() < 1e-6


def test_regularisers_count_only_visible_splats_beyond_their_thresholds():
    params = {"xyz": torch.tensor([[3.0, 0, 0], [0.5, 0, 0], [100.0, 0, 0]]),
              "log_scale": torch.log(torch.tensor([[2.0, 0.1, 0.1], [0.1, 0.1, 0.1], [50.0, 50, 50]]))}
    radii = torch.tensor([4, 2, 0])  # the third splat is not seen: its huge values do not count
    position, scale = splat_regularisers(params, radii, threshold_position=1.0, threshold_scale=0.6)
    assert torch.isclose(position, torch.tensor((3.0 - 1.0) / 2))
    assert torch.isclose(scale, torch.tensor((2.0 - 0.6) / 2))
    none_seen = splat_regularisers(params, torch.zeros(3), 1.0, 0.6)
    assert none_seen[0] == 0 and none_seen[1] == 0
