"""The embedded tiny models: procedural data, training recipes (a few steps each), export layout, loading."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from syncsde.backbones import DiffusersBackbone
from syncsde.backbones.diffusers import embedded_path
from syncsde.tiny import models as M
from syncsde.tiny import scenes

ROOT = Path(__file__).resolve().parents[1]


def test_scenes_deterministic_and_held_out_disjoint():
    a, ca = scenes.batch(0, 5, 8)
    b, cb = scenes.batch(0, 5, 8)
    assert np.array_equal(a, b) and ca == cb and a.shape == (8, 3, 32, 32) and a.dtype == np.float32
    assert not np.array_equal(a, scenes.batch(0, 6, 8)[0])
    train = {s.caption for s in scenes.split(False)}
    held = {s.caption for s in scenes.split(True)}
    assert held and not train & held and 0.05 < len(held) / (len(train) + len(held)) < 0.15
    _, captions = scenes.batch(0, 0, 64, held_out=True)
    assert set(captions) <= held


def test_scene_renders_any_width_and_caption_grammar():
    s = scenes.Scene("sunset", "sea", True, "boat", "red", "left")
    assert s.caption == "a sunset over the sea with mountains, a red boat on the left"
    img = scenes.render(s, np.random.default_rng(0), 32, 128)
    assert img.shape == (32, 128, 3) and 0 <= img.min() and img.max() <= 1


def test_word_tokenizer_covers_grammar():
    tok = M.word_tokenizer()
    ids = tok([s.caption for s in scenes.all_scenes()], padding="max_length", max_length=M.MAX_TOKENS).input_ids
    assert all(1 not in row for row in ids)  # no [UNK]
    assert all(row[0] == 2 and 3 in row for row in ids)  # [BOS] ... [EOS]


def run_fit(config: str, tmp_path: Path, *extra: str):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    export = tmp_path / "export"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "syncsde.cli",
            "fit",
            "--config",
            config,
            "--trainer.max_steps",
            "3",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.logger",
            "false",
            "--trainer.enable_checkpointing",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.callbacks",
            "[]",
            "--data.init_args.batch_size",
            "4",
            "--model.init_args.export_dir",
            str(export),
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return export


def test_t2i_recipe_trains_and_exports_a_loadable_backbone(tmp_path):
    export = run_fit("configs/tiny/train_t2i.yaml", tmp_path)
    backbone = DiffusersBackbone(str(export))
    assert backbone.vae is None and backbone.scale_factor == 1 and backbone.channels == 3
    assert backbone.sample_size == 32
    emb = backbone.encode_prompts(["a sunny day over grass"])
    out = backbone(torch.randn(1, 3, 32, 32), torch.tensor([500]), emb)
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_clip_recipe_trains_and_exports(tmp_path):
    from transformers import AutoTokenizer, CLIPModel

    export = run_fit("configs/tiny/train_clip.yaml", tmp_path)
    model = CLIPModel.from_pretrained(export, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(export, local_files_only=True)
    assert len(tok) == len(M.word_tokenizer())
    feats = model.get_image_features(pixel_values=torch.randn(2, 3, 32, 32))
    assert (feats.pooler_output if hasattr(feats, "pooler_output") else feats).shape[-1] == 64


def test_shipped_weights_load_offline():
    for name in ("tiny-t2i", "tiny-clip"):
        assert embedded_path(name).is_dir(), f"embedded model {name} is missing from the package"
    backbone = DiffusersBackbone("syncsde:tiny-t2i")
    assert backbone.name == "syncsde:tiny-t2i" and backbone.channels == 3


def test_built_wheel_contains_the_embedded_weights(tmp_path):
    import importlib.util
    import zipfile

    if importlib.util.find_spec("setuptools") is None:
        import pytest

        pytest.skip("setuptools not installed: the wheel cannot be built without build isolation")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(ROOT),
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    names = zipfile.ZipFile(next(tmp_path.glob("syncsde-*.whl"))).namelist()
    for needed in (
        "syncsde/embedded/tiny-t2i/unet/diffusion_pytorch_model.safetensors",
        "syncsde/embedded/tiny-t2i/model_index.json",
        "syncsde/embedded/tiny-clip/model.safetensors",
    ):
        assert needed in names
