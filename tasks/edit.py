"""Text-driven real-image editing with SyncSDE (SYNCSDE.md §6.2; CSG-based, BASELINES.md §5).

1. The image is resized to the backbone's native size (Lanczos), encoded, and DDIM-inverted with the source
   prompt (guidance 1) along the exact reverse of the sampling schedule → x_T.
2. Mask: x_T is reconstructed with the source prompt (guidance 1 — the official negative = source prompt makes
   CFG a no-op) while the source word's cross-attention and the last up-block's self-attention are averaged as
   running means; M = 1[A·M_c > threshold] marks the region to edit.
3. Three trajectories, coupled as mask-based T2I with M = the edit mask; the output is x^3:
   x^1 init x_T, source prompt, negative = source (source reconstruction, free);
   x^2 init fresh noise, target prompt, negative "" (free target);
   x^3 init x_T, target prompt, negative = source prompt (the edit):
   x^2 <- x^1 with W = 1 − M;  x^3 <- x^1 with W = 1 − M and x^3 <- x^2 with W = M.
The target prompt replaces the source word by the target word in the source prompt.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from jsonargparse import lazy_instance
from jsonargparse.typing import ClosedUnitInterval, PositiveInt
from PIL import Image

from syncsde.attention import AttentionRecorder, edit_mask, replace_word, word_token_columns
from syncsde.backbones.base import Backbone, guided_eps
from syncsde.backbones.captioner import Captioner
from syncsde.coupling import Coupling, SyncProblem
from syncsde.errors import InputError
from syncsde.masks import load_image
from syncsde.sampler import invert, sample
from syncsde.strategies import Independent, Strategy, SyncSDE
from syncsde.task import SampleOutput, SyncTask


class ImageEdit(SyncTask):
    """Args (besides :class:`~syncsde.task.SyncTask`'s):
    mask_threshold: binarisation threshold of the smoothed mask (0.3).
    mask_res: cross-attention layers with at most mask_res² queries make the mask (16 for SD at 512 px).
    captioner: writes the source prompt of records that have none (BLIP through transformers).
    """

    task_name = "edit"

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy = lazy_instance(SyncSDE, inv_lambda=5.0),
        mask_threshold: ClosedUnitInterval = 0.3,
        mask_res: PositiveInt = 16,
        captioner: Captioner | None = None,
        num_inference_steps: PositiveInt = 50,
        guidance_scale: float = 5.0,
        max_batch: PositiveInt | None = None,
        progress: bool = True,
    ):
        super().__init__(
            backbone, strategy, num_inference_steps, guidance_scale, "", max_batch=max_batch, progress=progress
        )
        if not hasattr(backbone, "unet"):
            raise InputError(
                "editing records attention inside a diffusers UNet: use a DiffusersBackbone/StableDiffusion"
            )
        self.mask_threshold, self.mask_res, self.captioner = mask_threshold, mask_res, captioner

    def load(self, path: str) -> torch.Tensor:
        img = load_image(path).resize((self.native_size, self.native_size), Image.LANCZOS)
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)

    def prepare(self, batch):
        images = torch.stack([self.load(s["image"]) for s in batch]).to(self.device)
        records = []
        for s, img in zip(batch, images):
            prompt = s.get("prompt")
            if not prompt:
                if self.captioner is None:
                    raise InputError(
                        f"record for '{s['image']}' has no prompt; add \"prompt\" or set model.init_args.captioner"
                    )
                prompt = self.captioner([img])[0]
            records.append(
                {
                    **s,
                    "prompt": prompt,
                    "target_prompt": replace_word(prompt, s["source_word"], s["target_word"]),
                    "columns": word_token_columns(self.backbone.tokenizer, prompt, s["source_word"]),
                    "source": img,
                }
            )
        z0 = self.backbone.encode(images)[:, None]  # (B, 1, C, h, w)
        cond = self.backbone.encode_prompts([r["prompt"] for r in records])
        schedule = self.schedule()

        def denoise(x, step):
            return guided_eps(self.backbone, x.flatten(0, 1), step, cond, None, 1.0, self.max_batch).view_as(x)

        x_T = invert(denoise, z0, schedule, self.progress)
        with AttentionRecorder(self.backbone.unet, self.mask_res) as rec:

            def recording(x, step):
                rec.begin_step([r["columns"] for r in records])
                eps = denoise(x, step)
                rec.end_step()
                return eps

            sample(recording, x_T, schedule, Independent(), SyncProblem(1), None, self.progress)
        masks = F.interpolate(edit_mask(*rec.means(), self.mask_threshold), size=z0.shape[-2:], mode="nearest")
        return [{**r, "x_T": x_T[b, 0], "mask": masks[b]} for b, r in enumerate(records)]

    def trajectory_prompts(self, batch):
        return [
            [(s["prompt"], s["prompt"]), (s["target_prompt"], ""), (s["target_prompt"], s["prompt"])] for s in batch
        ]

    def initial_noise(self, batch, generators):
        return torch.stack(
            [
                torch.stack([s["x_T"], torch.randn(s["x_T"].shape, generator=g).to(s["x_T"]), s["x_T"]])
                for s, g in zip(batch, generators)
            ]
        )

    def problem(self, batch):
        m = torch.stack([s["mask"] for s in batch]).to(self.device)
        return SyncProblem(
            3, [Coupling(1, 0, None, 1 - m), Coupling(2, 0, None, 1 - m), Coupling(2, 1, None, m)], {"masks": m}
        )

    def assemble(self, x0, batch):
        edited, recon = self.backbone.decode(x0[:, 2]), self.backbone.decode(x0[:, 0])
        outs = []
        for b, s in enumerate(batch):
            mask = F.interpolate(s["mask"][None], size=edited.shape[-2:], mode="nearest")[0].expand(3, -1, -1)
            meta = {"target_prompt": s["target_prompt"], "mask_fraction": float(s["mask"].mean())}
            outs.append(
                SampleOutput(
                    s["sample_id"], edited[b], meta, {"reconstruction": recon[b], "mask": mask, "source": s["source"]}
                )
            )
        return outs

    def describe(self):
        return {"mask_threshold": self.mask_threshold, "mask_res": self.mask_res, "size": self.native_size}
