"""Architectures of the embedded tiny models, a word-level tokenizer, and the diffusers/transformers layouts they
are saved in — the same layouts (and the same loading code) as the real checkpoints.

``syncsde:tiny-ldm`` is a latent diffusion model shaped like Stable Diffusion, scaled down: 64 px images, an
``AutoencoderKL`` with scale factor 4 (three blocks) and 4 latent channels, so a 64 px image is a 16×16 latent (a
wide-image window of 16 latents mirrors SD's 64); a text-conditioned ``UNet2DConditionModel`` on those latents;
a ``CLIPTextModel`` over a word-level tokenizer; Stable Diffusion's own noise schedule, sampled with DDIM.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from syncsde.schedule import SD_SCHEDULER
from syncsde.tiny.scenes import vocabulary

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
MAX_TOKENS = 32  # the longest caption has 29 words
IMAGE_SIZE = 64
VAE_SCALE_FACTOR = 4  # 2 ** (number of VAE blocks - 1)
LATENT_SIZE = IMAGE_SIZE // VAE_SCALE_FACTOR
TEXT_HIDDEN = 64


def word_tokenizer():
    """A word-level fast tokenizer over the scene grammar's vocabulary: "[BOS] words [EOS]", lower-cased."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", 2), ("[EOS]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        model_max_length=MAX_TOKENS,
    )


def text_config():
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(SPECIALS) + len(vocabulary()),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=2 * TEXT_HIDDEN,
        num_attention_heads=4,
        num_hidden_layers=3,
        max_position_embeddings=MAX_TOKENS,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )


def text_encoder():
    from transformers import CLIPTextModel

    return CLIPTextModel(text_config())


def vae(latent_channels: int = 4):
    """AutoencoderKL, scale factor 4, 4 latent channels (as shipped; 8 lowered the pixel error but not the model
    card's FID, see the README), no attention (fully convolutional, so any canvas width decodes the same way).
    ``scaling_factor`` is set after training so that scaled latents have unit std."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=(24, 48, 64),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
        mid_block_add_attention=False,
    )


def ldm_unet(latent_channels: int = 4, widths: tuple[int, int, int] = (48, 96, 144)):
    """The latent UNet: 16×16 → 8×8 → 4×4 with ``widths`` channels, text cross-attention at 8×8 and 4×4 (as SD's
    lower levels). The shipped one has the default widths (6.1 M parameters; (32, 64, 96) is 2.7 M)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=tuple(widths),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=16,
        norm_num_groups=16,
    )


def text_encoder_with_projection(projection_dim: int = TEXT_HIDDEN):
    """The CLIP text encoder with a projection of its pooled output (SD3's ``CLIPTextModelWithProjection``)."""
    from transformers import CLIPTextModelWithProjection

    config = text_config()
    config.projection_dim = projection_dim
    return CLIPTextModelWithProjection(config)


def t5_encoder(d_model: int = 2 * TEXT_HIDDEN):
    """A small ``T5EncoderModel`` over the word tokenizer (SD3's third text encoder)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(SPECIALS) + len(vocabulary()),
        d_model=d_model,
        d_kv=d_model // 4,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=16,
        pad_token_id=0,
        eos_token_id=3,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)


def flow_transformer(latent_channels: int = 4, width: int = 128, layers: int = 6):
    """The MMDiT of ``syncsde:tiny-flow`` (SD3's ``SD3Transformer2DModel``): 2×2 patches on the 16×16 latents (64
    image tokens), ``width`` channels in heads of 32, joint attention with the 64 text tokens (two CLIPs side by side,
    then T5), pooled projection of both CLIPs' pooled outputs. Position embeddings cover 32 patches a side."""
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=LATENT_SIZE,
        patch_size=2,
        in_channels=latent_channels,
        out_channels=latent_channels,
        num_layers=layers,
        attention_head_dim=32,
        num_attention_heads=width // 32,
        joint_attention_dim=2 * TEXT_HIDDEN,
        caption_projection_dim=width,
        pooled_projection_dim=2 * TEXT_HIDDEN,
        pos_embed_max_size=32,
    )


def clip_model():
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=8,
        hidden_size=96,
        intermediate_size=192,
        num_attention_heads=4,
        num_hidden_layers=3,
    )
    return CLIPModel(CLIPConfig(text_config=text_config().to_dict(), vision_config=vision.to_dict(), projection_dim=64))


def save_ldm(folder: Path, unet, text_encoder, tokenizer, vae) -> Path:
    """Save in Stable Diffusion's diffusers layout: model_index.json + unet/, vae/, text_encoder/, tokenizer/,
    scheduler/ (DDIM with SD's schedule); ``StableDiffusionPipeline.from_pretrained`` loads it too. The UNet and
    VAE weights are stored in float16 to halve the package (diffusers loads them as float32 unless told otherwise)."""
    from diffusers import DDIMScheduler

    folder = Path(folder)
    for name, model in (("unet", unet), ("vae", vae)):
        copy.deepcopy(model).half().save_pretrained(folder / name)
    text_encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    DDIMScheduler(**SD_SCHEDULER).save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


FLOW_SCHEDULER = {"shift": 1.0}  # FlowMatchEulerDiscreteScheduler: 64 image tokens need no shift (SD3's 3.0: 4096)


def replace_folder(folder: Path, write) -> Path:
    """Write a whole folder through ``write(tmp)`` into ``.<name>.tmp`` beside it, then rename it over ``folder``: the
    name only ever holds a complete folder (the one it replaces goes aside as ``.<name>.old`` first)."""
    import os
    import shutil

    folder = Path(folder)
    tmp, old = folder.with_name(f".{folder.name}.tmp"), folder.with_name(f".{folder.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def flow_pipeline(transformer, text_encoders, tokenizer, vae, scheduler=None):
    """diffusers' ``StableDiffusion3Pipeline`` on these modules (no copies): the three text encoders share the word
    tokenizer. The flow recipe encodes its prompts with it; :func:`save_flow` saves it."""
    from diffusers import StableDiffusion3Pipeline

    te1, te2, te3 = text_encoders
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=scheduler, vae=vae,
        text_encoder=te1, tokenizer=tokenizer,
        text_encoder_2=te2, tokenizer_2=tokenizer,
        text_encoder_3=te3, tokenizer_3=tokenizer,
    )  # fmt: skip


def save_flow(folder: Path, transformer, text_encoders, tokenizer, vae) -> Path:
    """Save in Stable Diffusion 3's diffusers layout (``StableDiffusion3Pipeline.save_pretrained``): transformer/,
    vae/ (tiny-ldm's autoencoder, ``shift_factor`` 0 written out, which SD3's pipeline reads), text_encoder/,
    text_encoder_2/, text_encoder_3/, their tokenizer/, tokenizer_2/, tokenizer_3/ (the same word tokenizer),
    scheduler/. The transformer is stored in float16, as tiny-ldm's UNet. Written beside ``folder``, then renamed
    over it (:func:`replace_folder`)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    vae = copy.deepcopy(vae).half()
    vae.register_to_config(shift_factor=0.0)
    scheduler = FlowMatchEulerDiscreteScheduler(**FLOW_SCHEDULER)
    pipe = flow_pipeline(copy.deepcopy(transformer).half(), text_encoders, tokenizer, vae, scheduler)
    return replace_folder(folder, pipe.save_pretrained)


def save_clip(folder: Path, model, tokenizer) -> Path:
    """Save in transformers CLIPModel layout with its tokenizer and an image-processor config."""
    from transformers import CLIPImageProcessor

    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(folder)
    return Path(folder)
