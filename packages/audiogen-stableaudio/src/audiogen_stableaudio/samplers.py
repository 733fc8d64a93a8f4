"""Stable Audio samplers: pure functions over a ``denoise(x, t) -> model output`` callable.

``denoise`` is the raw network (the DiT with its conditioning and CFG bound in): it takes the
latents ``x`` (batch, channels, length) and a timestep array of shape (batch,) and returns the
network's prediction, which is a velocity for both objectives Stable Audio uses:

- ``rf_denoiser`` (Open small, rectified flow): ``x_t = (1 - t)·x0 + t·noise``, ``v = noise - x0``,
  so ``x0 = x_t - t·v``. The network sees ``t`` itself. Samplers ``pingpong`` (the reference for
  the adversarially post-trained small), ``euler`` and ``rk4``, ported from stable-audio-tools
  0.0.19 ``inference/sampling.py`` (``sample_flow_pingpong``, ``sample_discrete_euler``,
  ``sample_rk4``) over ``sample_rf``'s schedule (:func:`rf_schedule`).
- ``v`` (Open 1.0, k-diffusion ``VDenoiser``, σ_data = 1): ``x = x0 + σ·noise`` and the network
  sees ``c_in·x`` at ``t = atan(σ)·2/π``; ``x0 = c_skip·x + c_out·v``. Samplers ``dpmpp-3m-sde``
  (stable-audio-tools' default for 1.0), ``dpmpp-2m-sde`` and ``k-euler``, ported from
  k-diffusion 0.1.1 ``sampling.py`` (``sample_dpmpp_3m_sde``, ``sample_dpmpp_2m_sde`` with
  eta 1 and the midpoint solver, ``sample_euler`` without churn) over ``get_sigmas_polyexponential``
  (:func:`v_schedule`). diffusers' ``CosineDPMSolverMultistepScheduler`` (StableAudioPipeline's
  scheduler) is, step for step, DPM++ **2M** SDE with the midpoint solver on the same schedule
  (its ``solver_order`` is 2), so ``dpmpp-2m-sde`` is the diffusers-parity sampler; diffusers
  scales the initial noise by ``init_noise_sigma = sqrt(σ_max² + 1)`` where k-diffusion /
  stable-audio-tools use σ_max (see :func:`diffusers_init_noise_sigma`).

Randomness is explicit: the caller passes the initial noise and, for the stochastic samplers, a
per-step noise source (``step_noise(i)`` or ``step_noise[i]``, unit variance, the shape of ``x``),
used for the transition from level ``i`` to ``i + 1``. It is never asked for on the last step
(down to 0), where every sampler returns the denoised estimate. The references draw this noise from
a Brownian tree (k-diffusion, diffusers) or ``torch.randn_like`` (ping-pong); injecting the same
arrays reproduces their trajectories.

Schedules are computed once on the host in float64 and enter each step as Python floats, so the
loop only builds MLX graph: no host synchronisation per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from audiogen_core.errors import InvalidInputError

import mlx.core as mx
import numpy as np

Denoise = Callable[[mx.array, mx.array], mx.array]
StepNoise = Callable[[int], mx.array] | Sequence[mx.array]

RF_SAMPLERS = ("pingpong", "euler", "rk4")
V_SAMPLERS = ("dpmpp-3m-sde", "dpmpp-2m-sde", "k-euler")
# Sampler name -> the diffusion objective it is written for (model_config's diffusion_objective).
SAMPLERS: dict[str, str] = {
    **{name: "rf_denoiser" for name in RF_SAMPLERS},
    **{name: "v" for name in V_SAMPLERS},
}
STOCHASTIC = frozenset({"pingpong", "dpmpp-3m-sde", "dpmpp-2m-sde"})

# Stable Audio Open 1.0's reference sampling range (model card; diffusers' scheduler defaults).
DEFAULT_SIGMA_MIN = 0.3
DEFAULT_SIGMA_MAX = 500.0


def rf_schedule(steps: int, start: float = 1.0) -> np.ndarray:
    """stable-audio-tools ``sample_rf``'s times: ``sigmoid(-linspace(logsnr_max, 2, steps + 1))``
    with ``logsnr_max = log((1 - start)/start + 1e-6)`` for ``start < 1`` (audio-to-audio) else -6,
    then ``t[0] = start`` and ``t[-1] = 0`` overwritten (so a full run starts at exactly 1, not at
    sigmoid(6) ≈ 0.9975, and ends exactly clean)."""
    logsnr_max = math.log((1.0 - start) / start + 1e-6) if start < 1.0 else -6.0
    logsnr = np.linspace(logsnr_max, 2.0, steps + 1, dtype=np.float64)
    t = 1.0 / (1.0 + np.exp(logsnr))
    t[0] = start
    t[-1] = 0.0
    return t


def v_schedule(steps: int, sigma_min: float, sigma_max: float, rho: float = 1.0) -> np.ndarray:
    """k-diffusion ``get_sigmas_polyexponential`` (what stable-audio-tools' ``sample_k`` uses):
    ``exp(linspace(1, 0, steps)**rho · (log σ_max − log σ_min) + log σ_min)`` then a final 0.
    With rho = 1 this is diffusers' ``CosineDPMSolverMultistepScheduler`` "exponential" schedule
    (``exp(linspace(log σ_min, log σ_max, steps))`` reversed, then 0) for steps ≥ 2; for one step
    diffusers' linspace yields σ_min where this yields σ_max."""
    ramp = np.linspace(1.0, 0.0, steps, dtype=np.float64) ** rho
    log_min, log_max = math.log(sigma_min), math.log(sigma_max)
    return np.append(np.exp(ramp * (log_max - log_min) + log_min), 0.0)


def diffusers_init_noise_sigma(sigma_max: float) -> float:
    """diffusers' scale of the unit initial noise (``scheduler.init_noise_sigma``), sqrt(σ² + 1)."""
    return math.sqrt(sigma_max**2 + 1.0)


def v_to_t(sigma: float) -> float:
    """The network's timestep for noise level σ (k-diffusion ``VDenoiser.sigma_to_t``; diffusers
    ``precondition_noise``)."""
    return math.atan(sigma) / math.pi * 2.0


def _timestep(x: mx.array, value: float) -> mx.array:
    return mx.full((x.shape[0],), value, dtype=mx.float32)


def _noise_at(step_noise: StepNoise | None, i: int) -> mx.array:
    if step_noise is None:
        raise InvalidInputError("this sampler is stochastic: pass step_noise")
    return step_noise(i) if callable(step_noise) else step_noise[i]


def _v_denoised(denoise: Denoise, x: mx.array, sigma: float) -> mx.array:
    """k-diffusion ``VDenoiser.forward`` (σ_data = 1); diffusers' ``scale_model_input`` +
    ``precondition_outputs`` for v_prediction compute the same."""
    c_skip = 1.0 / (sigma**2 + 1.0)
    c_out = -sigma / math.sqrt(sigma**2 + 1.0)
    c_in = 1.0 / math.sqrt(sigma**2 + 1.0)
    return denoise(x * c_in, _timestep(x, v_to_t(sigma))) * c_out + x * c_skip


def sample_pingpong(
    denoise: Denoise, x: mx.array, t: np.ndarray, step_noise: StepNoise | None
) -> mx.array:
    """stable-audio-tools ``sample_flow_pingpong``: denoise fully, then re-noise to the next t
    with fresh noise."""
    for i in range(len(t) - 1):
        denoised = x - float(t[i]) * denoise(x, _timestep(x, float(t[i])))
        t_next = float(t[i + 1])
        x = (
            denoised
            if t_next == 0.0
            else (1.0 - t_next) * denoised + t_next * _noise_at(step_noise, i)
        )
    return x


def sample_euler_rf(denoise: Denoise, x: mx.array, t: np.ndarray) -> mx.array:
    """stable-audio-tools ``sample_discrete_euler``: ``x += (t' − t)·v``."""
    for i in range(len(t) - 1):
        x = x + float(t[i + 1] - t[i]) * denoise(x, _timestep(x, float(t[i])))
    return x


def sample_rk4_rf(denoise: Denoise, x: mx.array, t: np.ndarray) -> mx.array:
    """stable-audio-tools ``sample_rk4`` (classic 4th-order Runge-Kutta on dx/dt = v)."""
    for i in range(len(t) - 1):
        t_curr, t_next = float(t[i]), float(t[i + 1])
        dt = t_next - t_curr
        t_mid = t_curr + dt / 2
        k1 = denoise(x, _timestep(x, t_curr))
        k2 = denoise(x + dt / 2 * k1, _timestep(x, t_mid))
        k3 = denoise(x + dt / 2 * k2, _timestep(x, t_mid))
        k4 = denoise(x + dt * k3, _timestep(x, t_next))
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def sample_dpmpp_3m_sde(
    denoise: Denoise, x: mx.array, sigmas: np.ndarray, step_noise: StepNoise | None
) -> mx.array:
    """k-diffusion ``sample_dpmpp_3m_sde`` with eta = 1, s_noise = 1."""
    eta = 1.0
    denoised_1: mx.array | None = None
    denoised_2: mx.array | None = None
    h_1: float | None = None
    h_2: float | None = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _v_denoised(denoise, x, sigma)
        h = 0.0
        if sigma_next == 0.0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            h_eta = h * (eta + 1.0)
            x = math.exp(-h_eta) * x + (-math.expm1(-h_eta)) * denoised
            phi_2 = math.expm1(-h_eta) / h_eta + 1.0
            if (
                h_1 is not None
                and h_2 is not None
                and denoised_1 is not None
                and denoised_2 is not None
            ):
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None and denoised_1 is not None:
                x = x + phi_2 * ((denoised - denoised_1) / (h_1 / h))
            scale = sigma_next * math.sqrt(-math.expm1(-2.0 * h * eta))
            x = x + _noise_at(step_noise, i) * scale
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def sample_dpmpp_2m_sde(
    denoise: Denoise, x: mx.array, sigmas: np.ndarray, step_noise: StepNoise | None
) -> mx.array:
    """k-diffusion ``sample_dpmpp_2m_sde`` (eta 1, midpoint) = diffusers'
    ``CosineDPMSolverMultistepScheduler.step`` (first order on the first step and on the final
    step to σ = 0, which is ``x = denoised``; second order between)."""
    eta = 1.0
    old_denoised: mx.array | None = None
    h_last = 0.0
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _v_denoised(denoise, x, sigma)
        h = 0.0
        if sigma_next == 0.0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            eta_h = eta * h
            gain = -math.expm1(-h - eta_h)
            x = (sigma_next / sigma * math.exp(-eta_h)) * x + gain * denoised
            if old_denoised is not None:
                x = x + (0.5 * gain * h / h_last) * (denoised - old_denoised)
            scale = sigma_next * math.sqrt(-math.expm1(-2.0 * eta_h))
            x = x + _noise_at(step_noise, i) * scale
        old_denoised = denoised
        h_last = h
    return x


def sample_euler_v(denoise: Denoise, x: mx.array, sigmas: np.ndarray) -> mx.array:
    """k-diffusion ``sample_euler`` without churn: ``x += (σ' − σ)·(x − x0)/σ``."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = _v_denoised(denoise, x, sigma)
        x = x + (x - denoised) * ((sigma_next - sigma) / sigma)
    return x


def _check_shape(name: str, a: mx.array, shape: tuple[int, ...]) -> None:
    if tuple(a.shape) != shape:
        raise InvalidInputError(f"{name} has shape {tuple(a.shape)}, expected {shape}")


def sample(
    kind: str,
    denoise: Denoise,
    noise: mx.array,
    steps: int,
    *,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float = 1.0,
    step_noise: StepNoise | None = None,
    init_latents: mx.array | None = None,
    init_strength: float | None = None,
    init_noise_sigma: float | None = None,
) -> mx.array:
    """Run sampler ``kind`` from unit-variance ``noise`` (batch, channels, length) for ``steps``
    network evaluations (rk4: four per step) and return the clean latents.

    v samplers (``dpmpp-3m-sde``, ``dpmpp-2m-sde``, ``k-euler``): σ from ``sigma_max`` (default
    500) down to ``sigma_min`` (default 0.3) then 0, polyexponential with ``rho`` (1: the
    references' exponential schedule). The start is ``noise · σ_0`` as stable-audio-tools'
    ``sample_k``; pass ``init_noise_sigma=diffusers_init_noise_sigma(σ_max)`` to start as
    diffusers' StableAudioPipeline does (``noise · sqrt(σ_max² + 1)``).

    rf samplers (``pingpong``, ``euler``, ``rk4``): t from 1 to 0 over :func:`rf_schedule`;
    ``sigma_min`` / ``sigma_max`` / ``rho`` / ``init_noise_sigma`` do not apply and must be left
    unset.

    Audio-to-audio, as stable-audio-tools' ``generate_diffusion_cond(init_audio=…,
    init_noise_level=…)``, which sets the sampler's ``sigma_max`` to the noise level:
    ``init_strength`` is the noise level to start from, in the objective's own units. v: a σ in
    (sigma_min, sigma_max]; the schedule runs from it and the start is ``init_latents +
    noise·init_strength``. rf: a t in (0, 1]; the start is ``(1 − t)·init_latents + t·noise`` and
    the schedule is :func:`rf_schedule` from t. Without ``init_strength`` the start level is the
    full one (σ_max, or t = 1, where rf ignores the init latents entirely).
    """
    if kind not in SAMPLERS:
        raise InvalidInputError(f"unknown sampler {kind!r}; valid samplers: {', '.join(SAMPLERS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidInputError(f"steps must be an integer ≥ 1, got {steps!r}")
    if noise.ndim != 3:
        raise InvalidInputError(
            f"noise must be (batch, channels, length), got shape {tuple(noise.shape)}"
        )
    shape = tuple(noise.shape)
    if init_latents is not None:
        _check_shape("init_latents", init_latents, shape)
    elif init_strength is not None:
        raise InvalidInputError("init_strength needs init_latents (audio-to-audio)")
    if kind in STOCHASTIC:
        if step_noise is None:
            raise InvalidInputError(f"sampler {kind!r} is stochastic: pass step_noise")
        if not callable(step_noise):
            if len(step_noise) < steps - 1:
                raise InvalidInputError(
                    f"step_noise has {len(step_noise)} arrays; {kind!r} with {steps} steps needs "
                    f"{steps - 1} (none for the last step)"
                )
            for i, a in enumerate(step_noise[: steps - 1]):
                _check_shape(f"step_noise[{i}]", a, shape)

    if SAMPLERS[kind] == "rf_denoiser":
        unset = {
            "sigma_min": sigma_min,
            "sigma_max": sigma_max,
            "init_noise_sigma": init_noise_sigma,
        }
        given = [name for name, value in unset.items() if value is not None] + (
            ["rho"] if rho != 1.0 else []
        )
        if given:
            raise InvalidInputError(
                f"{', '.join(given)} do(es) not apply to rectified-flow sampler {kind!r}"
            )
        start = 1.0 if init_strength is None else float(init_strength)
        if not 0.0 < start <= 1.0:
            raise InvalidInputError(f"init_strength for {kind!r} is a t in (0, 1], got {start}")
        t = rf_schedule(steps, start)
        x = noise if init_latents is None else init_latents * (1.0 - start) + noise * start
        if kind == "pingpong":
            return sample_pingpong(denoise, x, t, step_noise)
        if kind == "euler":
            return sample_euler_rf(denoise, x, t)
        return sample_rk4_rf(denoise, x, t)

    lo = DEFAULT_SIGMA_MIN if sigma_min is None else float(sigma_min)
    hi = DEFAULT_SIGMA_MAX if sigma_max is None else float(sigma_max)
    if not 0.0 < lo < hi or not math.isfinite(hi):
        raise InvalidInputError(f"need 0 < sigma_min < sigma_max, got {lo} and {hi}")
    if not rho > 0.0:
        raise InvalidInputError(f"rho must be > 0, got {rho}")
    if init_strength is not None:
        if not lo < init_strength <= hi:
            raise InvalidInputError(
                f"init_strength for {kind!r} is a σ in ({lo}, {hi}], got {init_strength}"
            )
        hi = float(init_strength)
    sigmas = v_schedule(steps, lo, hi, rho)
    if init_latents is not None:
        if init_noise_sigma is not None:
            raise InvalidInputError("init_noise_sigma applies to a start from pure noise only")
        x = init_latents + noise * float(sigmas[0])
    else:
        x = noise * (float(sigmas[0]) if init_noise_sigma is None else float(init_noise_sigma))
    if kind == "dpmpp-3m-sde":
        return sample_dpmpp_3m_sde(denoise, x, sigmas, step_noise)
    if kind == "dpmpp-2m-sde":
        return sample_dpmpp_2m_sde(denoise, x, sigmas, step_noise)
    return sample_euler_v(denoise, x, sigmas)


def step_noise_from_key(
    key: mx.array, steps: int, shape: tuple[int, ...], dtype: mx.Dtype = mx.float32
) -> StepNoise:
    """A deterministic per-step noise source: step ``i`` draws from the ``i``-th split of ``key``."""
    keys = mx.random.split(key, max(steps, 1))
    return lambda i: mx.random.normal(shape, dtype=dtype, key=keys[i])
