"""MasaCtrl (BASELINES.md §14): the mutual self-attention against the public code's formula, its limits, the layers it
picks, and where it is refused."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from syncsde.backbones import GaussianBackbone, StableDiffusion, StableDiffusion3
from syncsde.backbones.base import guided_eps
from syncsde.coupling import SelfAttention, SyncProblem
from syncsde.errors import InputError
from syncsde.schedule import SD_SCHEDULER, Schedule
from syncsde.strategies import Independent, MasaCtrl
from syncsde.strategies.masactrl import self_attention_layers
from syncsde.tasks import ImageEdit, WideImage
from syncsde.testing import save_tiny_sd3, tiny_unet

ROOT = Path(__file__).resolve().parents[1]
STEPS = Schedule.from_config(SD_SCHEDULER, 4).steps


def armed(strategy: MasaCtrl, B: int, N: int, sources: dict, masks=None, step: int = 3) -> MasaCtrl:
    strategy.before_denoise(torch.zeros(B, N, 1), STEPS[step], SyncProblem(N, attention=SelfAttention(sources, masks)))
    return strategy


def public_mutual(layer, hidden, B, N, sources, mask=None):
    """The public code's mutual self-attention (``MutualSelfAttentionControl.forward``/``attn_batch``; with ``mask``,
    ``MutualSelfAttentionControlMask``'s with mask_s = mask_t), re-derived: per guidance half (uncond, cond) and per
    sample, each trajectory's queries against the keys/values of the trajectory it reads, heads folded into the
    batch, ``sim = einsum(q, k) * scale``, softmax, then ``to_out``."""
    H = layer.heads
    rows, L, _ = hidden.shape
    q, k, v = (f(hidden).view(rows, L, H, -1).transpose(1, 2) for f in (layer.to_q, layer.to_k, layer.to_v))
    out = torch.empty_like(q)
    for g in range(rows // N):  # one (half, sample) group of N rows
        for j in range(N):
            r, s = g * N + j, g * N + sources.get(j, j)
            sim = torch.einsum("hid,hjd->hij", q[r], k[s]) * layer.scale
            if mask is None or j not in sources:
                out[r] = torch.einsum("hij,hjd->hid", sim.softmax(-1), v[s])
                continue
            m = mask[g % B].flatten()
            fg = sim + m.masked_fill(m == 0, torch.finfo(sim.dtype).min)  # the public code's additive masks
            bg = sim + m.masked_fill(m == 1, torch.finfo(sim.dtype).min)
            o_fg, o_bg = (torch.einsum("hij,hjd->hid", a.softmax(-1), v[s]) for a in (fg, bg))
            out[r] = o_fg * m[:, None] + o_bg * (1 - m[:, None])
    return layer.to_out[0](out.transpose(1, 2).reshape(rows, L, -1))


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return tiny_unet()


@pytest.mark.parametrize("masked", [False, True])
def test_mutual_attention_is_the_public_formula(unet, masked):
    """Two samples, three trajectories (2 reads 0), both guidance halves: every row against the public formula."""
    strategy = MasaCtrl(start_step=0, start_layer=0, mask=masked)
    strategy.bind(unet)
    layer = self_attention_layers(unet)[-1]  # at the 8x8 latent: 64 positions
    B, N, L = 2, 3, 64
    torch.manual_seed(1)
    hidden = torch.randn(2 * B * N, L, layer.query_dim)
    masks = torch.zeros(B, 1, 8, 8)
    masks[0, :, 2:6, 1:5], masks[1, :, 5:, :] = 1, 1
    with strategy.rewired():
        plain = layer(hidden)  # not armed: the layer's own processor
        armed(strategy, B, N, {2: 0}, masks if masked else None)
        got = layer(hidden)
    want = public_mutual(layer, hidden, B, N, {2: 0}, masks.flatten(2) if masked else None)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    own = public_mutual(layer, hidden, B, N, {})  # plain self-attention by the same formula
    torch.testing.assert_close(plain, own, atol=1e-5, rtol=1e-5)
    edited = torch.arange(2 * B * N) % N == 2
    torch.testing.assert_close(got[~edited], plain[~edited], atol=1e-5, rtol=1e-5)  # the source and x^1 untouched
    assert (got[edited] - plain[edited]).abs().max() > 1e-3  # the edit reads another trajectory


def test_identical_trajectories_stay_identical_in_chunked_guided_calls(unet):
    """Control on every layer from step 0: a trajectory that starts as its source and has its prompts stays equal to
    it, sample by sample and branch by branch, also when max_batch splits the call; the mask-guided variant reads each
    sample's own mask in chunked calls too (the rows' groups are counted); a trajectory that starts elsewhere is
    changed by the control."""

    class Net(GaussianBackbone):
        def forward(self, x, t, context):
            return unet(x, t, encoder_hidden_states=context).sample

    net = Net(channels=4, sample_size=8)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 4, 8, 8, generator=g).repeat(1, 3, 1, 1, 1)
    x[:, 1] = torch.randn(2, 4, 8, 8, generator=g)  # trajectory 1: other noise, reads nobody
    context = torch.randn(4, 6, 32, generator=g)  # per sample: prompt, negative prompt (distinct)
    cond, uncond = context[[0, 0, 0, 1, 1, 1]], context[[2, 2, 2, 3, 3, 3]]
    masks = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()

    def eps(sources, mask=False, max_batch=None):
        strategy = MasaCtrl(start_step=0, start_layer=0, mask=mask)
        strategy.bind(unet)
        with strategy.rewired():
            armed(strategy, 2, 3, sources, masks, step=0)
            return guided_eps(net, x.flatten(0, 1), STEPS[0], cond, uncond, 3.0, max_batch).view_as(x)

    whole = eps({2: 0})
    torch.testing.assert_close(whole[:, 2], whole[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eps({2: 0}, max_batch=6), whole, atol=1e-5, rtol=1e-5)
    masked = eps({2: 0}, mask=True)  # each sample's own mask, also when its rows come in another call
    assert (masked[:, 2] - masked[:, 0]).abs().max() > 1e-3
    torch.testing.assert_close(eps({2: 0}, mask=True, max_batch=3), masked, atol=1e-5, rtol=1e-5)
    moved = eps({1: 0})
    torch.testing.assert_close(moved[:, 0], whole[:, 0], atol=1e-5, rtol=1e-5)
    assert (moved[:, 1] - whole[:, 1]).abs().max() > 1e-3
    with pytest.raises(InputError, match="multiples of 3") as e:
        eps({2: 0}, max_batch=4)
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("masactrl") / "cat.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def sd(tiny_sd_dir):
    return StableDiffusion(str(tiny_sd_dir))


def edit(sd, image, strategy, target="dog", **kw):
    task = ImageEdit(sd, strategy, mask_res=4, num_inference_steps=4, layout="pair", progress=False, **kw)
    rec = {"image": str(image), "prompt": "a cat on grass", "source_word": "cat", "target_word": target}
    return task.run([{**rec, "sample_id": 0, "seed": 0}])[0]


def test_no_control_is_plain_ddim_editing_and_control_is_deterministic(sd, image):
    """Start step past the last step, or start layer past the last layer: the plain DDIM edit from the inverted
    latent, bit for bit; with control: another image, the same on every run; the sidecar names the layers."""
    plain = edit(sd, image, Independent())
    for late in (MasaCtrl(start_step=4), MasaCtrl(start_step=0, start_layer=4)):
        assert torch.equal(edit(sd, image, late).image, plain.image)
    first, again = (edit(sd, image, MasaCtrl(start_step=1)) for _ in range(2))
    assert torch.equal(first.image, again.image) and (first.image - plain.image).abs().max() > 1e-4
    meta = first.meta
    assert meta["method"] == "masactrl" and meta["layout"] == "pair" and meta["start_step"] == 1
    assert (meta["attention_layers"], meta["start_layer"], meta["controlled_layers"]) == (4, 3, [3])


def test_identical_prompts_reproduce_the_source(sd, image):
    """Every layer from step 0, the target prompt equal to the source prompt (guidance 1: both trajectories read
    the prompt alone): the edit is the source's reconstruction."""
    out = edit(sd, image, MasaCtrl(start_step=0, start_layer=0), target="cat", guidance_scale=1.0)
    assert out.meta["target_prompt"] == "a cat on grass"
    torch.testing.assert_close(out.image, out.extras["reconstruction"], atol=1e-5, rtol=0)


def test_default_layers_are_the_public_fraction():
    """10 of SD 1.x's 16 layers (the decoder's at 32² and 64²); SDXL's 70 → 44; the embedded tiny-ldm's 7 → 4."""
    from diffusers import UNet2DConditionModel

    def layers(**config):
        s = MasaCtrl()
        s.bind(UNet2DConditionModel(norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2, **config))
        return s.layer_count, s.first_layer

    sd = dict(block_out_channels=(4, 4, 4, 4), layers_per_block=2)
    assert layers(**sd) == (16, 10)
    sdxl = dict(
        block_out_channels=(4, 4, 4), layers_per_block=2, transformer_layers_per_block=(1, 2, 10),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    )  # fmt: skip
    assert layers(**sdxl) == (70, 44)
    config = json.loads((ROOT / "syncsde/embedded/tiny-ldm/unet/config.json").read_text())
    tiny = MasaCtrl()
    tiny.bind(UNet2DConditionModel.from_config(config))
    assert (tiny.layer_count, tiny.first_layer, tiny.controlled) == (7, 4, [4, 5, 6])
    assert MasaCtrl(start_layer=2).describe()["start_layer"] == 2


def test_refusals(tmp_path):
    with pytest.raises(InputError) as e:
        ImageEdit(StableDiffusion3(str(save_tiny_sd3(tmp_path / "sd3"))), MasaCtrl(), progress=False)
    assert "\n" not in str(e.value) and "no UNet" in str(e.value) and "--method paper" in str(e.value)
    assert "--model.backbone sd or sdxl" in str(e.value)
    with pytest.raises(InputError, match="provides self_attention") as e:
        WideImage(GaussianBackbone(), MasaCtrl(), progress=False)
    assert "tasks that do: edit" in str(e.value)
    with pytest.raises(InputError, match="start_step"):
        MasaCtrl(start_step=-1)
    from diffusers import UNet2DConditionModel

    plain = UNet2DConditionModel(
        block_out_channels=(4, 4), norm_num_groups=4, down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2, mid_block_type=None, cross_attention_dim=8,
    )  # fmt: skip
    with pytest.raises(InputError, match="has none: use an SD or SDXL backbone"):
        MasaCtrl().bind(plain)
