"""A wide image whose prompt changes along its width: one prompt per window, from a list of prompts laid out left to
right (a day turning into night, a coast turning into a city), the per-window prompts of MultiDiffusion's region
prompts and of Mixture of Diffusers (BASELINES.md §8).

The geometry, couplings, assembly and decoding are the wide-image task's (:class:`~syncsde.tasks.WideImage`, SYNCSDE.md
§6.3); only the conditioning differs. A record ``{"prompts": [p_1, ..., p_K]}`` lays the prompts out left to right
over the n windows of a row: window j gets p_{⌊jK/n⌋ + 1}, so K = 1 is the wide-image task and K = n gives every window
its own prompt. The CLIP score judges the native-size crop at the centre of each prompt's share of the width against
that prompt.
"""

from __future__ import annotations

from syncsde.errors import InputError
from syncsde.tasks.wide_image import WideImage


class PromptedWideImage(WideImage):
    """Args: those of :class:`~syncsde.tasks.WideImage`. Records: ``{"prompts": [...]}`` (one prompt or more; at
    most one per window)."""

    task_name = "wide_prompts"
    provides = WideImage.provides - {"global_view"}  # one prompt per window: none for a view of the whole canvas

    def window_prompts(self, prompts: list[str]) -> list[str]:
        """The prompt of each window (row-major): window j of a row of n gets prompt ⌊jK/n⌋."""
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError('a wide_prompts record needs "prompts": a non-empty list of strings, left to right')
        columns = self.grid.cols
        if len(prompts) > columns.n:
            raise InputError(
                f"{len(prompts)} prompts for {columns.n} windows across; give at most {columns.n} (one per window)"
            )
        per_column = [prompts[j * len(prompts) // columns.n] for j in range(columns.n)]
        return [per_column[k % columns.n] for k in range(self.n)]  # the same prompts on every row

    def validate(self, record):
        super().validate(record)
        self.window_prompts(record.get("prompts"))

    def trajectory_prompts(self, batch):
        return [self.window_prompts(s["prompts"]) for s in batch]

    def assemble(self, x0, batch):
        outputs = super().assemble(x0, batch)
        size, f = self.native_size, self.backbone.scale_factor
        for out, s in zip(outputs, batch):
            K, width = len(s["prompts"]), out.image.shape[-1]
            top = (out.image.shape[-2] - size) // 2
            for k, prompt in enumerate(s["prompts"]):
                left = min(max(round((k + 0.5) * width / K - size / 2), 0), width - size) // f * f
                out.scored.append((out.image[:, top : top + size, left : left + size], prompt))
            out.meta["prompt"] = " | ".join(s["prompts"])
        return outputs
