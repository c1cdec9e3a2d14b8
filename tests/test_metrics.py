"""Evaluation: metrics on constructed sets, the callback in one and two processes, unavailable networks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from syncsde.evaluation.features import CLIPEmbedder
from syncsde.evaluation.metrics import Metrics, center_crop, load_folder, random_crops
from syncsde.task import SampleOutput
from syncsde.tiny import scenes

ROOT = Path(__file__).resolve().parents[1]


def fid(a, b):
    from torchmetrics.image.fid import FrechetInceptionDistance

    m = FrechetInceptionDistance(feature=CLIPEmbedder("syncsde:tiny-clip"), normalize=True)
    m.update(a, real=True)
    m.update(b, real=False)
    return float(m.compute())


def test_fid_identical_near_zero_shifted_larger():
    a = torch.from_numpy(scenes.batch(11, 0, 150, held_out=True)[0])
    b = torch.from_numpy(scenes.batch(12, 0, 150, held_out=True)[0])
    assert abs(fid(a, a)) < 1e-3
    same_distribution = fid(a, b)
    shifted = fid(a, (b * 0.6).clamp(0, 1))  # darkened
    assert shifted > 3 * same_distribution and shifted > 0.05


def test_crops_and_reference_folder(tmp_path):
    img = torch.rand(3, 32, 128)
    c = random_crops(img, 32, 3, seed=5)
    assert c.shape == (3, 3, 32, 32) and torch.equal(c, random_crops(img, 32, 3, seed=5))
    for i in range(3):
        Image.fromarray((np.random.rand(8, 8, 3) * 255).astype(np.uint8)).save(tmp_path / f"my_{i:05d}.png")
    assert load_folder(tmp_path).shape == (3, 3, 8, 8)  # any folder: every image
    out = tmp_path / "run"
    out.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(out / f"{i:05d}.png")
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(out / f"{i:05d}_mask.png")
    samples = [{"sample_id": i, "files": {"image": f"{i:05d}.png", "mask": f"{i:05d}_mask.png"}} for i in range(2)]
    (out / "manifest.json").write_text(json.dumps({"num_samples": 2, "samples": samples}))
    assert load_folder(out).shape == (2, 3, 8, 8)  # an output folder: the main images of its manifest
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder(tmp_path / "nope")


class _Module:  # what the callback reads of a task when it scores outputs in one process
    device = torch.device("cpu")


def scored(callback: Metrics, outputs: list[SampleOutput]) -> dict[str, float]:
    """The callback's CLIP-score metrics for these outputs (no trainer, no reference set)."""
    callback.on_predict_start(None, _Module())
    callback.on_predict_batch_end(None, _Module(), outputs, None, 0)
    return {k: float(m.compute()) for k, m in callback.metrics.items() if k.startswith("clip_score")}


def render(caption_scene, width=64, seed=0):
    img = scenes.render(caption_scene, np.random.default_rng(seed), 64, width)
    return torch.from_numpy(img).permute(2, 0, 1)


def test_ambiguous_clip_score_is_the_worst_reading():
    """A single-reading image (the second reading is the first one upside down, as independent sampling gives) gets a
    low score; an image whose readings each match their own prompt gets a high one. Averaging the readings hid it."""
    first = scenes.Scene("night", "snow", "mountains", (scenes.Thing("moon", None, "left"),))
    second = scenes.Scene("day", "sea", None, (scenes.Thing("boat", "red", "middle"),))
    a, b = render(first), render(second)
    single = SampleOutput(0, a, {}, scored=[(b.flip(-2), first.caption), (b, second.caption)])
    both = SampleOutput(0, a, {}, scored=[(a, first.caption), (b, second.caption)])
    s_single, s_both = scored(Metrics(), [single]), scored(Metrics(), [both])
    readings = [s_single["clip_score_reading1"], s_single["clip_score_reading2"]]
    assert s_single["clip_score"] == pytest.approx(min(readings))
    assert readings[1] == pytest.approx(s_both["clip_score_reading2"])  # the same image and prompt
    assert s_single["clip_score"] < s_both["clip_score"] - 5
    assert s_single["clip_score"] < sum(readings) / 2 - 2  # the worst reading is the headline, not the mean


def test_wide_clip_score_on_native_size_crops():
    scene = scenes.Scene("sunset", "sea", "mountains", (scenes.Thing("boat", "white", "left"),))
    pano = render(scene, width=256)
    out = SampleOutput(7, pano, {"prompt": scene.caption})
    callback = Metrics(crop=64, crops_per_image=3)
    callback.on_predict_start(None, _Module())
    seen = []
    encode = callback.clip.encode_images
    callback.clip.encode_images = lambda x: seen.append(tuple(x.shape[-2:])) or encode(x)
    callback.on_predict_batch_end(None, _Module(), [out], None, 0)
    assert set(seen) == {(64, 64)}  # the CLIP only ever sees native-size crops, never the squeezed panorama
    text = callback.clip.encode_texts([scene.caption])

    def score(images):
        return float((100 * (encode(images) @ text.T).clamp_min(0)).mean())

    crops = random_crops(pano, 64, 3, seed=7)  # the FID/KID crops of this sample
    assert float(callback.metrics["clip_score"].compute()) == pytest.approx(score(crops), rel=1e-5)
    assert float(callback.metrics["clip_score_center"].compute()) == pytest.approx(
        score(center_crop(pano, 64)[None]), rel=1e-5
    )
    assert torch.equal(center_crop(pano, 64), pano[:, :, 96:160])
    assert score(pano[None]) != pytest.approx(score(crops), rel=1e-3)


def run(args, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "syncsde.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-3000:]


def test_metrics_callback_one_and_two_processes(tmp_path, tiny_sd_dir):
    ref = tmp_path / "ref"
    ref.mkdir()
    for i, img in enumerate(scenes.batch(3, 0, 6, height=64, width=64)[0]):
        Image.fromarray((img.transpose(1, 2, 0) * 255).astype(np.uint8)).save(ref / f"{i:05d}.png")
    cfg = yaml.safe_load((ROOT / "configs/wide.yaml").read_text())
    init = cfg["model"]["init_args"]
    init["backbone"]["init_args"]["model"] = str(tiny_sd_dir)
    init.update(height=64, width=128, stride=16, num_inference_steps=2, progress=False)
    cfg["data"]["init_args"]["prompts"] = ["a sunny day over grass", "a sunset over the sea", "a night sky over snow"]
    cfg["trainer"].update(
        accelerator="cpu",
        enable_progress_bar=False,
        callbacks=[
            {
                "class_path": "syncsde.evaluation.Metrics",
                "init_args": {"reference": str(ref), "crop": 64, "crops_per_image": 2, "lpips": True},
            }
        ],
    )
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(cfg))
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"out{devices}"
        run(
            [
                "predict",
                "--config",
                str(path),
                "--output_dir",
                str(out),
                "--trainer.devices",
                str(devices),
                "--trainer.strategy",
                "ddp" if devices == 2 else "auto",
            ],
            tmp_path,
        )
        results[devices] = json.loads((out / "metrics.json").read_text())
        assert (out / "metrics.csv").read_text().count("\n") == 2  # header + one row
    for r in results.values():
        m = r["metrics"]
        assert m["num_samples"] == 3  # every sample counted once, also across two processes
        assert m["fid"]["available"] and m["kid"]["available"] and m["clip_score"]["available"]
        assert (
            m["lpips"] == {"available": False, "reason": m["lpips"]["reason"]}
            and "torchvision" in m["lpips"]["reason"].lower()
        )
        assert r["networks"]["feature_network"] == "syncsde:tiny-clip" and r["networks"]["num_reference"] == 6
    assert results[1]["metrics"]["fid"]["value"] == pytest.approx(results[2]["metrics"]["fid"]["value"], rel=1e-3)
    assert results[1]["metrics"]["clip_score"]["value"] == pytest.approx(
        results[2]["metrics"]["clip_score"]["value"], rel=1e-4
    )


def test_missing_reference_reported_unavailable(tmp_path, tiny_sd_dir):
    cfg = yaml.safe_load((ROOT / "configs/wide.yaml").read_text())
    init = cfg["model"]["init_args"]
    init["backbone"]["init_args"]["model"] = str(tiny_sd_dir)
    init.update(height=64, width=64, stride=16, num_inference_steps=2, progress=False)
    cfg["data"]["init_args"]["prompts"] = ["a"]
    cfg["trainer"].update(
        accelerator="cpu",
        enable_progress_bar=False,
        callbacks=[{"class_path": "syncsde.evaluation.Metrics", "init_args": {"reference": str(tmp_path / "none")}}],
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run(["predict", "--config", str(tmp_path / "c.yaml"), "--output_dir", str(tmp_path / "o")], tmp_path)
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())["metrics"]
    assert m["fid"]["available"] is False and "does not exist" in m["fid"]["reason"]


def test_table_collects_folders(tmp_path):
    from syncsde.evaluation.table import main as table_main

    for lam in (0, 5):
        f = tmp_path / f"l{lam}"
        f.mkdir()
        side = {"sample_id": 0, "task": "wide_image", "method": "syncsde", "inv_lambda": float(lam), "seconds": 1.5}
        (f / "manifest.json").write_text(json.dumps({"num_samples": 1, "samples": [side]}))
        (f / "metrics.json").write_text(
            json.dumps(
                {
                    "metrics": {
                        "fid": {"available": True, "value": 10.0 - lam},
                        "kid": {"available": True, "value": -0.00123, "std": 0.0031},
                        "lpips": {"available": False, "reason": "x"},
                    }
                }
            )
        )
    rows = table_main([str(tmp_path / "l0"), str(tmp_path / "l5"), "--csv", str(tmp_path / "t.csv")])
    assert [r["inv_lambda"] for r in rows] == [0.0, 5.0] and [r["fid"] for r in rows] == [10.0, 5.0]
    assert "lpips" not in rows[0] and rows[0]["kid"] == "-0.00123 ± 0.0031"  # KID with its spread
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("folder,task,method,inv_lambda")


def test_analysis_notebook_executes_on_a_tiny_sweep(tmp_path, tiny_sd_dir):
    nbclient = pytest.importorskip("nbclient", reason="nbclient not installed (pip install -e '.[test]')")
    import nbformat

    cfg = yaml.safe_load((ROOT / "configs/wide.yaml").read_text())
    init = cfg["model"]["init_args"]
    init["backbone"]["init_args"]["model"] = str(tiny_sd_dir)
    init.update(height=64, width=128, stride=16, num_inference_steps=2, progress=False)
    cfg["data"]["init_args"]["prompts"] = ["a sunny day over grass", "a sunset over the sea"]
    cfg["trainer"].update(
        accelerator="cpu", enable_progress_bar=False, callbacks=[{"class_path": "syncsde.evaluation.Metrics", "init_args": {}}]
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    for lam in (0, 5):
        run(
            [
                "predict",
                "--config",
                str(tmp_path / "c.yaml"),
                "--output_dir",
                str(tmp_path / "sweep" / f"l{lam}"),
                "--model.init_args.strategy.init_args.inv_lambda",
                str(lam),
            ],
            tmp_path,
        )
    nb = nbformat.read(ROOT / "notebooks/analysis.ipynb", as_version=4)
    os.environ["SYNCSDE_FOLDERS"] = str(tmp_path / "sweep" / "*")
    os.environ["SYNCSDE_ANALYSIS_OUT"] = str(tmp_path / "figures")
    try:
        nbclient.NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        del os.environ["SYNCSDE_FOLDERS"], os.environ["SYNCSDE_ANALYSIS_OUT"]
    text = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/markdown", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "2 output folders" in text and "clip_score" in text
    assert (tmp_path / "figures" / "samples.png").exists() and (tmp_path / "figures" / "lambda.png").exists()
