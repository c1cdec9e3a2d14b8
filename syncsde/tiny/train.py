"""Training recipes of the embedded models, run through Lightning:

    syncsde fit --config configs/tiny/train_vae.yaml      # 1. the autoencoder of tiny-ldm (scale factor 4)
    syncsde fit --config configs/tiny/train_ldm.yaml      # 2. its text-conditioned latent UNet and text encoder
    syncsde fit --config configs/tiny/train_decoder.yaml  # 3. the exported pipeline's decoder again (GAN loss)
    syncsde fit --config configs/tiny/train_clip.yaml     #    tiny CLIP (contrastive, same data; independent of 1-3)
    syncsde fit --config configs/tiny/train_flow.yaml     #    tiny-flow: SD3-style rectified flow (after 1-3)

Data is the procedural scene stream (syncsde.tiny.scenes), deterministic from the seed; held-out captions are
never seen. At the end of training the (EMA) weights are exported in diffusers / transformers layout to
``export_dir``: the VAE to a staging folder that step 2 reads, the complete latent diffusion pipeline and the CLIP
to the package's own ``syncsde/embedded`` folders; step 3 replaces that pipeline's ``vae/`` (its encoder unchanged).
This is how the shipped weights were made.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from lightning import LightningDataModule, LightningModule
from torch.utils.data import DataLoader, IterableDataset

from syncsde.tiny import models as M
from syncsde.tiny import scenes

EMBEDDED = Path(__file__).resolve().parents[1] / "embedded"
VAE_STAGING = "outputs/train_vae/vae"


class SceneStream(IterableDataset):
    """An endless, deterministic stream of batches {"images": in [0, 1], "captions", "objects": object masks}; batch
    i depends on (seed, i) only. With ``flips``, each image is flipped vertically and/or horizontally with
    probability 1/2 each (autoencoder training: views of latents then decode like views of images, which ambiguous
    images rely on). With ``crop``, each image is a random square crop of that size (autoencoder training: four times
    the steps per CPU second). Under data parallelism, process ``shard`` of ``shards`` takes batches
    i·shards + shard of the stream. ``start``: this process's batches already taken (a resumed training goes on
    where the checkpoint left the stream, as the uninterrupted run would)."""

    def __init__(
        self,
        batch_size: int,
        seed: int,
        held_out: bool = False,
        size: int = M.IMAGE_SIZE,
        flips: bool = False,
        crop: int | None = None,
        shard: int = 0,
        shards: int = 1,
        start: int = 0,
    ):
        self.batch_size, self.seed, self.held_out, self.size = batch_size, seed, held_out, size
        self.flips, self.crop, self.shard, self.shards, self.start = flips, crop, shard, shards, start

    def __iter__(self):
        step = self.start
        while True:
            i = step * self.shards + self.shard
            images, captions, objects = scenes.batch_layers(
                self.seed, i, self.batch_size, self.held_out, self.size, self.size
            )
            layers = torch.cat([torch.from_numpy(images), torch.from_numpy(objects).float()], dim=1)
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            if self.flips:
                for dim in (2, 3):
                    flip = torch.rand(len(layers), generator=g) < 0.5
                    layers[flip] = layers[flip].flip(dim)
            if self.crop:
                c = self.crop
                y, x = torch.randint(0, self.size - c + 1, (2, len(layers)), generator=g).tolist()
                layers = torch.stack([im[:, a : a + c, b : b + c] for im, a, b in zip(layers, y, x)])
            yield {"images": layers[:, :3], "captions": captions, "objects": layers[:, 3:]}
            step += 1


class SceneData(LightningDataModule):
    """Procedural training scenes. Args: batch_size (per process), seed, flips (random vertical/horizontal flips),
    crop (random square crops of this size; None = whole 64 px images)."""

    def __init__(
        self,
        batch_size: PositiveInt = 32,
        seed: NonNegativeInt = 0,
        flips: bool = False,
        crop: PositiveInt | None = None,
    ):
        super().__init__()
        self.batch_size, self.seed, self.flips, self.crop = batch_size, seed, flips, crop

    def train_dataloader(self):
        shard, shards, start = 0, 1, 0
        if self.trainer:  # a run resumed from a checkpoint has its batch count back by now
            shard, shards = self.trainer.global_rank, self.trainer.world_size
            start = self.trainer.fit_loop.epoch_loop.batch_progress.total.processed
        stream = SceneStream(
            self.batch_size, self.seed, flips=self.flips, crop=self.crop, shard=shard, shards=shards, start=start
        )
        return DataLoader(stream, batch_size=None)


class _Recipe(LightningModule):
    def __init__(self, lr: float, warmup_steps: int, export_dir: str | None, lr_decay: str = "constant"):
        super().__init__()
        # plain numbers: a checkpoint (optimizer and schedule state) must load with torch.load(weights_only=True),
        # which refuses the CLI's validated float subclasses
        self.lr, self.warmup_steps, self.lr_decay = float(lr), int(warmup_steps), lr_decay
        self.export_dir = export_dir
        self.tokenizer = M.word_tokenizer()

    def tokens(self, captions):
        return self.tokenizer(
            list(captions), padding="max_length", max_length=M.MAX_TOKENS, truncation=True, return_tensors="pt"
        ).input_ids.to(self.device)

    def trainable(self):
        return self.parameters()

    def on_fit_start(self):
        # Channels-last convolutions: 1.1-1.2x faster batches on CPU (oneDNN;
        # `python -m syncsde.evaluation.benchmarks.recipes`), the same arithmetic up to rounding.
        self.to(memory_format=torch.channels_last)

    def generator(self) -> torch.Generator:
        """This step's random numbers (noise, timesteps, caption dropout), distinct in every process."""
        return torch.Generator().manual_seed(self.global_step * self.trainer.world_size + self.global_rank)

    def lr_factor(self, step: int) -> float:
        """Linear warm-up, then constant, or with ``lr_decay`` "cosine" down to 0 at ``max_steps``."""
        warm = min(1.0, (step + 1) / max(self.warmup_steps, 1))
        if self.lr_decay == "constant":
            return warm
        total = max(self.trainer.max_steps, 1)
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.trainable(), lr=self.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_train_end(self):
        if self.export_dir and self.trainer.is_global_zero:
            self.export(Path(self.export_dir))

    def export(self, folder: Path) -> Path:
        raise NotImplementedError


def reconstruction_loss(rec, x, objects, object_weight: float):
    """L1, weighted up by ``1 + object_weight`` on object pixels (small, but what captions are about)."""
    weight = 1 + object_weight * objects
    return ((rec - x).abs() * weight).mean() / weight.mean()


def gradient_loss(rec, x):
    """L1 between the image gradients (finite differences along y and x): keeps edges sharp."""
    return sum((rec.diff(dim=d) - x.diff(dim=d)).abs().mean() for d in (2, 3))


def load_vae(folder: str, made_by: str):
    """A trained AutoencoderKL from ``folder``, or a one-line error naming the recipe that makes it."""
    from diffusers import AutoencoderKL

    if not (Path(folder) / "config.json").is_file():
        from syncsde.errors import InputError

        raise InputError(
            f"no trained autoencoder in '{folder}': run `syncsde fit --config {made_by}` first, "
            "or point the recipe's model.init_args at one"
        )
    return AutoencoderKL.from_pretrained(folder, local_files_only=True)


class TinyVAETraining(_Recipe):
    """The tiny-ldm autoencoder (``AutoencoderKL``, scale factor 4, 4 latent channels): L1 reconstruction, weighted
    up on the pixels of objects (small, but what captions are about), plus L1 on the image gradients (keeps edges
    sharp without a perceptual network) and a small KL term — Stable Diffusion's KL autoencoder loss without its LPIPS
    and GAN parts. The learning rate decays to 0 by ``max_steps`` (cosine). At export, ``scaling_factor`` is set to
    1/std of the latents of ``scale_images`` training images, so that scaled latents have unit std (SD's 0.18215 is
    the same).

    Args: lr, warmup_steps, kl_weight, gradient_weight, object_weight (extra L1 weight on object pixels),
    scale_images, latent_channels (4 as shipped; train_ldm's UNet takes the autoencoder's), export_dir (staging
    folder for train_ldm).
    """

    def __init__(
        self,
        lr: PositiveFloat = 1e-3,
        warmup_steps: NonNegativeInt = 100,
        kl_weight: NonNegativeFloat = 1e-6,
        gradient_weight: NonNegativeFloat = 1.0,
        object_weight: NonNegativeFloat = 8.0,
        scale_images: PositiveInt = 512,
        latent_channels: PositiveInt = 4,
        export_dir: str | None = VAE_STAGING,
    ):
        super().__init__(lr, warmup_steps, export_dir, lr_decay="cosine")
        self.vae = M.vae(latent_channels)
        self.kl_weight, self.gradient_weight, self.object_weight = kl_weight, gradient_weight, object_weight
        self.scale_images = scale_images

    def training_step(self, batch, batch_idx):
        x = batch["images"].to(self.device) * 2 - 1
        posterior = self.vae.encode(x).latent_dist
        g = self.generator()
        rec = self.vae.decode(posterior.sample(generator=g)).sample
        l1 = reconstruction_loss(rec, x, batch["objects"].to(self.device), self.object_weight)
        grad = gradient_loss(rec, x)
        kl = posterior.kl().mean()
        loss = l1 + self.gradient_weight * grad + self.kl_weight * kl
        self.log_dict({"loss": loss, "l1": l1, "kl": kl}, prog_bar=True)
        return loss

    @torch.no_grad()
    def latent_std(self) -> float:
        images, _ = scenes.batch(12345, 0, self.scale_images)
        x = torch.from_numpy(images).to(self.device) * 2 - 1
        g = torch.Generator().manual_seed(0)
        z = torch.cat([self.vae.encode(c).latent_dist.sample(generator=g) for c in x.split(64)])
        return float(z.std())

    def export(self, folder: Path) -> Path:
        self.vae.register_to_config(scaling_factor=round(1 / self.latent_std(), 5))
        self.vae.save_pretrained(folder)
        return folder


def patch_discriminator(channels: int = 32, layers: int = 3):
    """A PatchGAN discriminator (Isola et al. 2017; the one of Stable Diffusion's autoencoder loss, smaller): strided
    4×4 convolutions, one logit per overlapping patch (receptive field 22 px at 3 layers)."""
    from torch import nn

    blocks, c_in = [], 3
    for i in range(layers):
        c_out = channels * 2**i
        blocks += [nn.Conv2d(c_in, c_out, 4, stride=2 if i < layers - 1 else 1, padding=1)]
        blocks += [nn.GroupNorm(8, c_out)] if i else []
        blocks += [nn.LeakyReLU(0.2)]
        c_in = c_out
    return nn.Sequential(*blocks, nn.Conv2d(c_in, 1, 4, padding=1))


class TinyDecoderTraining(_Recipe):
    """The decoder of a trained pipeline's autoencoder, trained again with its encoder frozen (as Stable Diffusion's
    fine-tuned ``ft-MSE``/``ft-EMA`` decoders were): the latents do not move, so the pipeline's UNet, trained on
    them, is untouched. The loss is TinyVAETraining's object-weighted L1 + gradient L1 plus the adversarial part of
    SD's autoencoder loss: a PatchGAN discriminator with hinge loss, its generator term weighted adaptively by
    ``adversarial_weight`` · ‖∇L_rec‖ / ‖∇L_adv‖ at the decoder's last layer (Esser et al. 2021). An L1 decoder
    draws the mean of what the 16×16 latents leave open (stars, wave and grass texture come out as blur); the
    discriminator asks for texture that looks like the renders'.

    Each batch takes one decoder and one discriminator step, and Lightning's ``max_steps`` counts both: 2 per batch.

    Args: pipeline (a diffusers folder whose ``vae/`` is read), lr (decoder and discriminator), warmup_steps,
    adversarial_weight, adversarial_start (batches of reconstruction loss alone first), gradient_weight,
    object_weight, export_dir (the pipeline folder whose ``vae/`` is replaced, stored in float16 as save_ldm does).
    """

    def __init__(
        self,
        pipeline: str = str(EMBEDDED / "tiny-ldm"),
        lr: PositiveFloat = 2e-4,
        warmup_steps: NonNegativeInt = 100,
        adversarial_weight: NonNegativeFloat = 0.5,
        adversarial_start: NonNegativeInt = 200,
        gradient_weight: NonNegativeFloat = 1.0,
        object_weight: NonNegativeFloat = 8.0,
        export_dir: str | None = str(EMBEDDED / "tiny-ldm"),
    ):
        super().__init__(lr, warmup_steps, export_dir)
        self.vae = load_vae(str(Path(pipeline) / "vae"), "configs/tiny/train_ldm.yaml")
        for frozen in (self.vae.encoder, self.vae.quant_conv):
            frozen.requires_grad_(False).eval()
        self.discriminator = patch_discriminator()
        self.adversarial_weight, self.adversarial_start = adversarial_weight, adversarial_start
        self.gradient_weight, self.object_weight = gradient_weight, object_weight
        self.automatic_optimization = False

    def configure_optimizers(self):
        decoder = [p for p in self.vae.parameters() if p.requires_grad]
        opts = [torch.optim.Adam(ps, lr=self.lr, betas=(0.5, 0.9)) for ps in (decoder, self.discriminator.parameters())]
        return opts, [torch.optim.lr_scheduler.LambdaLR(o, self.lr_factor) for o in opts]

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        x = batch["images"].to(self.device) * 2 - 1
        with torch.no_grad():
            z = self.vae.encode(x).latent_dist.sample(generator=self.generator())
        rec = self.vae.decode(z).sample
        rec_loss = reconstruction_loss(rec, x, batch["objects"].to(self.device), self.object_weight)
        rec_loss = rec_loss + self.gradient_weight * gradient_loss(rec, x)
        loss, g_adv, weight = rec_loss, rec.new_zeros(()), rec.new_zeros(())
        if self.global_step // 2 >= self.adversarial_start:  # Lightning counts both optimizers' steps
            g_adv = -self.discriminator(rec).mean()
            last = self.vae.decoder.conv_out.weight
            grads = [torch.autograd.grad(term, last, retain_graph=True)[0].norm() for term in (rec_loss, g_adv)]
            weight = (grads[0] / (grads[1] + 1e-4)).clamp(max=1e4).detach() * self.adversarial_weight
            loss = rec_loss + weight * g_adv
        opt_g.zero_grad()
        self.manual_backward(loss)
        opt_g.step()
        d_loss = F.relu(1 - self.discriminator(x)).mean() + F.relu(1 + self.discriminator(rec.detach())).mean()
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        for sched in self.lr_schedulers():
            sched.step()
        self.log_dict({"rec": rec_loss, "g_adv": g_adv, "w_adv": weight, "d_loss": d_loss}, prog_bar=True)

    def export(self, folder: Path) -> Path:
        """Replace ``folder/vae`` as a whole: written beside it, then renamed over it."""
        return M.replace_folder(folder / "vae", copy.deepcopy(self.vae).half().save_pretrained)


class _LatentRecipe(_Recipe):
    """A text-to-image recipe on the latents of a frozen autoencoder (``self.vae``) with caption dropout
    (``self.caption_dropout``)."""

    def captions_and_latents(self, batch, g: torch.Generator) -> tuple[list[str], torch.Tensor]:
        """The batch's captions, each dropped to "" with probability ``caption_dropout`` (classifier-free guidance),
        and the scaled latents of its images (a posterior sample), drawn from ``g`` in that order."""
        images, captions = batch["images"], batch["captions"]
        drop = torch.rand(len(captions), generator=g) < self.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop)]
        with torch.no_grad():
            self.vae.eval()
            posterior = self.vae.encode(images.to(self.device) * 2 - 1).latent_dist
            z0 = posterior.sample(generator=g) * self.vae.config.scaling_factor
        return captions, z0


class TinyLDMTraining(_LatentRecipe):
    """ε-prediction training of the tiny latent UNet and its text encoder, jointly, on latents of a frozen
    autoencoder (train_vae.yaml), with Stable Diffusion's noise schedule, caption dropout for classifier-free
    guidance, and Min-SNR-γ loss weights (Hang et al. 2023; ``snr_gamma`` None = plain MSE, as SD).

    Args: vae (folder of the trained AutoencoderKL), widths (the UNet's channels at 16, 8 and 4 latent pixels), lr,
    warmup_steps, lr_decay (after warm-up: "constant", or "cosine" to 0 at ``max_steps``), caption_dropout,
    snr_gamma, export_dir.
    """

    def __init__(
        self,
        vae: str = VAE_STAGING,
        widths: tuple[PositiveInt, PositiveInt, PositiveInt] = (48, 96, 144),
        lr: PositiveFloat = 1e-3,
        warmup_steps: NonNegativeInt = 200,
        lr_decay: Literal["constant", "cosine"] = "constant",
        caption_dropout: ClosedUnitInterval = 0.1,
        snr_gamma: PositiveFloat | None = 5.0,
        export_dir: str | None = str(EMBEDDED / "tiny-ldm"),
    ):
        super().__init__(lr, warmup_steps, export_dir, lr_decay)
        from diffusers import DDPMScheduler

        from syncsde.schedule import SD_SCHEDULER

        self.vae = load_vae(vae, "configs/tiny/train_vae.yaml").requires_grad_(False).eval()
        self.unet, self.text_encoder = M.ldm_unet(self.vae.config.latent_channels, widths), M.text_encoder()
        self.noise_scheduler = DDPMScheduler(
            **{k: v for k, v in SD_SCHEDULER.items() if k not in ("steps_offset", "set_alpha_to_one")}
        )
        self.caption_dropout, self.snr_gamma = caption_dropout, snr_gamma

    def trainable(self):
        return [*self.unet.parameters(), *self.text_encoder.parameters()]

    def training_step(self, batch, batch_idx):
        g = self.generator()
        captions, z0 = self.captions_and_latents(batch, g)
        noise = torch.randn(z0.shape, generator=g).to(z0)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(z0),), generator=g).to(self.device)
        z_t = self.noise_scheduler.add_noise(z0, noise, t)
        pred = self.unet(z_t, t, encoder_hidden_states=self.text_encoder(self.tokens(captions))[0]).sample
        loss = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        if self.snr_gamma is not None:
            abar = self.noise_scheduler.alphas_cumprod.to(self.device)[t]
            snr = abar / (1 - abar)
            loss = loss * snr.clamp(max=self.snr_gamma) / snr
        loss = loss.mean()
        self.log("loss", loss, prog_bar=True)
        return loss

    def export(self, folder: Path) -> Path:
        return M.save_ldm(folder, self.unet, self.text_encoder, self.tokenizer, self.vae)


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
        images, captions = batch["images"], batch["captions"]
        from syncsde.tiny.clip import normalize

        out = self.clip(
            input_ids=self.tokens(captions), pixel_values=normalize(images.to(self.device)), return_loss=True
        )
        self.log("loss", out.loss, prog_bar=True)
        return out.loss

    def export(self, folder: Path) -> Path:
        return M.save_clip(folder, self.clip, self.tokenizer)


class TinyFlowTraining(_LatentRecipe):
    """Rectified-flow training of ``syncsde:tiny-flow`` (Stable Diffusion 3's objective, Esser et al. 2024): an MMDiT
    (``SD3Transformer2DModel``) and its three text encoders, jointly, on the latents of tiny-ldm's frozen autoencoder.
    x_σ = (1 − σ) z₀ + σ ε, the network predicts v = ε − z₀ (plain MSE), σ drawn logit-normal (SD3's default
    density) and moved by the scheduler's ``shift``; captions dropped to "" for classifier-free guidance. Prompts are
    encoded by diffusers' own ``StableDiffusion3Pipeline.encode_prompt`` on the modules being trained, so the exported
    folder samples exactly as it was trained: two CLIP text encoders (penultimate layer, side by side; both start
    from tiny-ldm's trained encoder) and a small T5, ``MAX_TOKENS`` tokens each.

    Args: pipeline (the tiny-ldm folder whose ``vae/`` and ``text_encoder/`` are read), width and layers (of the
    transformer), lr, warmup_steps, lr_decay, caption_dropout, logit_mean, logit_std (the σ density), export_dir.
    """

    def __init__(
        self,
        pipeline: str = str(EMBEDDED / "tiny-ldm"),
        width: PositiveInt = 128,
        layers: PositiveInt = 8,
        lr: PositiveFloat = 5e-4,
        warmup_steps: NonNegativeInt = 200,
        lr_decay: Literal["constant", "cosine"] = "cosine",
        caption_dropout: ClosedUnitInterval = 0.1,
        logit_mean: float = 0.0,
        logit_std: PositiveFloat = 1.0,
        export_dir: str | None = str(EMBEDDED / "tiny-flow"),
    ):
        super().__init__(lr, warmup_steps, export_dir, lr_decay)
        from transformers import CLIPTextModel

        self.vae = load_vae(str(Path(pipeline) / "vae"), "configs/tiny/train_decoder.yaml")
        self.vae.requires_grad_(False).eval()
        self.transformer = M.flow_transformer(self.vae.config.latent_channels, width, layers)
        trained = CLIPTextModel.from_pretrained(Path(pipeline) / "text_encoder", local_files_only=True)
        self.text_encoder, self.text_encoder_2 = M.text_encoder_with_projection(), M.text_encoder_with_projection()
        for encoder in (self.text_encoder, self.text_encoder_2):
            encoder.text_model.load_state_dict(trained.state_dict())  # all but the new projection
        self.text_encoder_3 = M.t5_encoder()
        self.caption_dropout, self.logit_mean, self.logit_std = caption_dropout, float(logit_mean), float(logit_std)
        self.shift = M.FLOW_SCHEDULER["shift"]

    def trainable(self):
        modules = (self.transformer, self.text_encoder, self.text_encoder_2, self.text_encoder_3)
        return [p for m in modules for p in m.parameters()]

    def on_fit_start(self):
        self.vae.to(memory_format=torch.channels_last)  # the only convolutions

    def encode(self, captions):
        """(prompt_embeds, pooled_prompt_embeds) by diffusers' SD3 pipeline on the modules being trained."""
        encoders = (self.text_encoder, self.text_encoder_2, self.text_encoder_3)
        pipe = M.flow_pipeline(self.transformer, encoders, self.tokenizer, self.vae)
        embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=list(captions), prompt_2=None, prompt_3=None, device=self.device,
            do_classifier_free_guidance=False, max_sequence_length=M.MAX_TOKENS,
        )  # fmt: skip
        return embeds, pooled

    def training_step(self, batch, batch_idx):
        g = self.generator()
        captions, z0 = self.captions_and_latents(batch, g)
        noise = torch.randn(z0.shape, generator=g).to(z0)
        u = torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(len(z0), generator=g)).to(z0)
        sigma = self.shift * u / (1 + (self.shift - 1) * u)
        s = sigma.view(-1, 1, 1, 1)
        x = (1 - s) * z0 + s * noise
        embeds, pooled = self.encode(captions)
        v = self.transformer(
            hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=embeds, pooled_projections=pooled,
            return_dict=False,
        )[0]  # fmt: skip
        loss = F.mse_loss(v, noise - z0)
        self.log("loss", loss, prog_bar=True)
        return loss

    def export(self, folder: Path) -> Path:
        encoders = (self.text_encoder, self.text_encoder_2, self.text_encoder_3)
        return M.save_flow(folder, self.transformer, encoders, self.tokenizer, self.vae)
