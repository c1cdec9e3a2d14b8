"""Flow-matching backbones (SD3, Flux): velocity models sampled in variance-preserving coordinates.

The sampler state is the VP state x = x_σ / r(σ) (:mod:`syncsde.schedule`, module docstring): the backbone
multiplies by r at the network call and returns the velocity v, the flow steps turn v into x̂₀ and take the Euler
step as DDIM (η = 0), and every strategy runs unchanged. The schedule is diffusers' FlowMatchEulerDiscreteScheduler
with the shift (and the σ list and resolution-dependent ``mu``) each family's pipeline uses.

Flow-matching backbones serve the tasks that need only the sampler: wide images and 2-D canvases, mask-based
text-to-image, region prompts, the sphere and plain text-to-image (SYNCSDE.md §6.7); ambiguous images (views on
Flux's packed tokens act on the latents under them, SYNCSDE.md §6.4.1); and SD3 serves editing (its inversion is the
reverse Euler step, its mask comes from the joint attention: SYNCSDE.md §6.2.1; Flux is refused there, being
guidance-distilled) and mesh texturing (with its depth ControlNet, ``sd3_controlnet``, and without SyncMVD's
multi-view attention, which needs ``unet_attention``: SYNCSDE.md §6.7.1; Flux is refused there, its packed tokens
being baked whole). They lack the ability ``vp_schedule`` (:mod:`syncsde.registry`) that motion declares.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from syncsde.backbones.diffusers import DiffusersModel
from syncsde.schedule import Schedule, flow_state


def calculate_shift(seq_len: int, config: dict, max_shift: float) -> float:
    """The resolution-dependent shift μ: linear in the image's token count between (base_image_seq_len,
    base_shift) and (max_image_seq_len, max_shift), as diffusers' SD3 and Flux pipelines compute it."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base, top = config.get("base_shift", 0.5), config.get("max_shift", max_shift)
    slope = (top - base) / (max_len - base_len)
    return seq_len * slope + base - slope * base_len


class FlowMatchingBackbone(DiffusersModel):
    """Shared by :class:`~syncsde.backbones.sd3.StableDiffusion3` and :class:`~syncsde.backbones.flux.Flux`:
    ``forward`` takes VP states and returns v; subclasses implement ``velocity(x_σ, t, context, **kw)``,
    ``seq_len(shape)``, ``timestep_options(config, num_inference_steps, seq_len)`` (a static method: the family's
    schedule needs no weights) and ``encode_prompts`` (through their diffusers pipeline's ``encode_prompt``)."""

    prediction_type = "flow"
    abilities = frozenset({"images", "flow_matching"})
    max_sequence_length = 256

    def forward(self, x: Tensor, t: Tensor, context: dict[str, Tensor], **kw) -> Tensor:
        x_sigma, _ = flow_state(x, t, self._scheduler_config.get("num_train_timesteps", 1000))
        return self.velocity(x_sigma, t, context, **kw)

    def velocity(self, x_sigma: Tensor, t: Tensor, context: dict[str, Tensor], **kw) -> Tensor:
        raise NotImplementedError

    def seq_len(self, shape: Sequence[int]) -> int:
        """The transformer's image token count for a working-space shape (C, h, w)."""
        raise NotImplementedError

    @staticmethod
    def timestep_options(config: dict, num_inference_steps: int, seq_len: int) -> dict:
        return {}

    def schedule(self, num_inference_steps, kind="ddim", eta=0.0, T=None, shape=None) -> Schedule:
        """The flow schedule of the pipeline at the size of one trajectory (a window, not the canvas: the network
        only ever sees windows, and the shift adapts the noise levels to the resolution it sees)."""
        shape = shape or (self.channels, self.sample_size, self.sample_size)
        options = self.timestep_options(self._scheduler_config, num_inference_steps, self.seq_len(shape))
        return Schedule.from_config(
            self.scheduler_config(), num_inference_steps, kind, eta, T, model=self.name, **options
        )
