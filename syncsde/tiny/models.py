"""Architectures of the embedded tiny models, a word-level tokenizer, and the diffusers/transformers layouts they
are saved in — the same layouts (and the same loading code) as the real checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

from syncsde.tiny.scenes import vocabulary

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
MAX_TOKENS = 24
IMAGE_SIZE = 32
# a linear-beta DDPM training schedule; sampled with DDIM like Stable Diffusion (leading spacing, offset 1)
SCHEDULER = dict(
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="linear",
    num_train_timesteps=1000,
    steps_offset=1,
    clip_sample=True,
    clip_sample_range=1.0,
    set_alpha_to_one=False,
    prediction_type="epsilon",
)


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


def text_config(hidden: int = 64):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(SPECIALS) + len(vocabulary()),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=MAX_TOKENS,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )


def t2i_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),  # text attention at 8x8 only:
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),  # 16x16 attention would cost 2.3x on CPU
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def t2i_text_encoder():
    from transformers import CLIPTextModel

    return CLIPTextModel(text_config())


def clip_model():
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=4,
        hidden_size=96,
        intermediate_size=192,
        num_attention_heads=4,
        num_hidden_layers=3,
    )
    return CLIPModel(CLIPConfig(text_config=text_config().to_dict(), vision_config=vision.to_dict(), projection_dim=64))


def save_t2i(folder: Path, unet, text_encoder, tokenizer) -> Path:
    """Save in diffusers layout: model_index.json + unet/, text_encoder/, tokenizer/, scheduler/."""
    from diffusers import DDIMScheduler

    folder = Path(folder)
    unet.save_pretrained(folder / "unet")
    text_encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    DDIMScheduler(**SCHEDULER).save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "SyncSDETinyTextToImage",
        "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


def save_clip(folder: Path, model, tokenizer) -> Path:
    """Save in transformers CLIPModel layout with its tokenizer and an image-processor config."""
    from transformers import CLIPImageProcessor

    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    ).save_pretrained(folder)
    return Path(folder)
