"""SyncSDE's per-step coupling coefficient c_t = γ_t (1/λ)(t/T) on each backbone family's own schedule, the
reasoning behind the 1/λ of the SDXL, SD3 and Flux configs (README, "Backbones").

On a window-pair residual d = x^i − f(x^j) the correction removes c_t·d per step (on top of the plain step, whose
gain on d is ≈ 1 at high noise): c_t < 1 pulls toward the target without passing it, c_t > 2 overshoots by more
than it closes (the strategy warns). The paper's setting — SD, 50 DDIM steps, 1/λ = 5 — peaks at c_t ≈ 0.62; SDXL
shares SD's β schedule. Flow schedules (SD3, Flux) start at σ = 1 (no correction: γ_t is infinite there) and then
spend several steps at SNRs below SD's ᾱ_T, where c_t per unit of 1/λ is about 1: 1/λ = 0.9 keeps every c_t below 1.

    python -m syncsde.evaluation.benchmarks.coupling      # prints the table and refreshes the README block
"""

from __future__ import annotations

from syncsde.backbones.flux import Flux
from syncsde.backbones.sd3 import StableDiffusion3
from syncsde.evaluation.benchmarks.readme import write_result
from syncsde.schedule import SD_SCHEDULER, Schedule, inv_lambda_schedule

# the scheduler_config.json of each checkpoint on the hub (the keys that set the schedule)
SD2_BASE = {"_class_name": "PNDMScheduler", **SD_SCHEDULER}
SDXL_BASE = {
    "_class_name": "EulerDiscreteScheduler",
    **{k: SD_SCHEDULER[k] for k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps")},
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "timestep_spacing": "leading",
}
SD3_MEDIUM = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
FLUX_DEV = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


def schedules() -> dict[str, tuple[Schedule, float]]:
    """Each family's schedule at its configs' settings (1024 px windows for SDXL, SD3, Flux), with its 1/λ."""
    return {
        "SD-2-base (paper), DDIM 50": (Schedule.from_config(SD2_BASE, 50), 5.0),
        "SDXL, DDIM 50": (Schedule.from_config(SDXL_BASE, 50), 5.0),
        "SD3, Euler 28, shift 3": (
            Schedule.from_config(SD3_MEDIUM, 28, **StableDiffusion3.timestep_options(SD3_MEDIUM, 28, 64 * 64)),
            0.9,
        ),
        "Flux.1-dev, Euler 28, μ(4096 tokens)": (
            Schedule.from_config(FLUX_DEV, 28, **Flux.timestep_options(FLUX_DEV, 28, 64 * 64)),
            0.9,
        ),
    }


def coefficients(schedule: Schedule, inv_lambda: float) -> list[float]:
    """c_t = γ_t (1/λ)(t/T) at every step (what SyncSDE multiplies the residual by)."""
    return [s.gamma * inv_lambda_schedule(inv_lambda, s.t, s.T) for s in schedule]


def main() -> None:
    rows, data = [], {}
    for name, (schedule, inv_lambda) in schedules().items():
        for il in dict.fromkeys([inv_lambda, 5.0]):
            c = coefficients(schedule, il)
            data[f"{name}, 1/λ = {il:g}"] = c
            first = ", ".join(f"{v:.2f}" for v in c[:4])
            rows.append(f"| {name} | {il:g} | {first} | {max(c):.2f} | {sum(c):.2f} |")
    table = "\n".join(
        [
            "| schedule | 1/λ | c_t, first four steps | max c_t | Σ c_t |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    write_result("coupling_strength", table, data)


if __name__ == "__main__":
    main()
