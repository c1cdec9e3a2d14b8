"""BG-LPIPS on a background segmentation shared by every method (``syncsde reproduce edit --segmentation``): CLIPSeg
(a tiny random one, built with transformers' own config classes and loaded by path), the user's masks, each method's
own mask, and the refusals."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from syncsde import registry
from syncsde.errors import InputError
from syncsde.evaluation import segmentation as seg
from syncsde.evaluation.reproduce import PROTOCOLS, main, segmentation_choice
from syncsde.writer import SampleOutput

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--configs", "configs/tiny", "--model.num_inference_steps", "1", "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def tiny_clipseg(tmp_path_factory):
    """A random CLIPSeg (2-layer towers, 32-px images in 8-px patches) and its processor, saved to a folder."""
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessor

    from syncsde.testing import byte_level_clip_tokenizer

    tower = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPSegConfig(
        text_config=dict(vocab_size=514, max_position_embeddings=77, bos_token_id=512, eos_token_id=513, **tower),
        vision_config=dict(image_size=32, patch_size=8, **tower),
        projection_dim=16,
        extract_layers=[0, 1],  # hidden states after layers 1 and 2,
        reduce_dim=8,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=16,
        conditional_layer=0,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clipseg") / "clipseg"
    CLIPSegForImageSegmentation(config).save_pretrained(folder)
    images = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    CLIPSegProcessor(image_processor=images, tokenizer=byte_level_clip_tokenizer()).save_pretrained(folder)
    return folder


def picture(width=40, height=24, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_clipseg_masks_are_its_sigmoid_over_the_threshold(tiny_clipseg):
    """The mask is CLIPSeg's sigmoid for the word, bilinear to the image's size (not square here), above the
    threshold: recomputed here with the model loaded on its own."""
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    image = picture()
    processor = CLIPSegProcessor.from_pretrained(tiny_clipseg)
    net = CLIPSegForImageSegmentation.from_pretrained(tiny_clipseg).eval()
    probs = {}
    for word in ("cat", "horse"):
        with torch.no_grad():
            logits = net(**processor(text=[word], images=[image], return_tensors="pt", padding=True)).logits
        p = torch.sigmoid(logits.reshape(1, 1, *logits.shape[-2:]))
        probs[word] = torch.nn.functional.interpolate(p, size=(24, 40), mode="bilinear", align_corners=False)[0]
    assert not torch.allclose(probs["cat"], probs["horse"])  # the word reaches the network
    threshold = float(probs["cat"].median())
    (mask,) = seg.clipseg_masks([image], ["cat"], str(tiny_clipseg), threshold)
    assert mask.shape == (1, 24, 40)
    assert torch.equal(mask, (probs["cat"] > threshold).float())
    assert 0 < mask.mean() < 1


def test_clipseg_that_does_not_load_says_what_to_give(tmp_path):
    with pytest.raises(InputError) as e:
        seg.clipseg_masks([picture()], ["cat"], str(tmp_path / "nothing"))
    assert "\n" not in str(e.value)
    assert "--segmentation_model FOLDER" in str(e.value) and "--segmentation own" in str(e.value)


def write_mask(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_folder_masks_by_name_and_their_refusals(tmp_path):
    source = tmp_path / "images" / "a.png"
    source.parent.mkdir()
    picture(40, 24).save(source)
    drawn = np.zeros((24, 40), np.uint8)
    drawn[4:10, 5:20] = 255
    write_mask(tmp_path / "masks" / "cat2dog" / "a.png", drawn)
    (mask,) = seg.folder_masks(tmp_path / "masks", ["cat2dog/a.png"], [str(source)])
    assert torch.equal(mask, torch.from_numpy(drawn > 127).float()[None])
    with pytest.raises(InputError) as e:
        seg.folder_masks(tmp_path / "masks", ["dog2cat/a.png"], [str(source)])
    assert "\n" not in str(e.value) and "no mask dog2cat/a.png" in str(e.value)
    write_mask(tmp_path / "masks" / "b.png", drawn[:, :30])
    with pytest.raises(InputError) as e:
        seg.folder_masks(tmp_path / "masks", ["b.png"], [str(source)])
    assert "\n" not in str(e.value) and "is 30x24, its source image" in str(e.value) and "40x24" in str(e.value)


def test_background_distances_use_the_shared_masks():
    """An edit that changes only the segmented object: zero on the shared background, although the method's own
    mask (here: nothing) would count the change."""
    src = torch.rand(3, 16, 16)
    edit = src.clone()
    edit[:, 2:6, 3:9] = 1 - edit[:, 2:6, 3:9]
    own = torch.zeros(3, 16, 16)
    sample = SampleOutput(0, edit, {}, {"source": src, "mask": own})
    obj = torch.zeros(1, 32, 32)  # at the source image's size (twice the sample's): resized by nearest neighbour
    obj[:, 4:12, 6:18] = 1
    l1 = lambda a, b: (a - b).abs().mean()  # noqa: E731
    assert seg.background_distances([sample], {0: obj}, l1) == [0.0]
    assert seg.background_distances([sample], {0: torch.zeros(1, 32, 32)}, l1)[0] == pytest.approx(float(l1(edit, src)))


def test_segmentation_choice_defaults_and_refusals(tmp_path):
    edit, mask_t2i = PROTOCOLS["edit"], PROTOCOLS["mask_t2i"]
    assert segmentation_choice(None, edit, "syncsde:tiny-ldm") == "own"  # the embedded models have no segmenter
    assert segmentation_choice(None, edit, "CompVis/stable-diffusion-v1-4") == "clipseg"
    assert segmentation_choice(str(tmp_path), edit, "syncsde:tiny-ldm") == str(tmp_path)
    assert segmentation_choice(None, mask_t2i, "syncsde:tiny-ldm") is None
    for value, proto, words in (("own", mask_t2i, "only the edit protocol"), ("masks/", edit, "give clipseg, own")):
        with pytest.raises(InputError) as e:
            segmentation_choice(value, proto, "syncsde:tiny-ldm")
        assert "\n" not in str(e.value) and words in str(e.value)


class L1:
    """A stand-in for torchmetrics' LPIPS (which needs torchvision): the mean absolute difference."""

    def __init__(self, **kwargs):
        self.values = []

    def to(self, device):
        return self

    def __call__(self, a, b):
        return (a - b).abs().mean()

    def update(self, a, b):
        self.values.append(self(a, b))

    def compute(self):
        return torch.stack(self.values).mean()


def test_edit_with_a_mask_folder_end_to_end(tmp_path, monkeypatch):
    """Table 2's protocol on one image with the user's mask: the measured BG-LPIPS is the distance outside that mask
    (recomputed here from the saved sample), and the table says where the background came from."""
    import torchmetrics.image.lpip

    monkeypatch.setattr(torchmetrics.image.lpip, "LearnedPerceptualImagePatchSimilarity", L1)
    image = ROOT / "configs/assets/house_64.png"
    data = tmp_path / "edits.jsonl"
    data.write_text(
        json.dumps({"image": str(image), "source_word": "house", "target_word": "tree", "prompt": "a red house"})
    )
    drawn = np.zeros((64, 64), np.uint8)
    drawn[20:44, 16:48] = 255
    write_mask(tmp_path / "masks" / "house_64.png", drawn)
    out = tmp_path / "e"
    args = ["edit", "--scale", "0.004", "--data", str(data), "--probe", "0", "--output_dir", str(out)]
    result = main([*args, "--methods", "syncsde", "--segmentation", str(tmp_path / "masks"), *FAST])
    assert result["segmentation"] == str(tmp_path / "masks")
    from syncsde.writer import read_image

    edit, src = read_image(out / "syncsde" / "00000.png"), read_image(out / "syncsde" / "00000_source.png")
    keep = 1 - torch.from_numpy(drawn > 127).float()
    expected = float((edit * keep - src * keep).abs().mean())
    ours = {r["label"]: r for r in result["rows"]}["SyncSDE"]["figures"]["BG-LPIPS"]
    assert ours["measured"] == pytest.approx(expected, rel=1e-5)
    own = json.loads((out / "syncsde" / "metrics.json").read_text())["metrics"]["background_lpips"]["value"]
    assert own != pytest.approx(expected)  # the method's own mask gives another figure, which the table does not use
    line = f"BG-LPIPS: the background of each source image outside the masks in {tmp_path / 'masks'}"
    assert any(s.startswith(line) for s in result["substitutions"])
    assert line in (out / "table.md").read_text()
    # a mask of another size is refused before anything runs
    write_mask(tmp_path / "masks" / "house_64.png", drawn[:32])
    with pytest.raises(InputError, match="is 64x32, its source image"):
        main([*args, "--segmentation", str(tmp_path / "masks"), "--output_dir", str(tmp_path / "f"), *FAST])
    assert not (tmp_path / "f").exists()


def test_a_row_runs_only_when_its_method_is_registered(tmp_path, monkeypatch):
    """MasaCtrl's row runs (its denoiser evaluations join the work); with no method of that name registered it keeps
    the paper's figures and adds no work."""
    registry.names("method")  # the core's plug-ins first
    data = tmp_path / "edits.jsonl"
    data.write_text(
        json.dumps(
            {
                "image": str(ROOT / "configs/assets/house_64.png"),
                "source_word": "house",
                "target_word": "tree",
                "prompt": "a red house",
            }
        )
    )
    args = ["edit", "--scale", "0.004", "--data", str(data), "--dry_run", "--output_dir", str(tmp_path / "d")]
    one = 1 * 2 * 50  # 1 image × 2 trajectories × 50 steps
    assert main(args)["evaluations"] == 2 * one
    monkeypatch.delitem(registry._entries["method"], "masactrl")
    assert main(args)["evaluations"] == one


def test_clipseg_masks_of_the_protocol_are_saved_and_said(tiny_clipseg, tmp_path):
    """Each record's source image segmented with its source word, keyed by sample id, saved for a look, and the
    line under the table names the model and the threshold."""
    import argparse

    from syncsde.evaluation.reproduce import Records, segmentation_masks
    from syncsde.writer import read_image

    image = ROOT / "configs/assets/house_64.png"
    recs = Records([{"image": str(image), "source_word": w, "target_word": "tree"} for w in ("house", "sky")], [], [])
    args = argparse.Namespace(segmentation=None, segmentation_model=str(tiny_clipseg), segmentation_threshold=0.5)
    masks, line = segmentation_masks("clipseg", recs, args, tmp_path)
    with Image.open(image) as im:
        expected = seg.clipseg_masks([im.convert("RGB")] * 2, ["house", "sky"], str(tiny_clipseg), 0.5)
    assert sorted(masks) == [0, 1] and all(torch.equal(masks[i], expected[i]) for i in (0, 1))
    assert torch.equal(read_image(tmp_path / "segmentation" / "00001.png")[:1], expected[1])
    assert f"CLIPSeg's mask of its source word ({tiny_clipseg}, sigmoid > 0.5;" in line
