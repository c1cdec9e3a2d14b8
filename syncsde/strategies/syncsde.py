"""SyncSDE: the conditional-score correction on x_{t−1} (SYNCSDE.md §3), with the paper's update as the default and
variants derived from the same Gaussian-likelihood view (SYNCSDE.md §4) as named options."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor

from syncsde.coupling import by_target, coupling_residuals, pull
from syncsde.errors import InputError
from syncsde.schedule import inv_lambda_schedule
from syncsde.strategies.base import Reads, Strategy

# the paper's update, and the combinations chosen by `python -m syncsde.evaluation.benchmarks.sync` (README)
LOCAL = dict(global_view=0.0, global_schedule="constant", global_fit="squash")  # no global view
PRESETS = {
    "paper": dict(correlation="autoregressive", schedule_floor=0.0, correction="explicit", target="pre_step", **LOCAL),
    "chain": dict(correlation="autoregressive", schedule_floor=1.0, correction="exact", target="post_step", **LOCAL),
    "canonical": dict(correlation="canonical", schedule_floor=1.0, correction="exact", target="post_step", **LOCAL),
    "global": dict(
        correlation="canonical",
        schedule_floor=1.0,
        correction="exact",
        target="post_step",
        global_view=1.0,
        global_schedule="fade",
        global_fit="squash",
    ),
}


FITS = ("squash", "scaled", "profile", "isotropic", "letterbox")  # how the canvas fits the global view's frame (§4.2.1)


class SyncSDE(Strategy):
    """x_{t−1}^i = x̃_{t−1}^i − γ_t (1/λ)(t/T) Σ_{j<i} W_ij ⊙ (x_t^i − f_ij(x_t^j))   (SYNCSDE.md §3).

    x̃ is the scheduler's plain step of each trajectory; the residuals read the pre-step snapshot x_t of all
    trajectories (Jacobi, §3.1); trajectory 0 — and any trajectory the task leaves uncoupled — is free. That is the
    ``paper`` preset, bit-identical to the official update.

    The Gaussian likelihood of §4 pulls x^i toward the W-weighted mean m of its targets with precision
    P = Σ_j W_ij (times (1/λ_t)/σ_t²). The options choose the correlation model and how its pull is scheduled and
    integrated (SYNCSDE.md §4.1):

    - ``correlation``: ``autoregressive`` (paper) uses the task's couplings, the factorisation
      p(x^1) p(x^2 | x^1) … of §2. ``canonical`` treats every trajectory as a noisy view of the task's canonical
      variable z (the whole canvas of a wide image, the texture of a mesh): p(x^i | z) = N(f_i(z), λ_t σ_t² I) with
      z at its most likely value g(x), so x^i is pulled toward f_i(g(x)) wherever the canonical variable covers it.
      Every trajectory contributes to every position it covers; in the limit λ → 0 this is MultiDiffusion's
      averaging of x_{t'} (SyncTweedies case 3), at λ → ∞ independent sampling.
    - ``schedule_floor``: 1/λ_t = (1/λ)·max(t/T, floor). 0 is the paper's linear fade. 1 keeps the precision
      constant: two independently noised views of one clean canvas differ by N(0, 2σ_t²), a residual whose variance
      is proportional to σ_t² at every t, i.e. a constant λ_t.
    - ``correction``: ``explicit`` (paper) subtracts c_t ⊙ P ⊙ (x − m), one explicit Euler step of the linear pull
      dx/dτ = −P ⊙ (x − m); it overshoots the target when c_t P > 1 and diverges past 2. ``exact`` integrates that
      linear ODE over the step: x ← x̃ − (1 − e^{−c_t P}) ⊙ (x − m). The two agree to first order in c_t; the exact
      form never overshoots, so strong coupling and cosine schedules are safe.
    - ``target``: ``pre_step`` (paper, Jacobi) reads every trajectory's state x_t before the step. ``post_step``
      applies the pull after the plain step (operator splitting): the residual of x^i is x̃^i − f_ij(x_{t−1}^j), with
      the trajectories corrected in the autoregressive order so each one sees the corrected states of those it is
      conditioned on (ancestral sampling of the factorisation at every step); for the canonical model, the consensus
      of the plain-stepped states. Still one batched network call per step.
    - ``global_view`` = ρ (SYNCSDE.md §4.2): the task adds one trajectory that sees the whole canvas at the native
      size (:class:`~syncsde.coupling.GlobalView`, D = area downsampling, U = bilinear upsampling). Every step the
      canvas's low band is estimated from two Gaussian views of it, the windows' consensus D(g(x̂₀)) and the global
      trajectory's x̂₀^G, fused with the global view's share ρ_t of the precision; each window's x̂₀ takes the fused
      low band, x̂₀^i += ρ_t f_i(U(x̂₀^G) − U(D(g(x̂₀)))), the global's x̂₀ becomes the fused estimate,
      x̂₀^G ← ρ_t x̂₀^G + (1 − ρ_t) D(g(x̂₀)), and every trajectory steps from its new x̂₀ with its own ε. The
      local coupling above then acts on the windows. ``global_schedule``: ``constant`` (ρ_t = ρ) or ``fade``
      (ρ_t = ρ·t/T: the global view decides the layout early, the windows the detail late). 0 = no global view.
      ``global_fit``: how the canvas fits the native frame (:class:`~syncsde.coupling.GlobalView`, SYNCSDE.md
      §4.2.1): ``squash`` (the whole frame, the canvas's aspect changed); ``scaled`` (squashed, the share ρ_t times
      the view's isotropy ι = s_min/s_max: the band average of ``isotropic``'s share; the best for one row of
      windows); ``profile`` (the difference's mean along the axis squashed more at ρ_t, the rest at ρ_t·ι);
      ``isotropic`` (squashed, but only the band the view resolves as finely along both axes is fused, and the global
      view takes the windows' consensus above it); ``letterbox`` (scaled by one factor along both axes, centred: the
      fusion acts on that part of the frame, the rest is free). All are ``squash`` on a canvas of the frame's aspect.

    Args:
        inv_lambda: 1/λ, the coupling inverse variance (0 = independent trajectories). Paper default 5.
        sync_t_min: couple only while t > sync_t_min (the mesh task uses 200, §6.5); 0 = every step.
        preset: ``paper`` (the official update); ``chain`` (the task's couplings with constant precision, exact
            integration, post-step targets: the best for long motion); ``canonical`` (the canonical model with the
            same settings: the best for wide images); ``global`` (``canonical`` with the global view, ρ = 1 fading:
            one scene on canvases taller than a window and on the sphere; not for one row of windows). Options given
            explicitly override the preset's.
        correlation, schedule_floor, correction, target, global_view, global_schedule, global_fit: see above (None =
            the preset's value).
    """

    name = "syncsde"

    def __init__(
        self,
        inv_lambda: float = 5.0,
        sync_t_min: int = 0,
        preset: Literal["paper", "chain", "canonical", "global"] = "paper",
        correlation: Literal["autoregressive", "canonical"] | None = None,
        schedule_floor: float | None = None,
        correction: Literal["explicit", "exact"] | None = None,
        target: Literal["pre_step", "post_step"] | None = None,
        global_view: float | None = None,
        global_schedule: Literal["constant", "fade"] | None = None,
        global_fit: Literal["squash", "scaled", "profile", "isotropic", "letterbox"] | None = None,
    ):
        option = "--model.strategy."
        if not 0 <= inv_lambda < float("inf"):
            raise InputError(
                f"{option}inv_lambda {inv_lambda}: 1/lambda is a precision and must be a finite number >= 0 "
                "(0 = independent trajectories); the paper uses 5"
            )
        if sync_t_min < 0:
            raise InputError(f"{option}sync_t_min {sync_t_min}: give a timestep >= 0 (0 = every step)")
        if preset not in PRESETS:
            raise InputError(f"{option}preset '{preset}' is unknown; choose one of {', '.join(PRESETS)}")
        given = dict(
            correlation=correlation,
            schedule_floor=schedule_floor,
            correction=correction,
            target=target,
            global_view=global_view,
            global_schedule=global_schedule,
            global_fit=global_fit,
        )
        options = {k: PRESETS[preset][k] if v is None else v for k, v in given.items()}
        for name, allowed in (
            ("correlation", ("autoregressive", "canonical")),
            ("correction", ("explicit", "exact")),
            ("target", ("pre_step", "post_step")),
            ("global_schedule", ("constant", "fade")),
            ("global_fit", FITS),
        ):
            if options[name] not in allowed:
                raise InputError(f"{option}{name} {options[name]!r}: choose one of {', '.join(allowed)}")
        if not 0 <= options["schedule_floor"] <= 1:
            raise InputError(
                f"{option}schedule_floor {options['schedule_floor']}: give a number in [0, 1] (0 = the paper's fade)"
            )
        self.inv_lambda, self.sync_t_min, self.preset = float(inv_lambda), int(sync_t_min), preset
        self.correlation, self.schedule_floor = options["correlation"], float(options["schedule_floor"])
        if not 0 <= options["global_view"] <= 1:
            raise InputError(
                f"{option}global_view {options['global_view']}: give the global view's share of the low band's "
                "precision, in [0, 1] (0 = no global view)"
            )
        self.correction, self.target = options["correction"], options["target"]
        self.global_view, self.global_schedule = float(options["global_view"]), options["global_schedule"]
        self.global_fit = options["global_fit"]
        self._warned = False

    def needs(self):
        needs = frozenset({"canonical"}) if self.correlation == "canonical" and self.inv_lambda else frozenset()
        return needs | {"canonical", "global_view"} if self.global_view else needs

    @property
    def faithful(self) -> bool:
        return {k: getattr(self, k) for k in PRESETS["paper"]} == PRESETS["paper"]

    def coefficient(self, step) -> float:
        """c_t = γ_t (1/λ_t) with 1/λ_t = (1/λ)·max(t/T, floor) — the paper's γ_t (1/λ)(t/T) for floor 0."""
        return step.gamma * inv_lambda_schedule(self.inv_lambda, max(step.t, self.schedule_floor * step.T), step.T)

    def gain(self, c: float, precision: Tensor | float) -> Tensor | float:
        """The factor on P ⊙ (x − m): c (explicit) or (1 − e^{−cP})/P (exact; → c as P → 0)."""
        if self.correction == "explicit":
            return c
        precision = torch.as_tensor(precision)
        return torch.where(precision > 0, -torch.expm1(-c * precision) / precision.clamp_min(1e-12), c)

    def step(self, x, eps, step, problem, noise=None):
        view = problem.global_view if self.global_view else None
        if view is None:
            return self.couple(x, self.plain_update(x, eps, step, noise), step, problem)
        out = self.global_update(x, eps, step, problem, noise)
        n = view.index  # the windows are 0..n−1, the global view n
        local = replace(problem, num_trajectories=n, global_view=None)
        return torch.cat([self.couple(x[:, :n], out[:, :n], step, local), out[:, n:]], 1)

    def global_share(self, step) -> float:
        """ρ_t: the global view's share of the precision of the canvas's low band."""
        return self.global_view * (step.t / step.T if self.global_schedule == "fade" else 1.0)

    def global_update(self, x, eps, step, problem, noise=None):
        """Every trajectory's plain step from the x̂₀ whose low band is the fusion of the windows' consensus and the
        global view's (SYNCSDE.md §4.2)."""
        view, canon = problem.global_view, problem.canonical
        if canon is None:
            raise InputError("global_view needs a problem with a canonical space (a task that provides it)")
        n, rho = view.index, self.global_share(step) * (view.isotropy() if self.global_fit == "scaled" else 1.0)
        x0 = step.x0(x, eps)
        top, left, h, w = view.band(self.global_fit)
        low = view.down(canon.aggregate(x0[:, :n]), (h, w))  # the windows' consensus as the frame shows it
        glob = x0[:, n]
        seen = glob[..., top : top + h, left : left + w]
        band = view.fitted()
        if self.global_fit == "isotropic" and band != (h, w):  # the coarse band alone; the consensus above it
            delta = rho * (view.down(seen, band) - view.down(low, band))
            windows, fused = x0[:, :n] + canon.forward(view.up(delta)), low + view.up(delta, (h, w))
        elif self.global_fit == "profile" and view.isotropy() < 1:  # the profile: ρ_t; the variation along it: ρ_t·ι
            diff = seen - low
            profile = diff.mean(view.squashed_axis(), keepdim=True)
            delta = rho * (profile + view.isotropy() * (diff - profile))
            windows, fused = x0[:, :n] + canon.forward(view.up(delta)), low + delta
        else:
            windows, fused = x0[:, :n] + rho * canon.forward(view.up(seen) - view.up(low)), rho * seen + (1 - rho) * low
        if fused.shape != glob.shape:  # letterbox: the frame outside the canvas's band keeps the global's own x̂₀
            fused, inside = glob.clone(), fused
            fused[..., top : top + h, left : left + w] = inside
        x0 = torch.cat([windows, fused[:, None]], 1)
        return step.update(x, x0, eps, noise() if step.stochastic else None)

    def couple(self, x, out, step, problem):
        """The coupling of the trajectories of ``problem`` (pre-step states ``x``, plain-stepped ``out``)."""
        if self.inv_lambda == 0 or step.t <= self.sync_t_min:
            return out
        if self.correlation == "autoregressive" and not problem.couplings:
            return out
        c = self.coefficient(step)
        if self.correction == "explicit":
            self._warn_unstable(c, step)
        if self.faithful:
            return out - c * coupling_residuals(x, problem.couplings)
        source = out if self.target == "post_step" else x
        if self.correlation == "canonical":
            canon = problem.canonical
            if canon is None:
                raise InputError(
                    "correlation: canonical needs a problem with a canonical space (a task that provides it); use "
                    "preset: paper or chain"
                )
            rho = canon.precision(source)
            residual = source - canon.forward_onto(canon.aggregate(source), source)
            return out - (self.gain(c, 1.0) if rho is None else self.gain(c, rho) * rho) * residual
        new = out.clone()
        for i, couplings in by_target(problem.couplings).items():
            residual, weight = pull(source[:, i], new if self.target == "post_step" else x, couplings)
            new[:, i] = new[:, i] - self.gain(c, weight) * residual
        return new

    def reads(self):
        if self.global_view:  # the global view reads every window and every window reads it
            return Reads(everything=True)
        if self.inv_lambda == 0:
            return Reads()
        if self.correlation == "canonical":  # the consensus at its positions: of x_t (pre_step) or of x̃ (post_step)
            return Reads(canonical=True, eps=self.target == "post_step")
        if self.target == "post_step":  # in trajectory order, each reads the corrected states before it
            return Reads(everything=True)
        return Reads(couplings=True)

    def _warn_unstable(self, c: float, step) -> None:
        if c > 2 and not self._warned:  # the explicit correction then overshoots the target by more than it closes
            warnings.warn(
                f"SyncSDE coefficient c_t = {c:.2f} > 2 at t = {step.t}: the explicit correction is unstable; lower "
                "inv_lambda, use more steps, or set correction: exact",
                stacklevel=3,
            )
            self._warned = True

    def describe(self):
        return {
            "method": self.name,
            "inv_lambda": self.inv_lambda,
            "sync_t_min": self.sync_t_min,
            "preset": self.preset,
            "correlation": self.correlation,
            "schedule_floor": self.schedule_floor,
            "correction": self.correction,
            "target": self.target,
            **({"global_view": self.global_view, "global_schedule": self.global_schedule} if self.global_view else {}),
            **({"global_fit": self.global_fit} if self.global_view and self.global_fit != "squash" else {}),
        }
