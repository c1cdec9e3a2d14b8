"""Real-image editing on flow-matching backbones (SYNCSDE.md §6.2.1): the inversion as the flow ODE's reverse Euler
step, the mask from SD3's joint attention, the task through the CLI, the refusals."""

import json
from pathlib import Path

import pytest
import torch

from syncsde.attention import JointAttentionRecorder, word_token_columns
from syncsde.backbones import Flux, GaussianBackbone, StableDiffusion3
from syncsde.backbones.base import guided_eps
from syncsde.coupling import SyncProblem
from syncsde.errors import InputError
from syncsde.sampler import invert, sample
from syncsde.schedule import Schedule, flow_sigma
from syncsde.strategies import Independent, SyncSDE
from syncsde.tasks import ImageEdit
from syncsde.testing import save_tiny_flux, save_tiny_sd3

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory):
    return save_tiny_sd3(tmp_path_factory.mktemp("edit_flow") / "sd3")


@pytest.fixture(scope="module")
def sd3(sd3_dir):
    return StableDiffusion3(str(sd3_dir))


def round_trip(denoise, z0, schedule):
    x_T = invert(denoise, z0, schedule)
    return x_T, float((sample(denoise, x_T, schedule, Independent(), SyncProblem(1)) - z0).abs().max())


def test_flow_inversion_is_the_reverse_euler_step_and_round_trips():
    """On the exact flow model of Gaussian data: each inversion step is x_σ = x_{σ'} + (σ−σ')·v(x_{σ'}, t) in flow
    coordinates (v at the step's timestep, as DDIM inversion takes ε), and invert-then-sample returns x₀ up to the
    first-order error: measured max |error| 0.27, 0.030, 0.0069 at 10, 50, 200 steps (x₀ std 0.5)."""
    b = GaussianBackbone(channels=3, sample_size=8, scale_factor=1, std=0.5, flow_shift=3.0)
    ctx = b.encode_prompts(["x"])

    def denoise(x, step):
        return guided_eps(b, x.flatten(0, 1), step, ctx.expand(x.shape[0] * x.shape[1], -1), None, 1.0).view_as(x)

    x0 = 0.5 * torch.randn(2, 1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sch = Schedule.from_config(b.scheduler_config(), 3)
    x_sigma, sigma_prev = x0.double(), 0.0  # the reference, in flow coordinates, from σ' = 0 up to σ = 1
    for step in sch.steps[::-1]:
        sigma, r = (float(c) for c in flow_sigma(step.abar_t))
        r_prev = float(flow_sigma(step.abar_prev)[1])
        v = denoise((x_sigma / r_prev).float(), step).double()  # the network sees the VP state, as in sampling
        x_sigma = x_sigma + (sigma - sigma_prev) * v
        sigma_prev = sigma
    assert sigma_prev == 1.0
    torch.testing.assert_close(invert(denoise, x0, sch), x_sigma.float(), atol=1e-5, rtol=1e-5)

    errors = {}
    for steps in (10, 50, 200):
        x_T, errors[steps] = round_trip(denoise, x0, Schedule.from_config(b.scheduler_config(), steps))
        assert 0.9 < x_T.std() < 1.2  # actually noised to the prior
    assert errors[10] > errors[50] > errors[200]
    assert errors[50] < 0.05 and errors[200] < 0.01


def test_flow_inversion_round_trip_on_tiny_sd3(sd3):
    """A real MMDiT (random weights) at guidance 1: invert-then-sample gives the image's latents back, the error
    halving as the steps double: measured max |error| 0.55, 0.27, 0.068 at 4, 8, 32 steps (latents' std 0.52)."""
    cond = sd3.encode_prompts(["a cat on grass"])

    def denoise(x, step):
        return guided_eps(sd3, x.flatten(0, 1), step, cond, None, 1.0).view_as(x)

    z0 = sd3.encode(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)))[:, None]
    errors = {steps: round_trip(denoise, z0, sd3.schedule(steps))[1] for steps in (4, 8, 32)}
    assert errors[4] > 1.5 * errors[8] > 6 * errors[32] and errors[32] < 0.1


def joint_probabilities(attn, image, text):
    """Reference: the full joint softmax of one block (image and text queries against image and text keys, as
    diffusers' JointAttnProcessor2_0 forms it), and the attention output it implies."""
    heads = lambda x, proj: proj(x).unflatten(-1, (attn.heads, -1)).transpose(1, 2)  # noqa: E731
    q = torch.cat([heads(image, attn.to_q), heads(text, attn.add_q_proj)], 2)
    k = torch.cat([heads(image, attn.to_k), heads(text, attn.add_k_proj)], 2)
    v = torch.cat([heads(image, attn.to_v), heads(text, attn.add_v_proj)], 2)
    probs = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
    out = (probs @ v).transpose(1, 2).flatten(2)[:, : image.shape[1]]
    return probs, attn.to_out[0](out)


def test_joint_recorder_reads_the_joint_attention_and_follows_the_word(sd3):
    """The recorder's two parts are the joint softmax of the image-token rows restricted to the image keys and to
    the text keys, each renormalised (checked against the full softmax, itself checked against the block's output),
    averaged over heads; the word's map is its columns' mean over the max. Rows arrive in two calls (max_batch 1)
    and in chunks of a few rows."""
    transformer = sd3.transformer
    attn = transformer.transformer_blocks[0].attn
    seen = {}
    hooks = [
        attn.register_forward_pre_hook(
            lambda m, a, kw: seen.setdefault("inputs", []).append((kw["hidden_states"], kw["encoder_hidden_states"])),
            with_kwargs=True,
        ),
        attn.register_forward_hook(lambda m, a, out: seen.setdefault("outputs", []).append(out[0])),
    ]
    cond = sd3.encode_prompts(["a cat on grass", "a dog in the snow"])
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    step = sd3.schedule(4).steps[1]
    columns = [[2, 3, 4, 78], [3]]
    try:
        with JointAttentionRecorder(transformer, (4, 4), chunk_elements=200) as rec:
            rec.begin_step(columns)
            guided_eps(sd3, x, step, cond, None, 1.0, max_batch=1)
            rec.end_step()
    finally:
        for hook in hooks:
            hook.remove()
    assert not attn._forward_pre_hooks  # the recorder removed its hook
    cross, A = rec.means()
    assert cross.shape == (2, 4, 4) and A.shape == (2, 16, 16) and len(transformer.transformer_blocks) == 1

    image, text = (torch.cat(parts) for parts in zip(*seen["inputs"]))
    probs, out = joint_probabilities(attn, image, text)
    torch.testing.assert_close(out, torch.cat(seen["outputs"]), atol=1e-5, rtol=1e-4)  # the reference is the block's
    to_image, to_text = probs[:, :, :16, :16], probs[:, :, :16, 16:]
    torch.testing.assert_close(A, (to_image / to_image.sum(-1, keepdim=True)).mean(1), atol=1e-6, rtol=1e-5)
    to_text = (to_text / to_text.sum(-1, keepdim=True)).mean(1)
    for b, c in enumerate(columns):
        word = to_text[b][:, c].mean(-1)
        torch.testing.assert_close(cross[b].flatten(), word / word.max(), atol=1e-6, rtol=1e-5)
    other = to_text[0][:, [5, 6]].mean(-1)
    assert not torch.allclose(cross[0].flatten(), other / other.max(), atol=1e-3)  # another word: another map


def test_sd3_token_columns_name_the_word_in_clip_and_t5(sd3):
    task = ImageEdit(sd3, SyncSDE(0.9), num_inference_steps=2, progress=False)
    prompt = "a snowy village of cats"
    columns = task.token_columns(prompt, 2)
    clip = word_token_columns(sd3.tokenizer, prompt, 2)
    assert columns[: len(clip)] == clip
    t5 = [c - sd3.tokenizer.model_max_length for c in columns[len(clip) :]]
    ids = sd3.tokenizer_3(prompt).input_ids
    assert t5 and [ids[c] for c in t5] == sd3.tokenizer_3("village", add_special_tokens=False).input_ids


def test_edit_through_the_cli_on_tiny_sd3(sd3_dir, tmp_path, monkeypatch):
    """configs/tiny/flow/edit.yaml on a tiny random SD3 folder, two steps: every sample's image, extras and sidecar."""
    from syncsde.cli import main

    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    main(
        ["predict", "--config", "configs/tiny/flow/edit.yaml", "--model.backbone.model", str(sd3_dir),
         "--model.num_inference_steps", "2", "--output_dir", str(out), "--trainer.callbacks", "[]",
         "--trainer.enable_progress_bar", "false"]
    )  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == 2
    for s in manifest["samples"]:
        assert all((out / f).exists() for f in s["files"].values())
        meta = json.loads((out / f"{Path(s['files']['image']).stem}.json").read_text())
        assert meta["task"] == "edit" and meta["target_prompt"].rsplit(" ", 3)[0].endswith(("red tree", "red ball"))
        assert 0 <= meta["mask_fraction"] <= 1 and meta["inversion"] == "exact"


def test_flow_edit_refusals(sd3, tmp_path):
    for option, fix in (("inversion", "exact"), ("source_tokens", "subtokens")):
        quirk = {"inversion": "official", "source_tokens": "word_index"}[option]
        with pytest.raises(InputError, match=f"^{option}: {quirk} is a quirk .* use --model.{option} {fix}$"):
            ImageEdit(sd3, **{option: quirk})
    flux = Flux(str(save_tiny_flux(tmp_path / "flux")), max_sequence_length=32)
    with pytest.raises(InputError, match=r"^the edit task .*source prompt.* guidance-distilled .*backbone sd3\)$") as e:
        ImageEdit(flux)
    assert "\n" not in str(e.value)
