"""The embedded tiny models: procedural world, training recipes (a few steps each), export layout, loading, and the
shipped latent diffusion model itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from syncsde.backbones import StableDiffusion
from syncsde.backbones.diffusers import embedded_path
from syncsde.tiny import models as M
from syncsde.tiny import scenes

ROOT = Path(__file__).resolve().parents[1]


def test_scenes_deterministic_and_held_out_disjoint():
    a, ca = scenes.batch(0, 5, 8)
    b, cb = scenes.batch(0, 5, 8)
    assert np.array_equal(a, b) and ca == cb and a.shape == (8, 3, 64, 64) and a.dtype == np.float32
    assert not np.array_equal(a, scenes.batch(0, 6, 8)[0])
    train = {s.caption for s in scenes.sample_scenes(np.random.default_rng(0), 3000)}
    held = {s.caption for s in scenes.held_out_scenes(300)}
    assert len(held) == 300 and not train & held
    assert all(not scenes.is_held_out(c) for c in train) and all(scenes.is_held_out(c) for c in held)
    rng = np.random.default_rng(1)
    drawn = [scenes.random_scene(rng, p_plain=0.0).caption for _ in range(5000)]
    assert 0.05 < np.mean([scenes.is_held_out(c) for c in drawn]) < 0.15  # the hash splits off about 10%
    _, captions = scenes.batch(0, 0, 64, held_out=True)
    assert all(scenes.is_held_out(c) for c in captions)


def test_caption_grammar_names_every_object_and_its_place():
    s = scenes.Scene(
        "sunset",
        "sea",
        "mountains",
        (
            scenes.Thing("sun", None, "right"),
            scenes.Thing("boat", "red", "left"),
            scenes.Thing("ball", "orange", "middle"),
        ),
    )
    assert s.caption == (
        "a sunset over the sea with mountains, a red boat on the left, an orange ball in the middle "
        "and the sun on the right"
    )
    assert scenes.Scene("day", "grass", "hills", (scenes.Thing("pine", None, "middle"),)).caption == (
        "a sunny day over grass with hills, a pine tree in the middle"
    )
    img = scenes.render(s, np.random.default_rng(0), 64, 256)
    assert img.shape == (64, 256, 3) and 0 <= img.min() and img.max() <= 1


def test_world_rules_and_variety():
    drawn = scenes.sample_scenes(np.random.default_rng(2), 3000)
    things = [(t, s) for s in drawn for t in s.things]
    assert all(scenes.allowed(t.kind, s.sky, s.ground) for t, s in things)
    assert all(len({t.position for t in s.things}) == len(s.things) for s in drawn)  # one object per place
    assert {t.kind for t, _ in things} == set(scenes.OBJECTS)
    assert {len(s.things) for s in drawn} == {0, 1, 2, 3}
    assert {s.landform for s in drawn} == {None, "mountains", "hills"}


def test_objects_are_drawn_where_the_caption_says():
    plain = scenes.Scene("day", "grass")
    rng = np.random.default_rng
    for position, (lo, hi) in {"left": (0, 21), "middle": (21, 43), "right": (43, 64)}.items():
        with_house = scenes.Scene("day", "grass", None, (scenes.Thing("house", "red", position),))
        diff = np.abs(scenes.render(with_house, rng(4), 64, 64) - scenes.render(plain, rng(4), 64, 64))
        changed = (diff.max(-1) > 0.15).sum(0)  # columns the house changed (beyond the pixel noise)
        assert changed[lo:hi].sum() > 0.95 * changed.sum(), position


def test_word_tokenizer_covers_grammar():
    tok = M.word_tokenizer()
    captions = [s.caption for s in scenes.sample_scenes(np.random.default_rng(3), 2000)]
    captions += [s.caption for s in scenes.held_out_scenes(200)]
    ids = tok(captions, padding="max_length", max_length=M.MAX_TOKENS).input_ids
    assert all(1 not in row for row in ids)  # no [UNK]
    assert all(row[0] == 2 and 3 in row for row in ids)  # [BOS] ... [EOS], never truncated
    assert all(len(row) == M.MAX_TOKENS for row in ids)


def run_fit(config: str, tmp_path: Path, *extra: str, callbacks: str = "[]", export: Path | None = None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    export = export or tmp_path / "export"
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
            callbacks,
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
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return export


def test_ldm_recipes_train_and_export_a_stable_diffusion_folder(tmp_path):
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    vae_dir = run_fit("configs/tiny/train_vae.yaml", tmp_path / "vae", "--model.init_args.scale_images", "16")
    vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True)
    images = torch.from_numpy(scenes.batch(12345, 0, 16)[0])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z = vae.encode(images * 2 - 1).latent_dist.sample(generator=g)
    assert z.shape == (16, 4, 16, 16)  # scale factor 4, 4 latent channels
    assert float((z * vae.config.scaling_factor).std()) == pytest.approx(1.0, rel=1e-3)  # the same latents as at export

    ema = '[{"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.9}}]'
    ldm = run_fit("configs/tiny/train_ldm.yaml", tmp_path / "ldm", "--model.init_args.vae", str(vae_dir), callbacks=ema)
    for part in ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (ldm / part).exists(), part
    backbone = StableDiffusion(str(ldm))  # the same loading code as real Stable Diffusion checkpoints
    assert (backbone.scale_factor, backbone.sample_size, backbone.channels) == (4, 16, 4)
    assert backbone.scheduler_config()["beta_schedule"] == "scaled_linear"
    out = backbone(torch.randn(1, 4, 16, 16), torch.tensor([500]), backbone.encode_prompts(["a sunny day over grass"]))
    assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()
    assert StableDiffusionPipeline.from_pretrained(ldm, local_files_only=True).vae_scale_factor == 4

    # step 3: the decoder again with the GAN loss (from its first batch here), replacing the pipeline's vae/ in place
    before = AutoencoderKL.from_pretrained(ldm / "vae", local_files_only=True).state_dict()
    run_fit(
        "configs/tiny/train_decoder.yaml",
        tmp_path / "decoder",
        "--model.init_args.pipeline",
        str(ldm),
        "--model.init_args.adversarial_start",
        "0",
        "--model.init_args.warmup_steps",
        "0",
        "--trainer.max_steps",
        "4",
        callbacks=ema,  # the recipe exports the decoder's EMA weights, as step 2 its UNet's
        export=ldm,
    )
    after = AutoencoderKL.from_pretrained(ldm / "vae", local_files_only=True).state_dict()
    assert after.keys() == before.keys() and sorted(p.name for p in ldm.iterdir()) == [
        "model_index.json",
        "scheduler",
        "text_encoder",
        "tokenizer",
        "unet",
        "vae",
    ]  # nothing left beside it
    frozen = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)  # the UNet's latents do not move
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    assert StableDiffusion(str(ldm)).scale_factor == 4


@pytest.mark.parametrize("recipe", ["train_vae", "train_decoder"])
def test_a_resumed_recipe_trains_as_the_uninterrupted_run(tmp_path, recipe):
    """`syncsde fit --ckpt_path` resumes a recipe where its checkpoint left it: the checkpoint loads (plain numbers in
    its optimizer state), the stream goes on with the batches the uninterrupted run took next (not its first ones
    again), and optimizers, schedules and EMA carry on: the same exported weights, bit for bit."""
    from safetensors.torch import load_file

    config, callbacks, extra = f"configs/tiny/{recipe}.yaml", [], ["--model.init_args.warmup_steps", "1"]
    if recipe == "train_decoder":  # two optimizer steps per batch, adversarial from the first, EMA exported
        extra += ["--model.init_args.pipeline", str(embedded_path("tiny-ldm"))]
        extra += ["--model.init_args.adversarial_start", "0"]
        callbacks.append({"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.9}})
    else:
        extra += ["--model.init_args.scale_images", "16"]

    def fit(name, *resume):
        every = {"dirpath": str(tmp_path / name / "checkpoints"), "every_n_train_steps": 4, "save_top_k": -1}
        ckpt = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": every}
        export = run_fit(
            config,
            tmp_path / name,
            *extra,
            "--trainer.max_steps",
            "8",
            "--trainer.enable_checkpointing",
            "true",
            *resume,
            callbacks=json.dumps([*callbacks, ckpt]),
        )
        return {f.relative_to(export): load_file(f) for f in sorted(export.rglob("*.safetensors"))}

    whole = fit("whole")
    resumed = fit("resumed", "--ckpt_path", str(tmp_path / "whole" / "checkpoints" / "epoch=0-step=4.ckpt"))
    assert whole and whole.keys() == resumed.keys()
    for f in whole:
        assert all(torch.equal(whole[f][k], resumed[f][k]) for k in whole[f]), f


def test_trainers_refuse_a_missing_autoencoder(tmp_path):
    from syncsde.errors import InputError
    from syncsde.tiny.train import TinyDecoderTraining, TinyLDMTraining

    with pytest.raises(InputError, match="train_vae.yaml"):
        TinyLDMTraining(vae=str(tmp_path / "nothing"))
    with pytest.raises(InputError, match="train_ldm.yaml"):
        TinyDecoderTraining(pipeline=str(tmp_path / "nothing"))


def test_clip_recipe_trains_and_exports(tmp_path):
    from transformers import AutoTokenizer, CLIPModel

    export = run_fit("configs/tiny/train_clip.yaml", tmp_path)
    model = CLIPModel.from_pretrained(export, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(export, local_files_only=True)
    assert len(tok) == len(M.word_tokenizer())
    feats = model.get_image_features(pixel_values=torch.randn(2, 3, 64, 64))
    assert (feats.pooler_output if hasattr(feats, "pooler_output") else feats).shape[-1] == 64


@pytest.fixture(scope="module")
def ldm():
    return StableDiffusion("syncsde:tiny-ldm")


def test_shipped_weights_load_offline_and_are_small(ldm):
    for name in ("tiny-ldm", "tiny-clip"):
        assert embedded_path(name).is_dir(), f"embedded model {name} is missing from the package"
    size = sum(p.stat().st_size for p in embedded_path("tiny-ldm").rglob("*") if p.is_file())
    assert size < 16e6  # 14.2 MB: a 6.1 M-parameter UNet in float16 is most of it
    assert ldm.name == "syncsde:tiny-ldm" and (ldm.scale_factor, ldm.sample_size, ldm.channels) == (4, 16, 4)
    assert ldm.unet.dtype == torch.float32  # stored in float16, loaded as float32


def test_shipped_autoencoder_scale_and_reconstruction(ldm):
    images = torch.from_numpy(scenes.batch(777, 0, 32, held_out=True)[0])
    z = ldm.encode(images)
    assert 0.8 < float(z.std()) < 1.25  # scaling_factor gives latents of about unit std, as SD's 0.18215
    assert float((ldm.decode(z) - images).abs().mean()) < 0.05
    flipped = ldm.decode(z.flip(-2))  # trained with flips: a view of the latent decodes like the view of the image
    assert float((flipped - images.flip(-2)).abs().mean()) < 0.06


def test_shipped_model_follows_its_prompt(ldm):
    from syncsde.tasks import TextToImage

    task = TextToImage(ldm, num_inference_steps=10, guidance_scale=4.0, progress=False)
    day, night = (o.image for o in task.generate(["a sunny day over snow", "a night sky over snow"]))
    assert day.mean() > night.mean() + 0.2
    assert day[2, :20].mean() > day[0, :20].mean() + 0.1  # a blue sky on top


def test_shipped_model_equals_the_diffusers_pipeline(ldm):
    from diffusers import StableDiffusionPipeline

    from syncsde.tasks import TextToImage

    pipe = StableDiffusionPipeline.from_pretrained(embedded_path("tiny-ldm"), local_files_only=True)
    x_T = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    prompt = "a sunset over the sea, a white boat in the middle"
    ref = pipe(prompt, num_inference_steps=5, guidance_scale=4.0, latents=x_T.clone(), output_type="pt").images
    task = TextToImage(ldm, num_inference_steps=5, guidance_scale=4.0, progress=False)
    ours = task.generate([prompt], x_T=x_T[:, None])[0].image
    torch.testing.assert_close(ours, ref[0], atol=1e-4, rtol=1e-4)


def test_model_card_measures_each_sampler_and_guidance_scale(monkeypatch, capsys):
    from syncsde.evaluation import quality
    from syncsde.evaluation.benchmarks import readme

    monkeypatch.setattr(readme, "write_result", lambda *a: pytest.fail("--dry-run writes nothing"))
    argv = ["--num", "12", "--steps", "2", "--samplers", "ddim", "ddpm", "--guidance", "1", "3", "--batch", "6"]
    r = quality.main([*argv, "--dry-run"])
    assert "Loading weights" not in capsys.readouterr().err  # quiet: no library loading bars
    assert list(r["settings"]) == ["DDIM, CFG 1", "DDIM, CFG 3", "DDPM, CFG 1", "DDPM, CFG 3"]
    assert r["retrieval_top1_of_10_real"] == 1.0
    fids = {k: g["fid_generated_vs_real"] for k, g in r["settings"].items()}
    assert len(set(fids.values())) == 4  # each setting samples differently (DDPM draws fresh noise every step)
    for g in r["settings"].values():
        assert 0 <= g["retrieval_top1_of_10_generated"] <= 1 and g["fid_generated_vs_real"] > r["fid_real_vs_real"]
        assert g["fid_ratio_to_floor"] == pytest.approx(g["fid_generated_vs_real"] / r["fid_real_vs_real"])
    table = quality.markdown(r, ["a", "b"], "tiny_ldm_samples.png").splitlines()
    header = next(line for line in table if line.startswith("| measure"))
    assert header == "| measure | DDIM, CFG 1 | DDIM, CFG 3 | DDPM, CFG 1 | DDPM, CFG 3 | target |"
    assert all(line.count("|") == header.count("|") for line in table if line.startswith("| "))
    assert table[-1] == "2. b"


def test_built_wheel_contains_the_embedded_weights(tmp_path):
    import importlib.util
    import zipfile

    if importlib.util.find_spec("setuptools") is None:
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
        "syncsde/embedded/tiny-ldm/unet/diffusion_pytorch_model.safetensors",
        "syncsde/embedded/tiny-ldm/vae/diffusion_pytorch_model.safetensors",
        "syncsde/embedded/tiny-ldm/model_index.json",
        "syncsde/embedded/tiny-clip/model.safetensors",
    ):
        assert needed in names


def test_autoencoder_latent_channels_and_widths_reach_the_unet(tmp_path):
    from syncsde.tiny.train import TinyLDMTraining, TinyVAETraining

    TinyVAETraining(latent_channels=8).vae.save_pretrained(tmp_path)
    unet = TinyLDMTraining(vae=str(tmp_path), widths=(16, 32, 48)).unet
    assert unet.config.in_channels == unet.config.out_channels == 8
    assert tuple(unet.config.block_out_channels) == (16, 32, 48)


def test_shipped_unet_has_the_widths_its_recipe_names(ldm):
    recipe = yaml.safe_load((ROOT / "configs/tiny/train_ldm.yaml").read_text())
    assert list(ldm.unet.config.block_out_channels) == recipe["model"]["init_args"]["widths"]


def test_learning_rate_decay_options(tmp_path):
    from types import SimpleNamespace

    from syncsde.tiny.train import TinyLDMTraining, TinyVAETraining

    TinyVAETraining().vae.save_pretrained(tmp_path)
    for decay, at_end in (("constant", 1.0), ("cosine", 0.0)):
        recipe = TinyLDMTraining(vae=str(tmp_path), warmup_steps=10, lr_decay=decay)
        recipe._trainer = SimpleNamespace(max_steps=100)
        assert recipe.lr_factor(0) == pytest.approx(0.1)  # warm-up, either way
        assert recipe.lr_factor(100) == pytest.approx(at_end, abs=1e-12)
    assert TinyVAETraining().lr_decay == "cosine"  # the autoencoder's schedule, as before
