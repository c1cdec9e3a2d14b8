"""Text-driven real-image editing with SyncSDE (SYNCSDE.md §6.2; CSG-based, BASELINES.md §5).

1. The image is resized to the backbone's native size (Lanczos), encoded, and DDIM-inverted with the source
   prompt (guidance 1) along the exact reverse of the sampling schedule → x_T (``inversion: official``: the official
   code's inversion, BASELINES.md §5.1).
2. Mask: x_T is reconstructed with the source prompt (guidance 1 — the official negative = source prompt makes
   CFG a no-op) while the source word's cross-attention and the last up-block's self-attention are averaged as
   running means; M = 1[A·M_c > threshold] marks the region to edit.
3. Three trajectories, coupled as mask-based T2I with M = the edit mask; the output is x^3:
   x^1 init x_T, source prompt, negative = source (source reconstruction, free);
   x^2 init fresh noise, target prompt, negative "" (free target);
   x^3 init x_T, target prompt, negative = source prompt (the edit):
   x^2 <- x^1 with W = 1 − M;  x^3 <- x^1 with W = 1 − M and x^3 <- x^2 with W = M.
With ``layout: pair`` (MasaCtrl's, BASELINES.md §14) there are two trajectories, both from x_T: x^1 the source
reconstruction as above, x^2 the target prompt with negative "" (the edit); x^2 <- x^1 with W = 1 − M. Either layout
tells a strategy that rewires the UNet's self-attention (provision ``self_attention``) that the edit reads the
source reconstruction's keys and values (x^3, resp. x^2, reads x^1), with M as the object mask.
The target prompt replaces the source word by the target word in the source prompt; a source word the prompt does
not contain is looked up by CLIP text similarity among the prompt's words, as the official code does
(``missing_word``). The source word's tokens are all its sub-tokens (``source_tokens: word_index``: the official word
index + 1). Differences from the official code: docs/differences.md.

On SD3-family backbones (flow matching; SYNCSDE.md §6.2.1) the inversion is the reverse Euler step of the flow
ODE, which is DDIM inversion in the sampler's VP coordinates, and the mask comes from the MMDiT's joint attention:
image-to-text for the word's map, image-to-image for the smoothing, averaged over every joint block at the token grid
(:class:`~syncsde.attention.JointAttentionRecorder`). Flux is refused: it is guidance-distilled and cannot take the
source prompt as the edit's negative prompt.
"""

from __future__ import annotations

import sys
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, PositiveInt
from PIL import Image

from syncsde.attention import (
    AttentionRecorder,
    JointAttentionRecorder,
    edit_mask,
    find_word,
    missing_word_error,
    replace_word,
    word_token_columns,
)
from syncsde.backbones.base import Backbone, guided_eps
from syncsde.backbones.captioner import Captioner, ClipWords
from syncsde.coupling import Coupling, SelfAttention, SyncProblem
from syncsde.errors import InputError
from syncsde.masks import load_image
from syncsde.sampler import invert, invert_official, sample, sample_generator
from syncsde.strategies import Independent, Strategy
from syncsde.task import DEFAULT_STRATEGY, SampleOutput, SyncTask


class ImageEdit(SyncTask):
    """Args (besides :class:`~syncsde.task.SyncTask`'s):
    mask_threshold: binarisation threshold of the smoothed mask (0.3).
    mask_res: cross-attention layers with at most mask_res² queries make the mask (16 for SD at 512 px); UNets only:
        on SD3 every joint block makes it, at the token grid.
    captioner: writes the source prompt of records that have none (BLIP through transformers).
    missing_word: a source word absent from the prompt: ``clip`` (the official code's fallback: edit the prompt word
        with the highest CLIP text cosine similarity to it; the sidecar's ``source_word_used`` names it) or ``error``.
    clip_model: the CLIP for that fallback (ViT-B/32 as the official code; a hub id, a folder, or
        ``syncsde:tiny-clip``), loaded only when a word is missing.
    source_tokens: the token columns of the source word's cross-attention: ``subtokens`` (every sub-token of the
        word) or ``word_index`` (the official code's: the word's index + 1, right only if every earlier word is one
        token).
    inversion: ``exact`` (DDIM inversion along the exact reverse of the sampling schedule, from the VAE posterior
        mean) or ``official`` (the official code's, BASELINES.md §5.1: 48 steps for 50, ᾱ one index off, from a
        posterior sample drawn from the sample's own generator; SD's UNet only, refused on flow-matching models as
        ``source_tokens: word_index`` is).
    layout: the trajectories: ``sync`` (SyncSDE's three) or ``pair`` (MasaCtrl's source and edit; set by
        ``--method masactrl``).
    """

    task_name = "edit"
    needs = frozenset({"images", "attention_maps"})  # the attention mask (inversion: VP or flow schedules alike)
    provides = frozenset({"couplings", "self_attention"})

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy = DEFAULT_STRATEGY,
        mask_threshold: ClosedUnitInterval = 0.3,
        mask_res: PositiveInt = 16,
        captioner: Captioner | None = None,
        missing_word: Literal["clip", "error"] = "clip",
        clip_model: str = "openai/clip-vit-base-patch32",
        source_tokens: Literal["subtokens", "word_index"] = "subtokens",
        inversion: Literal["exact", "official"] = "exact",
        layout: Literal["sync", "pair"] = "sync",
        guidance_scale: float = 5.0,
        **kwargs,
    ):
        if backbone.guidance_distilled:
            raise InputError(
                "the edit task guides the edit away from the source prompt, its negative prompt; "
                f"{backbone.name} is guidance-distilled (Flux) and takes none: use an SD or SD3 backbone "
                "(--model.backbone sd3)"
            )
        super().__init__(backbone, strategy, guidance_scale=guidance_scale, negative_prompt="", **kwargs)
        self.flow = "flow_matching" in backbone.abilities
        if self.flow:  # the official code's quirks are defined for SD's UNet only
            chosen = {"inversion": inversion, "source_tokens": source_tokens}
            for name, quirk, fix in (("inversion", "official", "exact"), ("source_tokens", "word_index", "subtokens")):
                if chosen[name] == quirk:
                    raise InputError(
                        f"{name}: {quirk} is a quirk of the official code for SD's UNet; {backbone.name} is a "
                        f"flow-matching model: use --model.{name} {fix}"
                    )
        for name, value, allowed in (
            ("missing_word", missing_word, ("clip", "error")),
            ("source_tokens", source_tokens, ("subtokens", "word_index")),
            ("inversion", inversion, ("exact", "official")),
            ("layout", layout, ("sync", "pair")),
        ):
            if value not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        self.mask_threshold, self.mask_res, self.captioner = mask_threshold, mask_res, captioner
        self.missing_word, self.clip_model, self.source_tokens = missing_word, clip_model, source_tokens
        self.inversion, self.layout = inversion, layout
        if "self_attention" in strategy.needs():
            if "unet_attention" not in backbone.abilities:
                raise InputError(
                    f"{type(strategy).__name__} rewires a UNet's self-attention; {backbone.name} "
                    f"({type(backbone).__name__}) has no UNet: use an SD or SDXL backbone (--model.backbone sd or "
                    "sdxl) or another method (--method paper)"
                )
            strategy.bind(backbone.unet)
        self._clip_words: ClipWords | None = None  # loaded on the first missing word

    @property
    def steps_per_batch(self) -> int:
        """Network steps of one batch (the progress' step count): the inversion, the mask's reconstruction, the
        edit."""
        steps = len(self.schedule().steps)
        return (steps if self.inversion == "exact" else steps - 2) + 2 * steps

    def load(self, path: str) -> torch.Tensor:
        img = load_image(path).resize((self.native_size, self.native_size), Image.LANCZOS)
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)

    def source_word(self, prompt: str, word: str) -> tuple[int, str]:
        """(index of the prompt word to edit, how it was found: "exact" or "clip")."""
        index = find_word(prompt, word)
        if index is not None:
            return index, "exact"
        if self.missing_word == "error":
            raise missing_word_error(prompt, word)
        if self._clip_words is None:
            self._clip_words = ClipWords(self.clip_model, self.device)
        index = self._clip_words.nearest(word, prompt.split())
        print(
            f"syncsde: '{word}' is not in the prompt '{prompt}'; editing '{prompt.split()[index]}' instead (the "
            "nearest word by CLIP text similarity; missing_word: error refuses instead)",
            file=sys.stderr,
        )
        return index, "clip"

    def token_columns(self, prompt: str, index: int) -> list[int]:
        """The source word's token positions in the prompt (BOS = 0), by ``source_tokens``.

        On SD3 they index the transformer's text sequence [CLIP tokens (the CLIP tokenizer's length: 77) ; T5 tokens]:
        the word's sub-tokens in the CLIP part (CLIP-L and CLIP-G share the tokenizer and their positions), and in
        the T5 part too when the checkpoint has a T5 (without one that part holds zero embeddings, whose keys say
        nothing about the word) and the word lies within the T5 tokens read (``max_sequence_length``, the last
        one T5's end token). Both parts name the word, so both carry its attention; the map averages over all its
        columns."""
        tokenizer = self.backbone.tokenizer
        columns = word_token_columns(tokenizer, prompt, index) if self.source_tokens == "subtokens" else [index + 1]
        if max(columns) >= tokenizer.model_max_length:
            raise InputError(
                f"the word to edit in '{prompt}' lies past the text encoder's {tokenizer.model_max_length} tokens; "
                "shorten the prompt"
            )
        if self.flow and getattr(self.backbone, "text_encoder_3", None) is not None:
            t5 = word_token_columns(self.backbone.tokenizer_3, prompt, index)
            read = self.backbone.max_sequence_length - 1  # truncation keeps the end token last
            columns += [tokenizer.model_max_length + c for c in t5 if c < read]
        return columns

    def invert(self, images: torch.Tensor, batch, denoise) -> torch.Tensor:
        """x_T (B, 1, C, h, w) in the sampler's dtype, by ``inversion``: the exact reverse of the schedule from the
        VAE posterior mean, or the official code's from a posterior sample (noise from each sample's generator)."""
        schedule = self.schedule()
        if self.inversion == "exact":
            return invert(denoise, self.backbone.encode(images).to(self.state_dtype)[:, None], schedule, self.progress)
        from diffusers import DDIMScheduler

        shape = (self.backbone.channels, self.backbone.sample_size, self.backbone.sample_size)
        gens = [sample_generator(s["seed"], s["sample_id"], stream=1) for s in batch]
        noise = torch.stack([torch.randn(shape, generator=g) for g in gens])
        z0 = self.backbone.encode(images, noise=noise).to(self.state_dtype)[:, None]
        alphas = DDIMScheduler.from_config(self.backbone.scheduler_config()).alphas_cumprod
        return invert_official(denoise, z0, schedule, alphas, self.progress)

    def prepare(self, batch):
        images = torch.stack([self.load(s["image"]) for s in batch]).to(self.device)
        records = []
        for s, img in zip(batch, images):
            prompt = s.get("prompt")
            if not prompt:
                if self.captioner is None:
                    raise InputError(
                        f"record for '{s['image']}' has no prompt; add \"prompt\" or set model.captioner"
                    )
                prompt = self.captioner([img])[0]
            index, match = self.source_word(prompt, s["source_word"])
            records.append(
                {
                    **s,
                    "prompt": prompt,
                    "target_prompt": replace_word(prompt, index, s["source_word"], s["target_word"]),
                    "source_word_used": prompt.split()[index],
                    "source_word_match": match,
                    "columns": self.token_columns(prompt, index),
                    "source": img,
                }
            )
        cond = self.backbone.encode_prompts([r["prompt"] for r in records])

        def denoise(x, step):
            return guided_eps(self.backbone, x.flatten(0, 1), step, cond, None, 1.0, self.max_batch).view_as(x)

        x_T = self.invert(images, batch, denoise)
        schedule = self.schedule()
        if self.flow:  # SD3's joint attention, at the token grid
            grid = (x_T.shape[-2] // self.backbone.patch_size, x_T.shape[-1] // self.backbone.patch_size)
            recorder = JointAttentionRecorder(self.backbone.transformer, grid)
        else:
            recorder = AttentionRecorder(self.backbone.unet, self.mask_res)
        with recorder as rec:

            def recording(x, step):
                rec.begin_step([r["columns"] for r in records])
                eps = denoise(x, step)
                rec.end_step()
                return eps

            sample(recording, x_T, schedule, Independent(), SyncProblem(1), None, self.progress)
        masks = F.interpolate(edit_mask(*rec.means(), self.mask_threshold), size=x_T.shape[-2:], mode="nearest")
        return [{**r, "x_T": x_T[b, 0], "mask": masks[b]} for b, r in enumerate(records)]

    def _sample(self, batch, x_T):
        if "self_attention" not in self.strategy.needs():
            return super()._sample(batch, x_T)
        with self.strategy.rewired():  # the UNet's self-attention rewired for this sampling only
            return super()._sample(batch, x_T)

    @property
    def edited(self) -> int:
        """The trajectory of the edit."""
        return 1 if self.layout == "pair" else 2

    def trajectory_prompts(self, batch):
        if self.layout == "pair":
            return [[(s["prompt"], s["prompt"]), (s["target_prompt"], "")] for s in batch]
        return [
            [(s["prompt"], s["prompt"]), (s["target_prompt"], ""), (s["target_prompt"], s["prompt"])] for s in batch
        ]

    def initial_noise(self, batch, generators):
        if self.layout == "pair":
            return torch.stack([torch.stack([s["x_T"], s["x_T"]]) for s in batch])
        return torch.stack(
            [
                torch.stack([s["x_T"], torch.randn(s["x_T"].shape, generator=g).to(s["x_T"]), s["x_T"]])
                for s, g in zip(batch, generators)
            ]
        )

    def problem(self, batch):
        m = torch.stack([s["mask"] for s in batch]).to(self.device)
        attention = SelfAttention({self.edited: 0}, m)
        if self.layout == "pair":
            return SyncProblem(2, [Coupling(1, 0, None, 1 - m)], attention=attention)
        couplings = [Coupling(1, 0, None, 1 - m), Coupling(2, 0, None, 1 - m), Coupling(2, 1, None, m)]
        return SyncProblem(3, couplings, attention=attention)

    def assemble(self, x0, batch):
        edited, recon = self.backbone.decode(x0[:, self.edited]), self.backbone.decode(x0[:, 0])
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
        return {
            "mask_threshold": self.mask_threshold,
            "mask_res": self.mask_res,
            "size": self.native_size,
            "inversion": self.inversion,
            "layout": self.layout,
            "source_tokens": self.source_tokens,
            "missing_word": self.missing_word,
            "clip_model": self.clip_model,
        }
