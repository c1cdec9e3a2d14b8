"""Tiny random-weight pipelines for tests and benchmarks, saved to disk and loaded back through syncsde's real
loading code."""

from __future__ import annotations

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


def tiny_text_encoder(vocab_size: int = 514, hidden: int = 32, max_pos: int = 77):
    from transformers import CLIPTextConfig, CLIPTextModel

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
    )
    return CLIPTextModel(cfg).eval()


def tiny_unet(in_channels: int = 4, sample_size: int = 8, cross: int = 32, out_channels: int | None = None, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=out_channels or in_channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=cross,
        attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        **extra,
    ).eval()


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    ).eval()


def tiny_sd_pipeline(seed: int = 0, sample_size: int = 8):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    torch.manual_seed(seed)
    return StableDiffusionPipeline(
        unet=tiny_unet(sample_size=sample_size),
        vae=tiny_vae(),
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


def tiny_t5(vocab_words=("a", "cat", "dog", "horse", "village", "oil", "painting", "of", "an", "snowy", "mountain")):
    """A T5 tokenizer built without files (unigram pieces: words and single characters) and a tiny T5 encoder."""
    import string

    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"\u2581{w}", -1.0) for w in vocab_words]
    pieces += [(c, -5.0) for c in string.ascii_lowercase + string.digits + ",.'"] + [("\u2581", -3.0)]
    tok = T5Tokenizer(vocab=pieces, extra_ids=0)
    cfg = T5Config(
        vocab_size=len(pieces), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8
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
    """A tiny random depth ControlNet matching the tiny SD UNet saved in ``sd_folder``."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(1)
    unet = UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet")
    ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 8)).save_pretrained(path)
    return path
