"""Training recipes of the embedded models, run through Lightning:

    syncsde fit --config configs/tiny/train_t2i.yaml    # tiny text-to-image diffusion model (pixel space, 32x32)
    syncsde fit --config configs/tiny/train_clip.yaml   # tiny CLIP (contrastive, same data)

Data is the procedural scene stream (syncsde.tiny.scenes), deterministic from the seed; held-out captions are
never seen. At the end of training the (EMA) weights are exported in diffusers / transformers layout to
``export_dir`` — by default the package's own ``syncsde/embedded`` folders, which is how the shipped weights
were made.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeInt, PositiveFloat, PositiveInt
from lightning import LightningDataModule, LightningModule
from torch.utils.data import DataLoader, IterableDataset

from syncsde.tiny import models as M
from syncsde.tiny import scenes

EMBEDDED = Path(__file__).resolve().parents[1] / "embedded"


class SceneStream(IterableDataset):
    """An endless, deterministic stream of (images in [0, 1], captions) batches; batch i depends on (seed, i) only."""

    def __init__(self, batch_size: int, seed: int, held_out: bool = False, size: int = M.IMAGE_SIZE):
        self.batch_size, self.seed, self.held_out, self.size = batch_size, seed, held_out, size

    def __iter__(self):
        i = 0
        while True:
            images, captions = scenes.batch(self.seed, i, self.batch_size, self.held_out, self.size, self.size)
            yield torch.from_numpy(images), captions
            i += 1


class SceneData(LightningDataModule):
    """Procedural training scenes. Args: batch_size, seed."""

    def __init__(self, batch_size: PositiveInt = 32, seed: NonNegativeInt = 0):
        super().__init__()
        self.batch_size, self.seed = batch_size, seed

    def train_dataloader(self):
        return DataLoader(SceneStream(self.batch_size, self.seed), batch_size=None)


class _Recipe(LightningModule):
    def __init__(self, lr: float, warmup_steps: int, export_dir: str | None):
        super().__init__()
        self.lr, self.warmup_steps = lr, warmup_steps
        self.export_dir = export_dir
        self.tokenizer = M.word_tokenizer()

    def tokens(self, captions):
        return self.tokenizer(
            list(captions), padding="max_length", max_length=M.MAX_TOKENS, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / self.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_end(self):
        if self.export_dir and self.trainer.is_global_zero:
            self.export(Path(self.export_dir))


class TinyT2ITraining(_Recipe):
    """ε-prediction DDPM training of the tiny pixel-space text-to-image UNet and its text encoder, jointly, with
    caption dropout for classifier-free guidance.

    Args: lr, warmup_steps, caption_dropout (probability of the empty caption), export_dir.
    """

    def __init__(
        self,
        lr: PositiveFloat = 1e-3,
        warmup_steps: NonNegativeInt = 200,
        caption_dropout: ClosedUnitInterval = 0.1,
        export_dir: str | None = str(EMBEDDED / "tiny-t2i"),
    ):
        super().__init__(lr, warmup_steps, export_dir)
        from diffusers import DDPMScheduler

        self.unet, self.text_encoder = M.t2i_unet(), M.t2i_text_encoder()
        self.noise_scheduler = DDPMScheduler(
            **{k: v for k, v in M.SCHEDULER.items() if k not in ("steps_offset", "set_alpha_to_one")}
        )
        self.caption_dropout = caption_dropout

    def training_step(self, batch, batch_idx):
        images, captions = batch
        g = torch.Generator().manual_seed(int(self.global_step))
        drop = torch.rand(len(captions), generator=g) < self.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop)]
        x0 = images.to(self.device) * 2 - 1
        noise = torch.randn(x0.shape, generator=g).to(x0)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(x0),), generator=g).to(self.device)
        x_t = self.noise_scheduler.add_noise(x0, noise, t)
        pred = self.unet(x_t, t, encoder_hidden_states=self.text_encoder(self.tokens(captions))[0]).sample
        loss = F.mse_loss(pred, noise)
        self.log("loss", loss, prog_bar=True)
        return loss

    def export(self, folder: Path) -> Path:
        return M.save_t2i(folder, self.unet, self.text_encoder, self.tokenizer)


class TinyCLIPTraining(_Recipe):
    """Contrastive (CLIP) training of the tiny image-text model. Args: lr, warmup_steps, export_dir."""

    def __init__(
        self,
        lr: PositiveFloat = 1e-3,
        warmup_steps: NonNegativeInt = 200,
        export_dir: str | None = str(EMBEDDED / "tiny-clip"),
    ):
        super().__init__(lr, warmup_steps, export_dir)
        self.clip = M.clip_model()

    def training_step(self, batch, batch_idx):
        images, captions = batch
        from syncsde.tiny.clip import normalize

        out = self.clip(
            input_ids=self.tokens(captions), pixel_values=normalize(images.to(self.device)), return_loss=True
        )
        self.log("loss", out.loss, prog_bar=True)
        return out.loss

    def export(self, folder: Path) -> Path:
        return M.save_clip(folder, self.clip, self.tokenizer)
