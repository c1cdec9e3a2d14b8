"""Half precision on the CPU: every backbone family and every task runs a tiny model in float16 (Flux and SD3 also in
bfloat16) for one step, with finite outputs, so that dtype mismatches (a float32 VAE under a float16 network,
ControlNet residuals, attention recorders, the mesh bake, the window-parallel exchange) show without a GPU."""

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from syncsde.backbones.diffusers import VaeTiling
from syncsde.strategies import MultiDiffusion, SyncSDE

ROOT = Path(__file__).resolve().parents[1]
MESH = {"mesh": str(ROOT / "configs/assets/ball.obj"), "prompt": "a blue ball"}
MESH_SIZES = dict(view_size=64, latent_texture_size=32, rgb_texture_size=64, turntable_frames=2)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_sd_dir):
    from syncsde import testing as T

    root = tmp_path_factory.mktemp("half")
    out = {"sd": tiny_sd_dir, "sdxl": T.save_tiny_sdxl(root / "sdxl")}
    out["sd_cn"] = T.save_tiny_controlnet(root / "sd_cn", tiny_sd_dir)
    out["sdxl_cn"] = T.save_tiny_controlnet(root / "sdxl_cn", out["sdxl"])
    out["if"], out["if2"] = T.save_tiny_if(root / "if"), T.save_tiny_if_upscaler(root / "if2")
    out["sd3"], out["flux"] = T.save_tiny_sd3(root / "sd3"), T.save_tiny_flux(root / "flux")
    return {k: str(v) for k, v in out.items()}


def backbone(folders, family: str, dtype: str):
    from syncsde import backbones as B

    make = {
        "sd": lambda: B.StableDiffusion(folders["sd"], dtype=dtype),
        "sd_controlnet": lambda: B.StableDiffusionControlNet(folders["sd"], folders["sd_cn"], dtype=dtype),
        "sdxl": lambda: B.StableDiffusionXL(folders["sdxl"], dtype=dtype),
        "sdxl_controlnet": lambda: B.StableDiffusionXLControlNet(folders["sdxl"], folders["sdxl_cn"], dtype=dtype),
        "deepfloyd_if": lambda: B.DeepFloydIF(folders["if"], dtype=dtype),
        "sd3": lambda: B.StableDiffusion3(folders["sd3"], dtype=dtype),
        "flux": lambda: B.Flux(folders["flux"], dtype=dtype, max_sequence_length=32),
    }
    return make[family]()


def check(task, outputs, dtype: str, shape=None):
    """The network ran in ``dtype`` and every output tensor is finite (and the image of ``shape``)."""
    net = next(m for m in (getattr(task.backbone, n, None) for n in ("unet", "transformer", "net")) if m is not None)
    assert next(net.parameters()).dtype == getattr(torch, dtype)
    for out in outputs:
        tensors = [out.image, *out.extras.values()]
        assert all(torch.isfinite(t.float()).all() for t in tensors if isinstance(t, torch.Tensor))
        assert all(np.isfinite(a).all() for a in out.arrays.values())
        assert shape is None or tuple(out.image.shape) == shape


def one(record: dict) -> list[dict]:
    return [{**record, "sample_id": 0, "seed": 0}]


def masks(tmp_path: Path) -> list[str]:
    paths = []
    for k, box in enumerate([(0, 0, 32, 64), (32, 16, 64, 48)]):
        m = Image.new("L", (64, 64), 0)
        m.paste(255, box)
        m.save(tmp_path / f"m{k}.png")
        paths.append(str(tmp_path / f"m{k}.png"))
    return paths


# -- every backbone family -------------------------------------------------------------------------------------------
FAMILY_RUNS = [(f, "float16") for f in ("sd", "sdxl", "sd3", "flux")] + [("sd3", "bfloat16"), ("flux", "bfloat16")]


@pytest.mark.parametrize("family,dtype", FAMILY_RUNS)
def test_family_in_half(folders, family, dtype, tmp_path):
    """A wide image (decode) and a mask-to-image run whose MultiDiffusion bootstrap encodes colours (encode)."""
    from syncsde.tasks import MaskTextToImage, WideImage

    b = backbone(folders, family, dtype)
    wide = WideImage(b, SyncSDE(0.9), height=64, width=96, stride=32, num_inference_steps=1, progress=False)
    check(wide, wide.generate(["a wide river"]), dtype, (3, 64, 96))
    mask = MaskTextToImage(b, MultiDiffusion(bootstrap_steps=1), num_inference_steps=1, progress=False)
    rec = {"background": "sky", "object": "cat", "prompt": "a cat in the sky", "mask": masks(tmp_path)[1]}
    check(mask, mask.generate([rec]), dtype, (3, 64, 64))


@pytest.mark.parametrize("family", ["sd_controlnet", "sdxl_controlnet"])
def test_controlnet_mesh_in_half(folders, family):
    from syncsde.tasks import MeshTexturing

    task = MeshTexturing(
        backbone(folders, family, "float16"), SyncSDE(5.0), num_inference_steps=1, progress=False, **MESH_SIZES
    )
    task.on_predict_start()
    check(task, task.run(one(MESH)), "float16", (3, 64, 64))


def test_deepfloyd_if_with_upscaler_in_half(folders):
    from syncsde.backbones.upscaler import IFUpscaler
    from syncsde.tasks import AmbiguousImage

    up = IFUpscaler(folders["if2"], num_inference_steps=1, dtype="float16")
    task = AmbiguousImage(
        backbone(folders, "deepfloyd_if", "float16"), SyncSDE(5.0), view="flip", upscaler=up, num_inference_steps=1,
        progress=False,
    )  # fmt: skip
    out = task.generate([{"prompt": "a cat", "prompt2": "a dog"}])
    check(task, out, "float16", (3, 64, 128))
    assert up.pipe.unet.dtype == torch.float16


# -- every task, on Stable Diffusion (DeepFloyd IF for ambiguous, MDM for motion) ------------------------------------
def task_and_batch(name: str, folders, tmp_path: Path):
    from syncsde import tasks as T

    sd = lambda: backbone(folders, "sd", "float16")  # noqa: E731
    steps = dict(num_inference_steps=1, progress=False)
    if name == "wide":
        return T.WideImage(sd(), SyncSDE(5.0), height=64, width=128, stride=32, **steps), one({"prompt": "a"})
    if name == "canvas":  # decoded in VAE tiles
        tiles = VaeTiling(mode="on", tile_size=32)
        task = T.WideImage(sd(), SyncSDE(5.0), height=96, width=96, stride=32, vertical_stride=32, vae_tiling=tiles, **steps)
        return task, one({"prompt": "a"})
    if name == "text_to_image":
        return T.TextToImage(sd(), **steps), one({"prompt": "a"})
    if name == "mask_t2i":
        rec = {"background": "sky", "object": "cat", "prompt": "a cat in the sky", "mask": masks(tmp_path)[1]}
        return T.MaskTextToImage(sd(), MultiDiffusion(bootstrap_steps=1), **steps), one(rec)
    if name == "regions":
        regions = [{"prompt": p, "mask": m} for p, m in zip(["a sun", "a boat"], masks(tmp_path))]
        rec = {"prompt": "a sun and a boat", "background": "sky", "regions": regions}
        return T.RegionTextToImage(sd(), SyncSDE(5.0), **steps), one(rec)
    if name == "edit":
        Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / "c.png")
        rec = {"image": str(tmp_path / "c.png"), "prompt": "a cat on grass", "source_word": "cat", "target_word": "dog"}
        return T.ImageEdit(sd(), SyncSDE(5.0), mask_res=4, **steps), one(rec)
    if name == "mesh":
        cn = backbone(folders, "sd_controlnet", "float16")
        return T.MeshTexturing(cn, SyncSDE(5.0), multiview_attention=True, **MESH_SIZES, **steps), one(MESH)
    if name == "sphere":
        return T.SpherePanorama(sd(), SyncSDE(5.0), height=64, viewer_size=32, prompt_prefix="", **steps), one(
            {"prompt": "a"}
        )
    if name == "ambiguous":
        task = T.AmbiguousImage(backbone(folders, "deepfloyd_if", "float16"), SyncSDE(5.0), view="flip", **steps)
        return task, one({"prompt": "a cat", "prompt2": "a dog"})
    if name == "motion":
        from syncsde.motion.mdm import FEATURES, MDM

        np.save(tmp_path / "Mean.npy", np.zeros(FEATURES, np.float32))
        np.save(tmp_path / "Std.npy", np.ones(FEATURES, np.float32))
        mdm = MDM(
            None, str(tmp_path / "Mean.npy"), str(tmp_path / "Std.npy"), clip="syncsde:tiny-clip", clip_dim=64,
            latent_dim=32, ff_size=64, num_layers=1, num_heads=2, dtype="float16",
        )  # fmt: skip
        task = T.LongMotion(mdm, SyncSDE(5.0), segment_frames=40, overlap=10, **steps)
        return task, one({"texts": ["a person walks", "a person jumps"]})
    raise KeyError(name)


TASKS = ["wide", "canvas", "text_to_image", "mask_t2i", "regions", "edit", "mesh", "sphere", "ambiguous", "motion"]


@pytest.mark.parametrize("name", TASKS)
def test_task_in_float16(folders, name, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    task, batch = task_and_batch(name, folders, tmp_path)
    task.on_predict_start()
    check(task, task.run(batch), "float16")


# -- the window-parallel exchange in half precision ------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mesh_in_half(rank, world, port, folders, out):
    """The mesh (multi-view attention: keys and values exchanged at every self-attention layer) in float16, its sampler
    state in float16 too, on ``world`` processes."""
    from syncsde.tasks import MeshTexturing

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    task = MeshTexturing(
        backbone(folders, "sd_controlnet", "float16"), SyncSDE(5.0, sync_t_min=0), num_inference_steps=1,
        progress=False, window_batch=3, sampler_dtype="float16", parallel="windows" if world > 1 else "samples",
        **{**MESH_SIZES, "turntable_frames": 0},
    )  # fmt: skip
    task.on_predict_start()
    x0 = task.trajectories(one(MESH))
    if rank == 0:
        torch.save(x0, out)
    if world > 1:
        dist.destroy_process_group()


def test_window_parallel_exchange_in_float16(folders, tmp_path):
    mesh_in_half(0, 1, 0, folders, tmp_path / "one.pt")
    mp.spawn(mesh_in_half, (2, free_port(), folders, tmp_path / "two.pt"), nprocs=2)
    one_, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert torch.isfinite(one_).all() and torch.equal(one_, two)
