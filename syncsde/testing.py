"""Tiny random-weight diffusers pipelines for tests and benchmarks, saved to disk and loaded back through syncsde's real loading code."""
from __future__ import annotations

from pathlib import Path

import torch


def byte_level_clip_tokenizer(model_max_length: int = 77):
    """A CLIP tokenizer built without files: the 514-entry byte-level vocabulary, no merges."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)
    assert len(tok) == 514
    return tok


def tiny_text_encoder(vocab_size: int = 514, hidden: int = 32, max_pos: int = 77):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=37, num_attention_heads=4,
                         num_hidden_layers=2, max_position_embeddings=max_pos, bos_token_id=512, eos_token_id=513,
                         pad_token_id=513)
    return CLIPTextModel(cfg).eval()


def tiny_unet(in_channels: int = 4, sample_size: int = 8, cross: int = 32, out_channels: int | None = None):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=out_channels or in_channels,
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, cross_attention_dim=cross,
        attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(4, 4, 4, 4), layers_per_block=1,
        norm_num_groups=2, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    ).eval()


SD_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                    steps_offset=1, clip_sample=False, set_alpha_to_one=False, prediction_type="epsilon")


def tiny_sd_pipeline(seed: int = 0, sample_size: int = 8):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    return StableDiffusionPipeline(
        unet=tiny_unet(sample_size=sample_size), vae=tiny_vae(), text_encoder=tiny_text_encoder(), tokenizer=byte_level_clip_tokenizer(),
        scheduler=DDIMScheduler(**SD_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


def save_tiny_sd(path: Path, seed: int = 0, sample_size: int = 8) -> Path:
    """A tiny pipeline on disk; ``sample_size`` is the UNet's native latent size (8 → 64 px images)."""
    tiny_sd_pipeline(seed, sample_size).save_pretrained(path)
    return path
