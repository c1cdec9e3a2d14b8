"""The field's measures (issue 29, item 3): Intra-LPIPS/Intra-Style-L (SyncDiffusion), anagram alignment and
concealment (Visual Anagrams), Peak Jerk and AUJ (FlowMDM) — each on inputs with a known answer, then on real
outputs of the embedded configs through ``python -m syncsde.evaluation.coherence``."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from syncsde.errors import InputError
from syncsde.evaluation import anagrams, coherence
from syncsde.evaluation import motion_metrics as mm

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_clip():
    return coherence.clip_network()


# -- Intra-LPIPS / Intra-Style-L ---------------------------------------------------------------------------------------
def test_crops_follow_syncdiffusion_protocol():
    image = torch.rand(3, 64, 250)
    crops = coherence.crop_grid(image, 64)  # non-overlapping from the left; the 58-pixel remainder left out
    assert crops.shape == (3, 3, 64, 64)
    assert torch.equal(crops[2], image[:, :, 128:192])
    assert coherence.crop_grid(torch.zeros(3, 512, 3072), 512).shape[0] == 6  # the paper's 512x3072: 6 crops,
    assert coherence.pairs(6) == ([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4],  # 15 pairs
                                  [1, 2, 3, 4, 5, 2, 3, 4, 5, 3, 4, 5, 4, 5, 5])  # fmt: skip
    assert coherence.crop_grid(torch.zeros(3, 128, 128), 64).shape[0] == 4  # a 2-D canvas: a grid of crops
    with pytest.raises(InputError, match="no 64x64 crop"):
        coherence.crop_grid(torch.zeros(3, 32, 256), 64)


def test_distances_known_answers():
    e1 = torch.zeros(1, 3, 5)
    e1[:, 0] = 2.0
    e2 = torch.zeros(1, 3, 5)
    e2[:, 1] = 0.5
    # unit vectors e1 and e2 at each of 5 positions: ‖e1 − e2‖² = 2 per position and layer; two layers: 4
    assert float(coherence.perceptual_distance([e1, e1], [e2, e2])) == pytest.approx(4.0)
    assert float(coherence.perceptual_distance([e1], [3 * e1])) == pytest.approx(0.0)  # scale-free, as LPIPS
    f = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # C = 2 channels, P = 2 positions
    assert torch.allclose(coherence.gram(f), torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4)
    # (G(f) − G(0))² averaged over the 4 entries: (25 + 121 + 121 + 625) / 16 / 4
    assert float(coherence.style_loss([f], [torch.zeros_like(f)])) == pytest.approx(892 / 64)


def test_identical_crops_score_zero_and_different_crops_do_not(tiny_clip):
    tile = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    repeated = tile.repeat(1, 1, 4)  # a 64x256 panorama of one crop four times
    r = coherence.intra_lpips(repeated, tiny_clip, 64)
    assert r == {"value": 0.0, "crops": 4, "pairs": 6, "network": "tiny-clip"}
    assert coherence.intra_style(repeated, tiny_clip, 64)["value"] == 0.0
    constant = torch.full((3, 64, 256), 0.3)  # a constant image: every crop has the same Gram matrices
    assert coherence.intra_style(constant, tiny_clip, 64)["value"] == 0.0
    varied = torch.cat([tile, torch.rand(3, 64, 192, generator=torch.Generator().manual_seed(1))], dim=-1)
    assert coherence.intra_lpips(varied, tiny_clip, 64)["value"] > 0.01
    style = coherence.intra_style(varied, tiny_clip, 64)
    assert style["value"] > 0 and style["sum_over_pairs"] == pytest.approx(6 * style["value"])


def test_same_height_pairs_compare_crops_in_one_row_only(tiny_clip):
    """The variant for canvases taller than a crop: a sky row over a ground row, each row one crop repeated, is
    perfectly coherent at every height (0) while the standard measure counts the sky against the ground."""
    assert coherence.pairs(6, row=3) == ([0, 0, 1, 3, 3, 4], [1, 2, 2, 4, 5, 5])
    sky, ground = (torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(k)) for k in (2, 3))
    canvas = torch.cat([sky.repeat(1, 1, 3), ground.repeat(1, 1, 3)], 1)  # 128×192: two rows of three crops
    same = coherence.intra_lpips(canvas, tiny_clip, 64, same_row=True)
    assert same["value"] == 0.0 and same["pairs"] == 6 and coherence.intra_lpips(canvas, tiny_clip, 64)["pairs"] == 15
    assert coherence.intra_lpips(canvas, tiny_clip, 64)["value"] > 0.01
    assert coherence.intra_style(canvas, tiny_clip, 64, same_row=True)["value"] == 0.0
    assert coherence.intra_style(canvas, tiny_clip, 64)["value"] > 0
    with pytest.raises(InputError, match="one 64-pixel crop per row: Intra-LPIPS needs two"):
        coherence.intra_lpips(torch.rand(3, 128, 64), tiny_clip, 64, same_row=True)


def test_a_canvas_with_two_rows_of_crops_gets_the_same_height_measures_beside(tiny_clip, tmp_path):
    from syncsde.io import to_pil

    sky, ground = (torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(k)) for k in (4, 5))
    to_pil(torch.cat([sky.repeat(1, 1, 2), ground.repeat(1, 1, 2)], 1)).save(tmp_path / "00000.png")
    meta = {"sample_id": 0, "files": {"image": "00000.png"}, "grid": [2, 2], "height": 128, "vertical_stride": 64}
    measures, per_sample = coherence.panorama_measures(tmp_path, [meta], tiny_clip, None)
    assert per_sample[0]["crop"] == 64 and per_sample[0]["intra_lpips"] > 0.01
    assert per_sample[0]["intra_lpips_same_row"] == pytest.approx(0.0, abs=1e-6)
    assert set(measures) == {"intra_lpips", "intra_style", "intra_lpips_same_row", "intra_style_same_row"}


def test_network_choice_says_which_network(monkeypatch):
    monkeypatch.setattr(coherence, "torchvision_installed", lambda: False)
    net = coherence.network("auto")
    assert net.name == "tiny-clip" and "torchvision" in net.note
    with pytest.raises(InputError, match="--network lpips: LPIPS/VGG need torchvision.*--network clip"):
        coherence.network("lpips")
    assert coherence.network("clip").note is None


# -- Visual Anagrams' alignment and concealment ------------------------------------------------------------------------
def test_alignment_is_the_worst_diagonal_entry():
    S = torch.tensor([[0.30, 0.10, 0.05], [0.02, 0.22, 0.01], [0.04, 0.03, 0.27]])
    assert anagrams.alignment(S) == pytest.approx(0.22)


def test_concealment_known_values():
    tau = 0.01
    assert anagrams.concealment(torch.full((3, 3), 0.2), tau) == pytest.approx(1 / 3)  # CLIP cannot tell: 1/N
    assert anagrams.concealment(0.3 * torch.eye(4), tau) == pytest.approx(1.0, abs=1e-10)  # told apart: 1
    # S = [[a, b], [b, a]] with a − b = τ ln 3: each softmax gives 3/(3 + 1) on the diagonal
    a, b = 0.3, 0.3 - tau * math.log(3)
    assert anagrams.concealment(torch.tensor([[a, b], [b, a]]), tau) == pytest.approx(0.75)
    # the two directions differ on an asymmetric matrix; C is their mean
    S = torch.tensor([[0.3, 0.3], [0.1, 0.2]])
    rows = (S / tau).softmax(1).trace() / 2
    cols = (S / tau).softmax(0).trace() / 2
    assert anagrams.concealment(S, tau) == pytest.approx(float(rows + cols) / 2)


def test_quantiles_and_score_matrix():
    s = anagrams.summary(np.arange(11.0))
    assert s == {"mean": 5.0, "q0.9": 9.0, "q0.95": 9.5, "num": 11}

    class Stub:  # image i embeds as e_i, text j as e_j: S = identity
        def encode_images(self, x):
            return torch.eye(3)[: len(x)]

        def encode_texts(self, texts):
            return torch.eye(3)[: len(texts)]

    S = anagrams.score_matrix(Stub(), torch.zeros(2, 3, 8, 8), ["a", "b"])
    assert torch.equal(S, torch.eye(2, dtype=torch.float64))


# -- FlowMDM's Peak Jerk and Area Under the Jerk -----------------------------------------------------------------------
def test_constant_velocity_has_no_jerk():
    t = np.arange(200.0)[:, None, None]
    joints = np.random.default_rng(0).normal(size=(1, 22, 3)) + 0.01 * t * np.ones((1, 22, 3))
    curves = mm.transition_curves(joints, [90, 180 - 60])
    assert curves.shape == (2, 57) and np.abs(curves).max() < 1e-12
    pj, auj = mm.peak_jerk_auj(curves, reference_jerk=0.03)
    assert pj == pytest.approx(0.0, abs=1e-12) and auj == pytest.approx(57 * 0.03)


def test_known_cubic_and_a_jump():
    c, t = 0.002, np.arange(60.0)
    joints = np.zeros((60, 22, 3))
    joints[:, 3, 0], joints[:, 3, 1] = c * t**3, -2 * c * t**3  # Δ³(c t³) = 6c: L1 over xyz = 6c + 12c
    assert np.allclose(mm.jerk_curve(joints), 18 * c)
    pj, auj = mm.peak_jerk_auj(mm.jerk_curve(joints)[None], reference_jerk=0.0)
    assert pj == pytest.approx(18 * c) and auj == pytest.approx(57 * 18 * c)
    step = np.zeros((120, 22, 3))
    step[60:, 0, 2] = 0.5  # a 0.5 m jump at the transition frame 60: Δ³ = 0.5, −1, 0.5 around it
    curve = mm.transition_curves(step, [60])[0]
    assert curve.max() == pytest.approx(1.0) and int(np.argmax(curve)) == 30 - 2 and np.count_nonzero(curve) == 3


def test_transitions_from_the_sidecar_and_bad_windows():
    assert mm.transitions_of({"segment_frames": 120, "overlap": 30, "segments": 3}) == [90, 180]
    with pytest.raises(InputError, match="no 60-frame window.*--transition_length"):
        mm.transition_windows(np.zeros((100, 22, 3)), [80])
    with pytest.raises(InputError, match=r"give \(frames ≥ 4, joints, 3\)"):
        mm.jerk_curve(np.zeros((3, 22, 3)))


# -- end to end on the embedded configs --------------------------------------------------------------------------------
def predict(config: str, out: Path, *extra: str) -> Path:
    from syncsde.cli import main

    main(["predict", "--config", f"configs/tiny/{config}.yaml", "--output_dir", str(out),
          "--model.num_inference_steps", "2", "--trainer.enable_progress_bar", "false", *extra])  # fmt: skip
    return out


def test_wide_folder_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(coherence, "torchvision_installed", lambda: False)
    out = predict("wide", tmp_path / "wide", "--data.prompts", "[a red sky]")
    record = coherence.main([str(out)])
    assert json.loads((out / "coherence.json").read_text()) == record
    lp, st = record["measures"]["intra_lpips"], record["measures"]["intra_style"]
    assert lp["network"] == st["network"] == "tiny-clip" and lp["crop"] == 64 and lp["num_samples"] == 1
    assert lp["value"] > 0 and st["value"] > 0
    sample = record["per_sample"]["0"]
    assert sample["crops"] == 4 and sample["pairs"] == 6  # 64x256: four native-size crops, six pairs
    assert sample["intra_style_sum_over_pairs"] == pytest.approx(6 * sample["intra_style"])


def test_ambiguous_folder_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    record = '[{"prompt": "a sunny day over the sea", "prompt2": "a night sky over snow"}]'
    out = predict("ambiguous", tmp_path / "amb", "--data.records", record, "--model.strategy.correction", "exact")
    record = coherence.main([str(out)])
    sample = record["per_sample"]["0"]
    S = torch.tensor(sample["scores"])
    assert S.shape == (2, 2) and sample["alignment"] == pytest.approx(float(S.diagonal().min()))
    tau = record["measures"]["concealment"]["temperature"]
    assert sample["concealment"] == pytest.approx(anagrams.concealment(S, tau)) and 0 < sample["concealment"] < 1
    assert set(record["measures"]["concealment"]) >= {"mean", "q0.9", "q0.95", "network", "temperature"}


def test_motion_folder_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    texts = '[{"texts": ["a person walks forward", "a person jumps"]}]'
    out = predict("motion", tmp_path / "motion", "--data.records", texts, "--model.num_inference_steps", "20")
    record = coherence.main([str(out)])
    pj = record["measures"]["peak_jerk"]
    assert pj["transitions"] == 1 and pj["fps"] == 20 and pj["value"] > 0
    assert record["per_sample"]["0"]["transitions"] == [90]
    joints = np.load(out / "00000_joints.npy")
    assert pj["value"] == pytest.approx(mm.jerk_curve(joints[60:120]).max())


def test_command_refuses_other_folders_in_one_line(tmp_path):
    (tmp_path / "00000.json").write_text(json.dumps({"sample_id": 0, "task": "text_to_image", "files": {}}))
    with pytest.raises(InputError, match="holds 'text_to_image' samples; the field's measures apply to wide_image"):
        coherence.main([str(tmp_path)])
    assert not (tmp_path / "coherence.json").exists()
    r = subprocess.run([sys.executable, "-m", "syncsde.evaluation.coherence", str(tmp_path / "nope")],
                       capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and lines == [f"syncsde: error: {tmp_path / 'nope'} is not a folder; give a `syncsde "
                                           "predict` output folder"]  # fmt: skip
