"""Losses: the diffusion loss of each base and the latent segmentation loss (paper eq. (1)-(3)).

    L = L_diffusion + lambda * L_seg,   L_seg = ||Z_segment - Z_mask||^2

- Wan (flow matching): x_t = (1 - s) x0 + s eps, the model predicts the velocity eps - x0 at
  timestep s * 1000. The noise level s is drawn by `sample_flow_sigmas`.
- CogVideoX (v-prediction, paper eq. (1)): x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps with the
  scheduler's `alphas_cumprod`; the loss compares x0 with sqrt(a_t) x_t - sqrt(1 - a_t) v.

All losses are means over every element (MSE), computed in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, ...) to broadcast against `like`."""
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1))).to(like.device, like.dtype)


# ------------------------------------------------------------------------------------ Wan (flow)


def sample_flow_sigmas(
    batch: int,
    generator: torch.Generator | None = None,
    sampling: str = "shifted_uniform",
    shift: float = 1.0,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    device: torch.device | str = "cpu",
    sigma_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Noise levels s in (0, 1) for flow matching, shape (B,), float32.

    `shifted_uniform`: u ~ U(0, 1) mapped by shift * u / (1 + (shift - 1) * u), the map Wan's
    schedulers apply to their sampling sigmas (`flow_shift`, 3.0 for Wan2.1 480p, 5.0 for 720p), so
    training sees noise levels as often as sampling visits them. `logit_normal`: u = sigmoid(N(mean,
    std)) (SD3's choice) before the same shift. `uniform`: s = u.

    `sigma_range=(lo, hi)`: the same distribution restricted to lo <= s < hi (one Wan2.2 A14B expert's
    share of the noise levels), drawn by inverse CDF (no rejection: one draw per sample).
    """
    if sigma_range is not None and tuple(sigma_range) != (0.0, 1.0):
        return _flow_sigmas_in_range(batch, generator, sampling, shift, logit_mean, logit_std,
                                     sigma_range).to(device)
    if sampling == "logit_normal":
        u = torch.sigmoid(torch.randn(batch, generator=generator) * logit_std + logit_mean)
    elif sampling in ("shifted_uniform", "uniform"):
        u = torch.rand(batch, generator=generator)
    else:
        raise ConfigError(f"unknown timestep sampling {sampling!r}")
    if sampling != "uniform" and shift != 1.0:
        u = shift * u / (1 + (shift - 1) * u)
    return u.clamp(1e-5, 1.0).to(device)


def _unshift(sigma: float, shift: float) -> float:
    """The u that `shift * u / (1 + (shift - 1) * u)` maps to sigma."""
    return sigma / (shift - (shift - 1) * sigma)


def _flow_sigmas_in_range(batch, generator, sampling, shift, logit_mean, logit_std, sigma_range) -> torch.Tensor:
    """`sample_flow_sigmas` conditioned on lo <= s < hi: the CDF of s is monotone in the uniform (or
    normal) draw, so a draw uniform over the matching CDF interval, mapped back, has the conditioned law."""
    lo, hi = (float(v) for v in sigma_range)
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"sigma range must satisfy 0 <= lo < hi <= 1, got {sigma_range}")
    k = 1.0 if sampling == "uniform" else shift
    u_lo, u_hi = _unshift(lo, k), _unshift(hi, k)
    r = torch.rand(batch, generator=generator, dtype=torch.float64)
    if sampling == "logit_normal":
        def cdf(u: float) -> float:  # P(sigmoid(N(mean, std)) <= u)
            if u <= 0.0 or u >= 1.0:
                return float(u >= 1.0)
            return float(torch.special.ndtr(torch.tensor((math.log(u / (1 - u)) - logit_mean) / logit_std,
                                                         dtype=torch.float64)))
        p_lo, p_hi = cdf(u_lo), cdf(u_hi)
        u = torch.sigmoid(torch.special.ndtri(p_lo + (p_hi - p_lo) * r) * logit_std + logit_mean)
    elif sampling in ("shifted_uniform", "uniform"):
        u = u_lo + (u_hi - u_lo) * r
    else:
        raise ConfigError(f"unknown timestep sampling {sampling!r}")
    s = k * u / (1 + (k - 1) * u)
    top = math.nextafter(hi, 0.0) if hi < 1.0 else 1.0  # s < hi: the boundary belongs to the upper range
    return s.clamp(max(lo, 1e-5), top).float()


def flow_matching_noisy(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - s) x0 + s eps."""
    s = _expand(sigmas, x0)
    return (1 - s) * x0 + s * noise


def flow_matching_loss(pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between the predicted velocity and eps - x0 (Wan's training target).

    `weight` (broadcastable to the latents, 0 or 1): the mean over the weighted elements only, e.g.
    Wan2.2 TI2V's noised frames (its first frame goes in clean and has no target)."""
    if weight is None:
        return F.mse_loss(pred.float(), (noise.float() - x0.float()))
    err = (pred.float() - (noise.float() - x0.float())) ** 2
    weight = weight.to(err.device, err.dtype).expand_as(err)
    return (err * weight).sum() / weight.sum().clamp_min(1.0)


# ------------------------------------------------------------------------------------ CogVideoX (v)


def sample_timesteps(batch: int, num_train_timesteps: int, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Integer timesteps uniform over [0, num_train_timesteps), shape (B,) (CogVideoX training)."""
    return torch.randint(0, num_train_timesteps, (batch,), generator=generator).to(device)


def v_prediction_noisy(x0: torch.Tensor, noise: torch.Tensor, alphas_cumprod_t: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps (the DDPM forward process, `scheduler.add_noise`)."""
    a = _expand(alphas_cumprod_t.float(), x0.float())
    return (a.sqrt() * x0.float() + (1 - a).sqrt() * noise.float()).to(x0.dtype)


def v_prediction_loss(
    pred_v: torch.Tensor, noisy: torch.Tensor, x0: torch.Tensor, alphas_cumprod_t: torch.Tensor,
    weighting: str = "none",
) -> torch.Tensor:
    """Paper eq. (1): || x0 - (sqrt(a_t) x_t - sqrt(1 - a_t) v) ||^2, mean over elements.

    `weighting="inverse_noise"` multiplies each sample by 1 / (1 - a_t), as CogVideoX's own training
    (and diffusers' CogVideoX fine-tuning scripts) do; it equals the plain MSE on v.
    """
    a = _expand(alphas_cumprod_t.float(), x0.float())
    pred_x0 = a.sqrt() * noisy.float() - (1 - a).sqrt() * pred_v.float()
    err = (pred_x0 - x0.float()) ** 2
    if weighting == "inverse_noise":
        err = err / (1 - a).clamp_min(1e-8)
    elif weighting != "none":
        raise ConfigError(f"unknown loss weighting {weighting!r}")
    return err.mean()


# ------------------------------------------------------------------------------------ segmentation


def latent_segmentation_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_seg (paper eq. (2)): MSE between the head's latent mask prediction and the VAE latent of the
    mask-trajectory video; both in the trajectory-latent layout."""
    if pred.shape != target.shape:
        raise ValueError(f"segmentation prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    return F.mse_loss(pred.float(), target.float())


def total_loss(diffusion: torch.Tensor, segmentation: torch.Tensor | None, lambda_seg: float) -> dict[str, torch.Tensor]:
    """Paper eq. (3): {"loss": L_diff + lambda * L_seg, "diffusion": L_diff, "segmentation": L_seg}.

    Without a segmentation term (stage 1, or lambda 0) "segmentation" is absent and loss = L_diff.
    """
    terms = {"diffusion": diffusion}
    loss = diffusion
    if segmentation is not None:
        terms["segmentation"] = segmentation
        if lambda_seg:
            loss = loss + lambda_seg * segmentation
    terms["loss"] = loss
    return terms
