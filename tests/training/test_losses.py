"""Losses: flow matching (Wan), v-prediction eq. (1) (CogVideoX), latent segmentation, totals."""

from __future__ import annotations

import math

import pytest
import torch

from magicmotion.training.losses import (flow_matching_loss, flow_matching_noisy, latent_segmentation_loss,
                                         sample_flow_sigmas, sample_timesteps, total_loss, v_prediction_loss,
                                         v_prediction_noisy)


def test_flow_matching_target_is_noise_minus_data():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 16, 3, 4, 4, generator=g), torch.randn(2, 16, 3, 4, 4, generator=g)
    sigmas = torch.tensor([0.25, 0.9])
    xt = flow_matching_noisy(x0, noise, sigmas)
    assert torch.allclose(xt[0], 0.75 * x0[0] + 0.25 * noise[0])
    # 0.1 and 0.9 are not exact in binary: float32 rounding, measured 2.4e-7 at |x| up to 4
    assert torch.allclose(xt[1], 0.1 * x0[1] + 0.9 * noise[1], atol=1e-6)
    assert flow_matching_loss(noise - x0, x0, noise) == 0
    # the velocity integrates x_t back to x0: x0 = x_t - s * v
    assert torch.allclose(xt - sigmas.view(-1, 1, 1, 1, 1) * (noise - x0), x0, atol=1e-6)
    wrong = noise - x0 + 0.5
    assert torch.isclose(flow_matching_loss(wrong, x0, noise), torch.tensor(0.25))


def test_flow_sigma_sampling_follows_the_shift():
    g = torch.Generator().manual_seed(0)
    plain = sample_flow_sigmas(20000, g, "uniform")
    shifted = sample_flow_sigmas(20000, g, "shifted_uniform", shift=3.0)
    logit = sample_flow_sigmas(20000, g, "logit_normal", shift=1.0)
    for s in (plain, shifted, logit):
        assert s.shape == (20000,) and s.min() > 0 and s.max() <= 1
    # median of u is 0.5; shifted by 3: 3 * 0.5 / (1 + 2 * 0.5) = 0.75. The sample median of 20000
    # draws has sd ~0.0035 (uniform); measured 0.0025 / 0.0004 / 0.0016 off; the unshifted law is 0.25 off
    assert abs(plain.median().item() - 0.5) < 0.02
    assert abs(shifted.median().item() - 0.75) < 0.02
    assert abs(logit.median().item() - 0.5) < 0.02 and logit.std() < plain.std()
    # the wrong variants, the shift dropped or applied to the plain law, fail the bounds
    assert abs(plain.median().item() - 0.75) >= 0.02 and abs(shifted.median().item() - 0.5) >= 0.02
    with pytest.raises(Exception, match="unknown timestep sampling"):
        sample_flow_sigmas(2, g, "cosine")


def test_v_prediction_matches_the_cogvideox_scheduler():
    from diffusers import CogVideoXDPMScheduler

    from magicmotion.pipelines.tiny import tiny_cogvideox_components

    scheduler: CogVideoXDPMScheduler = tiny_cogvideox_components()["scheduler"]
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 2, 16, 4, 4, generator=g), torch.randn(3, 2, 16, 4, 4, generator=g)
    t = torch.tensor([0, 500, 999])
    a = scheduler.alphas_cumprod[t].float()
    xt = v_prediction_noisy(x0, noise, a)
    assert torch.allclose(xt, scheduler.add_noise(x0, noise, t), atol=1e-5)  # the same formula: measured 0
    v = scheduler.get_velocity(x0, noise, t)
    # eq. (1): the true velocity reconstructs x0 exactly
    assert v_prediction_loss(v, xt, x0, a) < 1e-10  # float32 rounding squared: measured 2.3e-15
    v_hat = v + 0.1 * torch.randn(v.shape, generator=g)
    eq1 = v_prediction_loss(v_hat, xt, x0, a)
    manual = ((x0 - (a.sqrt().view(-1, 1, 1, 1, 1) * xt - (1 - a).sqrt().view(-1, 1, 1, 1, 1) * v_hat)) ** 2).mean()
    assert torch.isclose(eq1, manual)
    # weighting by 1 / (1 - a_t) turns eq. (1) into the plain MSE on v
    # equal in exact arithmetic; float32 mean of 1536 terms: measured 2e-7 relative (was rtol=1e-4;
    # 1e-5 ~ eps x sqrt(N) for other summation orders)
    assert torch.isclose(v_prediction_loss(v_hat, xt, x0, a, "inverse_noise"), ((v_hat - v) ** 2).mean(), rtol=1e-5)


def test_segmentation_loss_and_total():
    pred, target = torch.zeros(1, 16, 2, 4, 4), torch.full((1, 16, 2, 4, 4), 2.0)
    seg = latent_segmentation_loss(pred, target)
    assert seg == 4.0
    with pytest.raises(ValueError, match="differ"):
        latent_segmentation_loss(pred, target[:, :8])
    diff = torch.tensor(1.5)
    terms = total_loss(diff, seg, 0.5)
    assert terms["loss"] == 1.5 + 0.5 * 4.0 and terms["segmentation"] == 4.0 and terms["diffusion"] == 1.5
    assert total_loss(diff, None, 0.5) == {"diffusion": diff, "loss": diff}
    assert total_loss(diff, seg, 0.0)["loss"] == 1.5


def test_timesteps_are_uniform_integers():
    t = sample_timesteps(5000, 1000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.min() >= 0 and t.max() <= 999
    assert abs(t.float().mean().item() - 499.5) < 15


@pytest.mark.parametrize("kw", [dict(sampling="uniform"), dict(sampling="shifted_uniform", shift=3.0),
                                dict(sampling="logit_normal"), dict(sampling="logit_normal", sigma_range=(0.2, 0.9)),
                                dict(sampling="shifted_uniform", shift=5.0, sigma_range=(0.0, 0.875))])
def test_draws_come_from_the_generator_alone(kw):
    """Reproducible runs: the same generator seed gives the same draws whatever the global RNG did in
    between; another seed other draws."""
    torch.manual_seed(1)
    a = sample_flow_sigmas(64, torch.Generator().manual_seed(7), **kw)
    torch.manual_seed(2)
    b = sample_flow_sigmas(64, torch.Generator().manual_seed(7), **kw)
    c = sample_flow_sigmas(64, torch.Generator().manual_seed(8), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.float32
    torch.manual_seed(1)
    t = sample_timesteps(64, 1000, torch.Generator().manual_seed(7))
    torch.manual_seed(2)
    assert torch.equal(t, sample_timesteps(64, 1000, torch.Generator().manual_seed(7)))


def test_sigma_range_draws_stay_in_their_range_with_the_right_law():
    """One expert's share: lo <= s < hi, and the conditioned law is the unconditioned one restricted
    (its median is the unconditioned quantile halfway between the range's quantiles)."""
    g = torch.Generator().manual_seed(0)
    for lo, hi in ((0.0, 0.875), (0.875, 1.0), (0.3, 0.6)):
        s = sample_flow_sigmas(20000, g, "shifted_uniform", shift=3.0, sigma_range=(lo, hi))
        assert s.min() >= max(lo, 1e-5) and s.max() < hi or hi == 1.0 and s.max() <= 1.0
        # unconditioned: u = s / (3 - 2 s) uniform; the median of u within [u_lo, u_hi) is their midpoint
        u = s.double() / (3 - 2 * s.double())
        u_lo, u_hi = lo / (3 - 2 * lo), hi / (3 - 2 * hi)
        # sample median of 20000 draws: measured 0.0046 / 0.0003 / 0.0003 off (bounds 0.008 / 0.004 / 0.003)
        assert abs(u.median().item() - (u_lo + u_hi) / 2) < 0.01 * (u_hi - u_lo) + 1e-3
        # the wrong variant: the unconditioned draws clamped into the range instead of drawn within it
        clamped = sample_flow_sigmas(20000, g, "shifted_uniform", shift=3.0).clamp(lo, hi - 1e-6).double()
        u_wrong = clamped / (3 - 2 * clamped)
        assert abs(u_wrong.median().item() - (u_lo + u_hi) / 2) >= 0.01 * (u_hi - u_lo) + 1e-3
    with pytest.raises(Exception, match="sigma range"):
        sample_flow_sigmas(2, g, sigma_range=(0.5, 0.5))


@pytest.mark.parametrize("sampling, shift, logit_std, lo, hi", [
    ("uniform", 3.0, 1.0, 0.2, 0.6),  # uniform ignores the shift
    ("logit_normal", 1.0, 1.0, 0.0, 0.5), ("logit_normal", 3.0, 2.0, 0.5, 1.0), ("logit_normal", 1.0, 0.5, 0.3, 0.8),
])
def test_sigma_range_median_against_the_normal_distribution(sampling, shift, logit_std, lo, hi):
    """The conditioned draws' median is the unconditioned law's quantile halfway between the range's
    (Python's statistics.NormalDist as the reference for the logit-normal law)."""
    import math
    from statistics import NormalDist

    s = sample_flow_sigmas(20000, torch.Generator().manual_seed(0), sampling, shift=shift, logit_std=logit_std,
                           sigma_range=(lo, hi)).double()
    assert s.min() >= max(lo, 1e-5) and (s.max() < hi or hi == 1.0)
    k = 1.0 if sampling == "uniform" else shift
    unshift = lambda v: v / (k - (k - 1) * v)  # noqa: E731 - the inverse of the shift map
    if sampling == "uniform":
        u_med = (unshift(lo) + unshift(hi)) / 2
    else:
        law = NormalDist(0.0, logit_std)
        cdf = lambda u: 0.0 if u <= 0 else 1.0 if u >= 1 else law.cdf(math.log(u / (1 - u)))  # noqa: E731
        z = law.inv_cdf((cdf(unshift(lo)) + cdf(unshift(hi))) / 2)
        u_med = 1 / (1 + math.exp(-z))
    expected = k * u_med / (1 + (k - 1) * u_med)
    assert abs(s.median().item() - expected) < 0.01 * (hi - lo)  # sampling: measured 0.002-0.003 off
    # the wrong variant, the unconditioned draws clamped into the range, fails the bound (the nearly
    # symmetric 0.3-0.8 case excepted: there the two medians are 0.007 apart, 1.4 bounds)
    clamped = sample_flow_sigmas(20000, torch.Generator().manual_seed(0), sampling, shift=shift,
                                 logit_std=logit_std).clamp(lo, hi - 1e-6).double()
    if (lo, hi) != (0.3, 0.8):
        assert abs(clamped.median().item() - expected) >= 0.01 * (hi - lo)
    with pytest.raises(Exception, match="sigma range"):
        sample_flow_sigmas(2, torch.Generator(), sampling, sigma_range=(0.5, 1.5))


def test_weighted_flow_matching_loss_is_the_mean_over_the_weighted_elements():
    g = torch.Generator().manual_seed(0)
    x0, noise, pred = (torch.randn(2, 4, 3, 2, 2, generator=g) for _ in range(3))
    weight = torch.tensor([0.0, 1.0, 1.0]).view(1, 1, 3, 1, 1)  # frames 1 and 2 (TI2V: frame 0 clean)
    err = (pred - (noise - x0)) ** 2  # default tolerances below: float32 rounding of means (measured <= 5e-7)
    assert torch.isclose(flow_matching_loss(pred, x0, noise, weight), err[:, :, 1:].mean())
    one = torch.zeros(2, 4, 3, 2, 2)
    one[1, 2, 0, 1, 0] = 1.0  # a single weighted element: its error, not half of it
    assert torch.isclose(flow_matching_loss(pred, x0, noise, one), err[1, 2, 0, 1, 0])
    assert flow_matching_loss(pred, x0, noise, torch.zeros(1, 1, 3, 1, 1)) == 0  # nothing to learn: 0
    assert torch.isclose(flow_matching_loss(pred, x0, noise, torch.ones(1)), flow_matching_loss(pred, x0, noise))


def test_flow_sigma_defaults_shift_and_logit_parameters():
    from statistics import NormalDist

    def draw(n=20000, **kw):
        return sample_flow_sigmas(n, torch.Generator().manual_seed(3), **kw)

    # the defaults: shifted_uniform at shift 1 (= uniform); the full range is no range
    assert torch.equal(draw(), draw(sampling="shifted_uniform", shift=1.0))
    assert torch.equal(draw(sigma_range=(0.0, 1.0)), draw())
    # uniform ignores the shift; shifted_uniform at 2: the median 2 x 0.5 / (1 + 0.5)
    assert torch.equal(draw(sampling="uniform", shift=3.0), draw(sampling="uniform"))
    assert abs(draw(shift=2.0).median().item() - 2 / 3) < 0.01  # sampling: measured 0.0016 off
    # logit-normal: s = sigmoid(N(mean, std)); its quartiles are the sigmoid of the normal's
    s = draw(sampling="logit_normal", logit_mean=0.5, logit_std=2.0).double()
    law = NormalDist(0.5, 2.0)
    for q in (0.25, 0.5, 0.75):
        expected = 1 / (1 + math.exp(-law.inv_cdf(q)))
        assert abs(s.quantile(q).item() - expected) < 0.01  # sampling: measured at most 0.0056 off
    # never exactly 0 (a noise level of 0 has no target): clamped at 1e-5 (float32's 1e-5: 2.5e-13 off)
    assert draw(100, sampling="logit_normal", logit_mean=-30.0).min() == pytest.approx(1e-5)


def test_timesteps_reach_both_ends_and_noising_keeps_the_dtype():
    t = sample_timesteps(20000, 1000, torch.Generator().manual_seed(0))
    assert t.min() == 0 and t.max() == 999
    x0 = torch.randn(2, 3, 4, dtype=torch.bfloat16)
    out = v_prediction_noisy(x0, torch.randn(2, 3, 4, dtype=torch.bfloat16), torch.tensor([0.5, 0.9]))
    assert out.dtype == torch.bfloat16


def test_sigma_range_with_a_logit_mean_the_lowest_levels_and_bad_names():
    from statistics import NormalDist

    lo, hi, mean = 0.2, 0.7, 0.7
    s = sample_flow_sigmas(20000, torch.Generator().manual_seed(0), "logit_normal", logit_mean=mean,
                           sigma_range=(lo, hi)).double()
    law = NormalDist(mean, 1.0)
    p = [law.cdf(math.log(v / (1 - v))) for v in (lo, hi)]
    expected = 1 / (1 + math.exp(-law.inv_cdf(sum(p) / 2)))
    assert abs(s.median().item() - expected) < 0.005  # sampling: measured 0.0026 off
    low = sample_flow_sigmas(20000, torch.Generator().manual_seed(0), "uniform", sigma_range=(0.0, 0.001))
    assert low.min() == pytest.approx(1e-5) and low.max() < 0.001  # never 0: clamped at 1e-5
    with pytest.raises(Exception, match="unknown timestep sampling 'cosine'"):
        sample_flow_sigmas(2, torch.Generator(), "cosine", sigma_range=(0.2, 0.5))


def test_weighted_loss_stays_in_float32_whatever_the_weight_dtype():
    x0 = torch.randn(1, 2, 3, 2, 2)
    loss = flow_matching_loss(torch.zeros_like(x0), x0, torch.zeros_like(x0), torch.ones(1, 1, 3, 1, 1, dtype=torch.float64))
    assert loss.dtype == torch.float32


def test_noising_keeps_the_latents_dtype_and_bad_weighting_is_named():
    x0 = torch.randn(2, 3, 4, dtype=torch.bfloat16)
    assert flow_matching_noisy(x0, torch.randn(2, 3, 4, dtype=torch.bfloat16), torch.tensor([0.2, 0.7])).dtype == torch.bfloat16
    a = torch.tensor([0.5, 0.9])
    with pytest.raises(Exception, match="unknown loss weighting 'snr'"):
        v_prediction_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), a, "snr")
