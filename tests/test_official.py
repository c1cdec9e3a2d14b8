"""The switches to the official code's behaviour (docs page "Differences from the official code"), each against the
official arithmetic re-derived here from the official code (hjl1013/SyncSDE; its inversion is Hleephilip/CSG's)
without calling the code under test; the paper presets on the embedded and tiny models; the docs page's table
(syncsde/docs/differences.md)."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from syncsde.attention import AttentionRecorder
from syncsde.backbones import GaussianBackbone, StableDiffusion
from syncsde.cli import main
from syncsde.sampler import sample_generator
from syncsde.schedule import SD_SCHEDULER
from syncsde.strategies import SyncSDE
from syncsde.tasks import ImageEdit, MaskTextToImage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sd(tiny_sd_dir):
    return StableDiffusion(str(tiny_sd_dir))


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray((np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)).save(path)
    return path


def record(image, prompt="a cat on grass", source="cat", target="dog", sample_id=3, seed=7):
    return {"image": str(image), "prompt": prompt, "source_word": source, "target_word": target,
            "sample_id": sample_id, "seed": seed}  # fmt: skip


def text_embedding(sd, prompt):
    ids = sd.tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return sd.text_encoder(ids)[0]


# -- editing: inversion ------------------------------------------------------------------------------------------


@torch.no_grad()
def test_official_inversion_is_the_official_arithmetic(sd, image):
    steps = 6
    task = ImageEdit(sd, SyncSDE(5.0), mask_res=8, num_inference_steps=steps, inversion="official", progress=False)
    x_T = task.prepare([record(image)])[0]["x_T"]

    # src/inversion.py: Lanczos to the native size, [0, 1] → [−1, 1], VAE posterior *sample* × 0.18215 (the sample's
    # noise comes from the sample's own generator, stream 1); syncsde/utils/scheduler.py DDIMInverseScheduler on SD's
    # config: timesteps (arange(S)·⌊1000/S⌋)[::-1] + 1, flipped, without the first and last; ᾱ at t−1 and t+⌊1000/S⌋−1
    img = Image.open(image).convert("RGB").resize((64, 64), Image.LANCZOS)
    pixels = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1
    dist = sd.vae.encode(pixels).latent_dist
    noise = torch.randn((4, 8, 8), generator=sample_generator(7, 3, stream=1))
    x = (dist.mean + dist.std * noise) * sd.vae.config.scaling_factor
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    alphas = torch.cumprod(1 - betas, 0)
    ratio = 1000 // steps
    timesteps = torch.from_numpy((np.arange(steps) * ratio)[::-1].copy()) + 1
    emb = text_embedding(sd, "a cat on grass")
    for t in timesteps.flip(0)[1:-1]:
        e = sd.unet(x, t, encoder_hidden_states=emb).sample
        a_t, a_prev = alphas[t - 1], alphas[t + ratio - 1]
        x0 = (x - (1 - a_t) ** 0.5 * e) / a_t.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * e
    assert len(timesteps.flip(0)[1:-1]) == steps - 2
    torch.testing.assert_close(x_T, x[0], rtol=1e-5, atol=1e-5)
    exact = ImageEdit(sd, SyncSDE(5.0), mask_res=8, num_inference_steps=steps, progress=False)
    assert (exact.prepare([record(image)])[0]["x_T"] - x[0]).abs().max() > 1e-2  # the switch changes x_T


# -- editing: the source word ----------------------------------------------------------------------------------


def test_official_token_index_is_word_index_plus_one(sd, image):
    prompt = "a big cat on grass"  # byte-level tokenizer: one token per character, so "big" is 3 tokens
    rec = record(image, prompt)
    official = ImageEdit(sd, mask_res=8, num_inference_steps=2, source_tokens="word_index", progress=False)
    assert official.prepare([rec])[0]["columns"] == [prompt.split().index("cat") + 1] == [3]
    clean = ImageEdit(sd, mask_res=8, num_inference_steps=2, progress=False)
    assert clean.prepare([rec])[0]["columns"] == [5, 6, 7]  # BOS, "a", "big" before it: every sub-token of "cat"


def test_missing_source_word_falls_back_to_clip_nearest_word(image, tmp_path):
    from transformers import AutoTokenizer, CLIPModel

    backbone = StableDiffusion("syncsde:tiny-ldm")
    prompt = "a sunny day over grass with mountains, a red house in the middle"
    rec = record(image, prompt, source="tree", target="ball")
    task = ImageEdit(
        backbone, mask_res=8, num_inference_steps=2, clip_model="syncsde:tiny-clip", progress=False
    )  # missing_word: clip is the default
    out = task.run([rec])[0]

    # syncsde/utils/target_prompt.py: CLIP features of the source word and of each caption word, cosine, argmax;
    # the chosen word is replaced (inside, if it contains the source word)
    path = ROOT / "syncsde" / "embedded" / "tiny-clip"
    model, tok = CLIPModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    words = prompt.split()

    def features(texts):
        with torch.no_grad():
            f = model.get_text_features(**tok(texts, padding="max_length", max_length=24, return_tensors="pt"))
        return getattr(f, "pooler_output", f)

    src, caption = features(["tree"])[0], features(words)
    sims = [float(torch.dot(src, c) / (src.norm() * c.norm())) for c in caption]
    idx = int(np.argmax(sims))
    words[idx] = words[idx].replace("tree", "ball") if "tree" in words[idx] else "ball"
    assert out.meta["source_word_used"] == prompt.split()[idx] and out.meta["source_word_match"] == "clip"
    assert out.meta["target_prompt"] == " ".join(words)
    assert out.meta["columns"] == [idx + 1]  # the tiny tokenizer has one token per word

    from syncsde.errors import InputError

    strict = ImageEdit(backbone, mask_res=8, num_inference_steps=2, missing_word="error", progress=False)
    with pytest.raises(InputError, match="source word 'tree' is not in the source prompt"):
        strict.prepare([rec])


# -- editing: attention statistics --------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("chunk", [1, 1 << 22])
def test_attention_statistics_equal_the_official_mask_from_materialised_probabilities(sd, chunk):
    """The recorder forms probabilities from query and key in blocks of rows; the official code keeps diffusers'
    probabilities (syncsde/utils/cross_attention.py) and averages them (pipeline_image_edit.py first_stage)."""
    from diffusers.models.attention_processor import Attention, AttnProcessor

    gen = torch.Generator().manual_seed(0)
    inputs = [(torch.randn(1, 4, 8, 8, generator=gen), torch.tensor(t)) for t in (801, 501, 201)]
    emb, column, res = text_embedding(sd, "a cat on grass"), 3, 8
    with AttentionRecorder(sd.unet, mask_res=res, chunk_elements=chunk) as rec:
        for x, t in inputs:
            rec.begin_step([[column]])
            sd.unet(x, t, encoder_hidden_states=emb)
            rec.end_step()
    cross, A = rec.means()

    saved = sd.unet.attn_processors
    probs = {}
    layers = {n: m for n, m in sd.unet.named_modules() if isinstance(m, Attention)}
    for name, layer in layers.items():
        original = layer.get_attention_scores
        layer.get_attention_scores = lambda q, k, mask=None, f=original, n=name: probs.setdefault(n, f(q, k, mask))
    sd.unet.set_attn_processor(AttnProcessor())
    masks, selfs = [], []
    try:
        for x, t in inputs:
            probs.clear()
            sd.unet(x, t, encoder_hidden_states=emb)
            temp = []
            for name, p in probs.items():  # (heads, queries, 77)
                if name.endswith("attn2") and p.shape[1] <= res**2:
                    side = int(np.sqrt(p.shape[1]))
                    m = p.reshape(-1, side, side, p.shape[-1]).permute(0, 3, 1, 2)
                    if side != res:
                        m = F.interpolate(m, (res, res), mode="bicubic", align_corners=False)
                    temp.append(m.permute(0, 2, 3, 1)[..., column])
            m = torch.cat(temp, 0)
            m = m.sum(0) / m.shape[0]
            masks.append(F.interpolate((m / m.max())[None, None], (8, 8), mode="bicubic", align_corners=False))
            selfs.append(probs["up_blocks.1.attentions.1.transformer_blocks.0.attn1"].mean(0))
    finally:
        sd.unet.set_attn_processor(saved)
        for layer in layers.values():
            del layer.get_attention_scores
    torch.testing.assert_close(cross[0], (sum(masks) / len(masks)).clamp(0, 1)[0, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(A[0], sum(selfs) / len(selfs), rtol=1e-5, atol=1e-6)


# -- float16 sampler state ----------------------------------------------------------------------------------------


def test_float16_sampler_state_follows_the_official_float16_arithmetic(tmp_path):
    """Mask T2I (pipeline_mask_T2I.py) with --use_float_16: latents, DDIM step and correction in float16. Rounding
    order differs (diffusers multiplies float16 tensors by float32 scalars; ours rounds the coefficients), so the two
    agree to a few float16 units in the last place, not bit for bit."""
    from diffusers import DDIMScheduler

    mask_img = np.zeros((16, 16), np.uint8)
    mask_img[4:12, 4:12] = 255
    Image.fromarray(mask_img).save(tmp_path / "m.png")
    backbone, steps = GaussianBackbone(channels=4, sample_size=16, scale_factor=1), 20
    mask = str(tmp_path / "m.png")
    rec = [{"background": "a", "object": "b", "prompt": "c", "mask": mask, "sample_id": 0, "seed": 0}]
    x_T = torch.randn(1, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0))

    seen = []

    class Watched(SyncSDE):
        def step(self, x, eps, step, problem, noise=None):
            out = super().step(x, eps, step, problem, noise)
            seen.append((x.dtype, eps.dtype, out.to(x.dtype).dtype))
            return out

    ours = {}
    for dtype in ("float32", "float16"):
        seen.clear()
        task = MaskTextToImage(backbone, Watched(5.0), num_inference_steps=steps, sampler_dtype=dtype, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # c_t > 2 at the first steps of a 20-step schedule
            ours[dtype] = task.trajectories(rec, x_T=x_T)[0]
        assert {d for triple in seen for d in triple} == {getattr(torch, dtype)} and len(seen) == steps

    scheduler = DDIMScheduler.from_config(SD_SCHEDULER)
    scheduler.set_timesteps(steps)
    m = torch.from_numpy(mask_img.astype(np.float32) / 255)[None, None].half()
    latents, T = x_T[0].half(), max(scheduler.timesteps).item()
    for t in scheduler.timesteps:
        old = latents.clone()
        eps = backbone(latents.float(), t.repeat(3), None).half()  # the network's output, in float16
        latents = scheduler.step(eps, t, latents).prev_sample
        prev_t = t - 1000 // steps
        a_cur = scheduler.alphas_cumprod[t]
        a_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.final_alpha_cumprod
        g = (a_prev / a_cur).sqrt() - ((1.0 - a_prev) / (1.0 - a_cur)).sqrt()
        w = 5.0 * (t.item() / T)
        latents[1:2] = latents[1:2] - g * (1.0 - m) * w * (old[1:2] - old[0:1])
        latents[2:] = latents[2:] - g * ((1.0 - m) * w * (old[2:] - old[0:1]) + m * w * (old[2:] - old[1:2]))
    assert latents.dtype == torch.float16
    official = latents.float()
    ulp = torch.finfo(torch.float16).eps * official.abs().clamp_min(2**-14)
    half = ours["float16"]
    assert torch.equal(half, half.half().float())  # the state is float16 to the end
    assert ((half - official).abs() / ulp).max() <= 8
    assert not torch.equal(ours["float32"], ours["float32"].half().float())


# -- ambiguous: stage-II scheduler ---------------------------------------------------------------------------------


@torch.no_grad()
def test_stage_two_with_stage_one_scheduler_is_the_official_loop(tmp_path):
    """src/ambiguous_image.py hands stage I's DDIM (built from IF-I's config) to stage II; the stage-II loop is
    diffusers' IFSuperResolutionPipeline's, whose variance channels the official class splits off before stepping."""
    from diffusers import DDIMScheduler

    from syncsde.backbones import DeepFloydIF
    from syncsde.backbones.upscaler import IFUpscaler
    from syncsde.testing import save_tiny_if, save_tiny_if_upscaler

    stage1 = save_tiny_if(tmp_path / "stage1")
    config_file = stage1 / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "beta_schedule": "linear"}))
    backbone, upscaler = DeepFloydIF(str(stage1)), IFUpscaler(str(save_tiny_if_upscaler(tmp_path / "2")), 3)
    emb, neg = backbone.encode_prompts(["an oil painting of a horse"]), backbone.encode_prompts([""])
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    own = upscaler(image, emb, neg, torch.Generator().manual_seed(5))
    upscaler.set_scheduler(backbone.scheduler_config())
    ours = upscaler(image, emb, neg, torch.Generator().manual_seed(5))

    scheduler = DDIMScheduler.from_config(json.loads(config_file.read_text()))
    scheduler.set_timesteps(3)
    gen, unet, noising = torch.Generator().manual_seed(5), upscaler.pipe.unet, upscaler.pipe.image_noising_scheduler
    x = torch.randn((1, 3, 64, 64), generator=gen) * scheduler.init_noise_sigma
    upscaled = F.interpolate(image, (64, 64), mode="bilinear", align_corners=True)
    level = torch.tensor([250])
    upscaled = noising.add_noise(upscaled, torch.randn(upscaled.shape, generator=gen), timesteps=level)
    for t in scheduler.timesteps:
        model_input = torch.cat([torch.cat([x, upscaled], dim=1)] * 2)
        out = unet(model_input, t, encoder_hidden_states=torch.cat([neg, emb]), class_labels=torch.cat([level] * 2))
        uncond, cond = out.sample.chunk(2)
        eps = uncond[:, :3] + 10.0 * (cond[:, :3] - uncond[:, :3])
        x = scheduler.step(eps, t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)
    assert (own - ours).abs().max() > 1e-3  # the switch changes stage II


# -- the paper presets --------------------------------------------------------------------------------------------

TINY = {"class_path": "syncsde.backbones.StableDiffusion", "init_args": {"model": "syncsde:tiny-ldm"}}
PRESETS = {  # the embedded model in place of the paper's backbone, at its size; the switches are the preset's
    "wide": {"model": {"init_args": {"backbone": TINY, "height": 64, "width": 256, "stride": 16}},
             "data": {"init_args": {"prompts": ["a sunny day over grass with mountains"]}}},
    "mask_t2i": {"model": {"init_args": {"backbone": TINY}}},
    "edit": {"model": {"init_args": {"backbone": TINY, "captioner": None, "mask_res": 8,
                                     "clip_model": "syncsde:tiny-clip"}},
             "data": {"init_args": {"records_file": None, "records": [
                 {"image": "house_64.png", "prompt": "a sunny day over grass with mountains, a red house",
                  "source_word": "tree", "target_word": "ball"}]}}},
    "ambiguous": {"model": {"init_args": {"backbone": TINY, "upscaler": None}},
                  "data": {"init_args": {"records": [{"prompt": "a sunny day over the sea",
                                                      "prompt2": "a night sky over snow"}]}}},
    "motion": {"model": {"init_args": {"backbone": {"class_path": "syncsde.motion.procedural.ProceduralMotion"},
                                       "guidance_scale": 1.0}}},
}  # fmt: skip
OFFICIAL = {  # what each preset must switch (docs page "Differences from the official code")
    "wide": {"sampler_dtype": "float16", "preset": "paper", "init_from_canonical": True, "assembly": "overwrite"},
    "mask_t2i": {"sampler_dtype": "float16", "preset": "paper"},
    "edit": {"sampler_dtype": "float16", "preset": "paper", "inversion": "official", "source_tokens": "word_index",
             "missing_word": "clip", "source_word_match": "clip"},
    "ambiguous": {"sampler_dtype": "float16", "preset": "paper"},
    "motion": {"preset": "paper"},
}  # fmt: skip


@pytest.mark.parametrize("task", sorted(PRESETS))
def test_paper_preset_runs_on_the_embedded_models(task, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"trainer": {"callbacks": []}, **PRESETS[task]}))
    out = tmp_path / task
    main(
        ["predict", "--config", f"configs/paper/{task}.yaml", "--config", str(override), "--output_dir", str(out),
         "--model.init_args.num_inference_steps", "3", "--trainer.enable_progress_bar", "false"]
    )  # fmt: skip
    sidecar = json.loads((out / "00000.json").read_text())
    assert {k: sidecar.get(k) for k in OFFICIAL[task]} == OFFICIAL[task]
    config = yaml.safe_load((ROOT / "configs" / "paper" / f"{task}.yaml").read_text())["model"]["init_args"]
    assert config["strategy"]["init_args"]["preset"] == "paper"
    if task == "ambiguous":
        assert config["stage2_scheduler"] == "stage1" and config["upscaler"]["init_args"]["dtype"] == "auto"


# -- the docs page's table (syncsde/docs/differences.md) ------------------------------------------------------------


def test_readme_differences_section_is_generated_from_the_docs():
    from syncsde.evaluation.differences import RESULT, table

    assert (ROOT / "notebooks" / "results" / f"{RESULT}.md").read_text() == table().rstrip("\n") + "\n", (
        "run `python -m syncsde.evaluation.differences` after editing syncsde/docs/differences_*.md"
    )
    assert "<!-- results:differences -->" in (ROOT / "syncsde" / "docs" / "differences.md").read_text()
    text = table()
    for task in ("wide", "mask_t2i", "edit", "ambiguous", "motion"):
        assert (ROOT / "syncsde" / "docs" / f"differences_{task}.md").read_text().strip() in text


def test_differences_sections_take_bare_rows_and_titled_documents(tmp_path):
    from syncsde.evaluation.differences import HEADER, section

    (tmp_path / "differences_wide.md").write_text("| a | b | c | d | e |\n")
    (tmp_path / "differences_other.md").write_text("# Its own title\n\ntext\n\n| h |\n|---|\n| r |\n")
    wide = section(tmp_path / "differences_wide.md")
    assert wide == f"### Wide images (SYNCSDE.md §6.3)\n\n{HEADER}| a | b | c | d | e |\n"
    assert section(tmp_path / "differences_other.md") == "### other\n\ntext\n\n| h |\n|---|\n| r |\n"
