"""Tiny random-weight pipelines for tests and benchmarks, saved to disk and loaded back through syncsde's real
loading code: Stable Diffusion, DeepFloyd IF, SDXL (+ ControlNet), SD3 (+ ControlNet) and Flux, each built from
diffusers' and transformers' own classes with the real models' structure at toy widths (64 px native size by default;
SDXL, SD3 and Flux also at the real models' native 1024 px, cheap on a CPU); and Stable Diffusion at its real network
size with random weights, for benchmarks that time the network.

    python -m syncsde.testing --save-tiny DIR     # DIR/sd (512 px), DIR/sdxl, DIR/sd3, DIR/flux (1024 px) and
                                                  # DIR/{sd,sdxl,sd3}-controlnet, for the real configs:
    syncsde predict --config configs/wide_sdxl.yaml --model.backbone.model DIR/sdxl
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import torch

from syncsde.schedule import SD_SCHEDULER


def byte_level_clip_tokenizer(model_max_length: int = 77):
    """A CLIP tokenizer built without files: the 514-entry byte-level vocabulary, no merges."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)
    assert len(tok) == 514
    return tok


def tiny_text_encoder(vocab_size: int = 514, hidden: int = 32, max_pos: int = 77, projection_dim: int | None = None):
    """A tiny CLIP text encoder; with ``projection_dim``, a ``CLIPTextModelWithProjection`` (SDXL's and SD3's
    second encoder, whose projected pooled output conditions the network)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=max_pos,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        projection_dim=projection_dim or hidden,
    )
    return (CLIPTextModel if projection_dim is None else CLIPTextModelWithProjection)(cfg).eval()


# the largest latent size (a side) at which the tiny models keep self-attention: 128² latents (1024 px) cost a few
# milliseconds per convolution at these widths, but an attention over their 16384 positions would dominate
ATTENTION_MAX = 32


def tiny_unet(in_channels: int = 4, sample_size: int = 8, cross: int = 32, out_channels: int | None = None, **extra):
    """A tiny two-level text-conditioned UNet: attention at the first level, or at the second (half the size) when
    the first is larger than :data:`ATTENTION_MAX` latents a side."""
    from diffusers import UNet2DConditionModel

    down = ("CrossAttnDownBlock2D", "DownBlock2D")
    if sample_size > ATTENTION_MAX:
        down = down[::-1]
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels or in_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=cross,
        attention_head_dim=2,
        down_block_types=down,
        up_block_types=tuple(b.replace("Down", "Up") for b in down[::-1]),
        **extra,
    ).eval()


def tiny_vae(latent_channels: int = 4, **config):
    """A tiny AutoencoderKL with scale factor 8; ``config``: scaling_factor, shift_factor, sample_size, ..."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        **config,
    ).eval()


def _vae_size(latent_size: int) -> dict:
    """The tiny VAE's native size in pixels, and its mid-block self-attention (which runs on the whole decoded canvas)
    only for latents of at most :data:`ATTENTION_MAX` a side."""
    return dict(sample_size=8 * latent_size, mid_block_add_attention=latent_size <= ATTENTION_MAX)


def tiny_sd_pipeline(seed: int = 0, sample_size: int = 8):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    return StableDiffusionPipeline(
        unet=tiny_unet(sample_size=sample_size),
        vae=tiny_vae(mid_block_add_attention=_vae_size(sample_size)["mid_block_add_attention"]),  # SD: the UNet's size
        text_encoder=tiny_text_encoder(),
        tokenizer=byte_level_clip_tokenizer(),
        scheduler=DDIMScheduler(**SD_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_sd(path: Path, seed: int = 0, sample_size: int = 8) -> Path:
    """A tiny pipeline on disk; ``sample_size`` is the UNet's native latent size (8 → 64 px images)."""
    tiny_sd_pipeline(seed, sample_size).save_pretrained(path)
    return path


def tiny_t5(
    vocab_words=("a", "cat", "dog", "horse", "village", "oil", "painting", "of", "an", "snowy", "mountain"),
    d_model: int = 32,
):
    """A T5 tokenizer built without files (unigram pieces: words and single characters) and a tiny T5 encoder."""
    import string

    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"\u2581{w}", -1.0) for w in vocab_words]
    pieces += [(c, -5.0) for c in string.ascii_lowercase + string.digits + ",.'"] + [("\u2581", -3.0)]
    tok = T5Tokenizer(vocab=pieces, extra_ids=0)
    cfg = T5Config(
        vocab_size=len(pieces),
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
    )
    return tok, T5EncoderModel(cfg).eval()


IF_SCHEDULER = dict(
    beta_schedule="squaredcos_cap_v2",
    beta_start=0.0001,
    beta_end=0.02,
    num_train_timesteps=1000,
    clip_sample=True,
    clip_sample_range=1.0,
    thresholding=True,
    dynamic_thresholding_ratio=0.95,
    sample_max_value=1.5,
    prediction_type="epsilon",
    variance_type="learned_range",
)


def _tiny_if_parts() -> dict:
    """The components both tiny DeepFloyd-IF stages share: T5 tokenizer and encoder, scheduler, no safety parts."""
    from diffusers import DDPMScheduler

    tok, t5 = tiny_t5()
    return dict(
        tokenizer=tok,
        text_encoder=t5,
        scheduler=DDPMScheduler(**IF_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )


def save_tiny_if(path: Path, seed: int = 0, sample_size: int = 16) -> Path:
    """Tiny DeepFloyd-IF stage I (pixel space, 6 output channels: ε and learned variance)."""
    from diffusers import IFPipeline

    torch.manual_seed(seed)
    parts = _tiny_if_parts()
    unet = tiny_unet(in_channels=3, out_channels=6, sample_size=sample_size, cross=32)
    IFPipeline(unet=unet, **parts).save_pretrained(path)
    return path


def save_tiny_if_upscaler(path: Path, seed: int = 0, sample_size: int = 64) -> Path:
    """Tiny DeepFloyd-IF stage II: input = noisy image ⊕ upscaled stage-I image, class label = noise level."""
    from diffusers import DDPMScheduler, IFSuperResolutionPipeline

    torch.manual_seed(seed)
    parts = _tiny_if_parts()
    unet = tiny_unet(in_channels=6, out_channels=6, sample_size=sample_size, class_embed_type="timestep")
    noising = DDPMScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000)
    IFSuperResolutionPipeline(unet=unet, image_noising_scheduler=noising, **parts).save_pretrained(path)
    return path


def save_tiny_blip(path: Path, seed: int = 0) -> Path:
    """A tiny random BLIP captioner (BlipForConditionalGeneration + processor with a word-level BERT tokenizer)."""
    from transformers import (
        BertTokenizerFast,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    torch.manual_seed(seed)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "on", "grass", "photo", "of"]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    cfg = BlipConfig(
        text_config=dict(
            vocab_size=len(words),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=37,
            bos_token_id=2,
            sep_token_id=3,
            pad_token_id=0,
            eos_token_id=3,
        ),
        vision_config=dict(
            hidden_size=32,
            image_size=32,
            patch_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=37,
        ),
        projection_dim=32,
    )
    BlipForConditionalGeneration(cfg).save_pretrained(path)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok).save_pretrained(
        path
    )
    return path


def save_tiny_controlnet(path: Path, sd_folder: Path) -> Path:
    """A tiny random depth ControlNet matching the tiny UNet saved in ``sd_folder`` (SD or SDXL)."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(1)
    unet = UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet")
    ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 8)).save_pretrained(path)
    return path


def save_tiny_sd3_controlnet(path: Path, sd3_folder: Path, seed: int = 1, **config) -> Path:
    """A tiny random SD3 ControlNet (diffusers' ``SD3ControlNetModel``) of the tiny transformer saved in
    ``sd3_folder``: its configuration with one block (``config`` overrides: ``joint_attention_dim=None`` and
    ``use_pos_embed=False`` give the layout of SD3.5's ControlNets), every weight random — also those diffusers
    initialises to zero (the control's input embedding, the output blocks), so that the control changes the output."""
    from diffusers import SD3ControlNetModel, SD3Transformer2DModel

    torch.manual_seed(seed)
    base = SD3Transformer2DModel.load_config(sd3_folder, subfolder="transformer")
    keys = ("sample_size", "patch_size", "in_channels", "out_channels", "attention_head_dim", "num_attention_heads",
            "joint_attention_dim", "caption_projection_dim", "pooled_projection_dim", "pos_embed_max_size")  # fmt: skip
    controlnet = SD3ControlNetModel(**{**{k: base[k] for k in keys}, "num_layers": 1, **config}).eval()
    with torch.no_grad():
        for p in controlnet.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    controlnet.save_pretrained(path)
    return path


def save_tiny_sdxl(path: Path, seed: int = 0, sample_size: int = 8) -> Path:
    """A tiny SDXL base: two CLIP encoders (the second with projection), a "text_time" UNet whose last up-block has
    no attention (as SDXL's), the fp16-unsafe VAE flag, EulerDiscreteScheduler on SD's β schedule. ``sample_size``
    is the native latent size (8: 64 px; 128: SDXL's 1024 px); self-attention runs only at the UNet's coarsest
    level, which has down-sampling levels added until it is at most :data:`ATTENTION_MAX` latents a side."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    plain = max(1, math.ceil(math.log2(sample_size / ATTENTION_MAX)))  # levels without attention
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8,) * plain + (16,),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=(2,) * plain + (4,),
        transformer_layers_per_block=(1,) * plain + (2,),
        use_linear_projection=True,
        down_block_types=("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * plain,
        cross_attention_dim=64,  # the two encoders' hidden states, concatenated
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six time ids + the pooled projection
    ).eval()
    sd = {k: SD_SCHEDULER[k] for k in ("beta_start", "beta_end", "beta_schedule", "steps_offset", "prediction_type")}
    StableDiffusionXLPipeline(
        unet=unet,
        vae=tiny_vae(scaling_factor=0.13025, force_upcast=True, **_vae_size(sample_size)),
        text_encoder=tiny_text_encoder(),
        tokenizer=byte_level_clip_tokenizer(),
        text_encoder_2=tiny_text_encoder(projection_dim=32),
        tokenizer_2=byte_level_clip_tokenizer(),
        scheduler=EulerDiscreteScheduler(**sd, timestep_spacing="leading"),
        add_watermarker=False,
    ).save_pretrained(path)
    return path


def save_tiny_sd3(path: Path, seed: int = 0, sample_size: int = 8, num_layers: int = 1) -> Path:
    """A tiny SD3: CLIP-L- and CLIP-G-like encoders with projection, a T5 encoder, an MMDiT with 2×2 patches on a
    16-channel VAE (SD3's scaling and shift factors), FlowMatchEulerDiscreteScheduler with shift 3. ``sample_size``
    is the native latent size (8: 64 px; 128: SD3's 1024 px); ``num_layers`` joint blocks (a ControlNet adds to all
    but the last, whose text stream ends there)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    tok3, t5 = tiny_t5(d_model=64)
    transformer = SD3Transformer2DModel(
        sample_size=sample_size,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=num_layers,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        pos_embed_max_size=max(16, sample_size // 2),  # patches a side
    ).eval()
    StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(
            16,
            scaling_factor=1.5305,
            shift_factor=0.0609,
            use_quant_conv=False,
            use_post_quant_conv=False,
            **_vae_size(sample_size),
        ),
        text_encoder=tiny_text_encoder(projection_dim=32),
        tokenizer=byte_level_clip_tokenizer(),
        text_encoder_2=tiny_text_encoder(projection_dim=32),
        tokenizer_2=byte_level_clip_tokenizer(),
        text_encoder_3=t5,
        tokenizer_3=tok3,
    ).save_pretrained(path)
    return path


def save_tiny_flux(path: Path, seed: int = 0, size: int = 64) -> Path:
    """A tiny Flux.1-dev: CLIP (pooled) and T5 encoders, a guidance-embedding transformer on 2×2-packed tokens of a
    16-channel VAE (Flux's factors; native size ``size`` px as its ``sample_size``: 64, or Flux.1's 1024),
    FlowMatchEulerDiscreteScheduler with dynamic shifting."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    tok2, t5 = tiny_t5()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256
    )
    vae = tiny_vae(
        16,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
        **_vae_size(size // 8),
    )
    FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=tiny_text_encoder(),
        tokenizer=byte_level_clip_tokenizer(),
        text_encoder_2=t5,
        tokenizer_2=tok2,
        transformer=transformer,
    ).save_pretrained(path)
    return path


# -- the real models' network sizes, random weights (benchmarks) ----------------------------------------------------
# UNet2DConditionModel and AutoencoderKL arguments of the released checkpoints (their config.json; everything else at
# diffusers' defaults, which are SD's)
SD15_UNET = dict(
    sample_size=64, cross_attention_dim=768, block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8
)
SD2_UNET = dict(
    sample_size=64,
    cross_attention_dim=1024,
    block_out_channels=(320, 640, 1280, 1280),
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
)
SD_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    sample_size=512,
    scaling_factor=0.18215,
)


def random_unet(config: dict):
    """A random-weight UNet of a real model's configuration (:data:`SD15_UNET`, :data:`SD2_UNET`): 860M parameters."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**config).eval()


def save_random_sd2(path: Path, seed: int = 0) -> Path:
    """Stable Diffusion 2 base at its real network size with random weights: SD-2-base's UNet, SD's VAE (84M
    parameters), a small text encoder of SD-2's width 1024 (prompts are encoded once per run), SD's DDIM scheduler;
    3.8 GB on disk."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    StableDiffusionPipeline(
        unet=random_unet(SD2_UNET),
        vae=AutoencoderKL(**SD_VAE).eval(),
        text_encoder=tiny_text_encoder(hidden=1024),
        tokenizer=byte_level_clip_tokenizer(),
        scheduler=DDIMScheduler(**SD_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(path)
    return path


# -- the command ----------------------------------------------------------------------------------------------------
NATIVE = {  # tiny pipelines at the real models' native sizes (SD 512 px, the others 1024 px); a ControlNet after its base
    "sd": lambda path, root: save_tiny_sd(path, sample_size=64),
    "sd-controlnet": lambda path, root: save_tiny_controlnet(path, root / "sd"),
    "sdxl": lambda path, root: save_tiny_sdxl(path, sample_size=128),
    "sdxl-controlnet": lambda path, root: save_tiny_controlnet(path, root / "sdxl"),
    "sd3": lambda path, root: save_tiny_sd3(path, sample_size=128),
    "sd3-controlnet": lambda path, root: save_tiny_sd3_controlnet(path, root / "sd3"),
    "flux": lambda path, root: save_tiny_flux(path, size=1024),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description="Save tiny random-weight SD, SDXL, SD3 and Flux pipelines and SD, SDXL and SD3 ControlNets at the "
        "real models' native sizes, to run the real-weight configs end to end on a CPU (syncsde/docs/backbones.md)."
    )
    ap.add_argument("--save-tiny", metavar="DIR", type=Path, required=True, help=f"writes DIR/{{{','.join(NATIVE)}}}")
    args = ap.parse_args(argv)
    taken = [str(args.save_tiny / name) for name in NATIVE if (args.save_tiny / name).exists()]
    if taken:
        ap.error(f"{', '.join(taken)} already exist(s); remove them or choose another DIR")
    args.save_tiny.mkdir(parents=True, exist_ok=True)
    for name, save in NATIVE.items():
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=args.save_tiny))
        save(tmp, args.save_tiny)
        tmp.rename(args.save_tiny / name)  # complete folders only, under their final names
        print(f"{name}: {args.save_tiny / name}")


if __name__ == "__main__":
    main()
