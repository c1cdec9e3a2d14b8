"""Real-image editing (SYNCSDE.md §6.2): mask construction, inversion, couplings, attention statistics."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from syncsde.attention import (
    AttentionRecorder,
    edit_mask,
    find_word,
    missing_word_error,
    replace_word,
    word_token_columns,
)
from syncsde.backbones import GaussianBackbone, StableDiffusion
from syncsde.backbones.base import guided_eps
from syncsde.coupling import SyncProblem
from syncsde.data import ImageEditDataModule
from syncsde.errors import InputError
from syncsde.sampler import invert, sample
from syncsde.schedule import Schedule
from syncsde.strategies import Independent, SyncSDE
from syncsde.tasks import ImageEdit
from syncsde.testing import byte_level_clip_tokenizer


def test_edit_mask_on_constructed_attention():
    cross = torch.zeros(1, 4, 4)
    cross[0, :2, :2] = 1.0  # the word attends to the top-left quarter
    identity = torch.eye(16)[None]
    assert torch.equal(edit_mask(cross, identity)[0, 0], (cross[0] > 0.3).float())
    # self-attention: each pixel spreads half its attention to itself and half uniformly over its row
    rows = torch.zeros(16, 16)
    for p in range(16):
        rows[p, (p // 4) * 4 : (p // 4) * 4 + 4] = 0.5 / 4
        rows[p, p] += 0.5
    m = edit_mask(cross, rows[None])[0, 0]
    smooth = (rows @ cross[0].flatten()).view(4, 4)  # top rows: 0.75 inside the word, 0.25 beside it
    assert torch.allclose(smooth[0], torch.tensor([0.75, 0.75, 0.25, 0.25]))
    assert torch.equal(m, (smooth > 0.3).float()) and m.sum() == 4
    with pytest.raises(InputError, match="sizes differ"):
        edit_mask(cross, torch.eye(9)[None])


def test_word_columns_and_target_prompt():
    tok = byte_level_clip_tokenizer()  # no merges: one token per character
    assert find_word("a cat on grass.", "cat") == 1 and find_word("A Cat, sitting", "cat") == 1
    assert find_word("a dog on grass", "cat") is None
    assert word_token_columns(tok, "a cat on grass.", 1) == [2, 3, 4]
    assert word_token_columns(tok, "A Cat, sitting", 1) == [2, 3, 4, 5]  # "cat," has 4 characters
    assert replace_word("a photo of a cat.", 4, "cat", "dog") == "a photo of a dog."
    assert replace_word("two cats on grass", 1, "cat", "dog") == "two dogs on grass"  # the official substring rule
    assert replace_word("a kitten on grass", 1, "cat", "dog") == "a dog on grass"  # a CLIP-found word: replaced
    with pytest.raises(InputError, match="its words are: a, dog, on, grass"):
        raise missing_word_error("a dog on grass", "cat")


def test_inversion_reconstructs_gaussian():
    """With an exact denoiser, invert-then-sample returns x0 up to DDIM's first-order discretisation error:
    measured max |error| 0.31, 0.058, 0.014 at 10, 50, 200 steps (x0 std 0.5). Stated tolerances below."""
    b = GaussianBackbone(channels=3, sample_size=8, scale_factor=1, std=0.5)
    ctx = b.encode_prompts(["x"])

    def denoise(x, step):
        return guided_eps(b, x.flatten(0, 1), step, ctx.expand(x.shape[0] * x.shape[1], -1), None, 1.0).view_as(x)

    x0 = 0.5 * torch.randn(2, 1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    errors = {}
    for steps in (10, 50, 200):
        sch = Schedule.from_config(b.scheduler_config(), steps)
        x_T = invert(denoise, x0, sch)
        assert 0.9 < x_T.std() < 1.1  # actually noised to the prior
        errors[steps] = float((sample(denoise, x_T, sch, Independent(), SyncProblem(1)) - x0).abs().max())
    assert errors[10] > errors[50] > errors[200]
    assert errors[50] < 0.08 and errors[200] < 0.02


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray((np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_edit_task_on_tiny_sd(tiny_sd_dir, image):
    task = ImageEdit(StableDiffusion(str(tiny_sd_dir)), SyncSDE(5.0), mask_res=4, num_inference_steps=6, progress=False)
    rec = {
        "image": str(image),
        "prompt": "a cat on grass",
        "source_word": "cat",
        "target_word": "dog",
        "sample_id": 0,
        "seed": 0,
    }
    batch = task.prepare([rec])
    s = batch[0]
    assert s["target_prompt"] == "a dog on grass" and set(s["mask"].unique().tolist()) <= {0.0, 1.0}
    assert s["mask"].shape == (1, 8, 8) and s["x_T"].shape == (4, 8, 8)
    prompts = task.trajectory_prompts(batch)[0]
    assert prompts == [
        ("a cat on grass", "a cat on grass"),
        ("a dog on grass", ""),
        ("a dog on grass", "a cat on grass"),
    ]
    x_T = task.initial_noise(batch, [torch.Generator().manual_seed(0)])[0]
    assert torch.equal(x_T[0], s["x_T"]) and torch.equal(x_T[2], s["x_T"]) and not torch.equal(x_T[1], s["x_T"])
    m = s["mask"][None]
    got = {(c.target, c.source): c.weight for c in task.problem(batch).couplings}
    assert set(got) == {(1, 0), (2, 0), (2, 1)}
    assert torch.equal(got[(1, 0)], 1 - m) and torch.equal(got[(2, 0)], 1 - m) and torch.equal(got[(2, 1)], m)
    out = task.run([rec])[0]
    assert out.image.shape == (3, 64, 64) and set(out.extras) == {"reconstruction", "mask", "source"}


def test_attention_running_means_constant_memory(tiny_sd_dir):
    sd = StableDiffusion(str(tiny_sd_dir))
    sch = Schedule.from_config(sd.scheduler_config(), 5)
    cond = sd.encode_prompts(["a cat on grass"])
    with AttentionRecorder(sd.unet, mask_res=4) as rec:
        for step in sch:
            rec.begin_step([[2, 3, 4]])
            guided_eps(sd, torch.randn(1, 4, 8, 8), step, cond, None, 1.0)
            rec.end_step()
            assert isinstance(rec.self_sum, torch.Tensor) and rec.self_sum.shape == (1, 64, 64)  # one running sum
    cross, A = rec.means()
    assert rec.steps == 5 and cross.shape == (1, 8, 8) and 0 <= cross.min() and cross.max() <= 1
    torch.testing.assert_close(A.sum(-1), torch.ones(1, 64))  # row-stochastic
    assert all(type(p).__name__ != "_Recording" for p in sd.unet.attn_processors.values())  # restored


def test_attention_recorder_takes_a_steps_rows_in_several_calls(tiny_sd_dir):
    sd = StableDiffusion(str(tiny_sd_dir))
    sch = Schedule.from_config(sd.scheduler_config(), 3)
    cond = sd.encode_prompts(["a cat on grass", "a dog in the snow"])
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def means(max_batch):
        with AttentionRecorder(sd.unet, mask_res=8) as rec:
            for step in sch:
                rec.begin_step([[2], [3, 4]])
                guided_eps(sd, x, step, cond, None, 1.0, max_batch)
                rec.end_step()
        return rec.means()

    for split, whole in zip(means(1), means(None)):  # two calls of one row, or one of two
        torch.testing.assert_close(split, whole)


def test_edit_records_and_errors(tmp_path, image):
    (tmp_path / "edits.jsonl").write_text(
        json.dumps({"image": "cat.png", "source_word": "cat", "target_word": "dog"}) + "\n"
    )
    dm = ImageEditDataModule(records_file=str(tmp_path / "edits.jsonl"), base_dir=str(tmp_path))
    assert dm.samples()[0]["image"] == str(image)
    with pytest.raises(InputError, match="UNet"):
        ImageEdit(GaussianBackbone(), progress=False)


def test_captioner_writes_missing_source_prompts(tiny_sd_dir, image, tmp_path):
    from syncsde.backbones.captioner import Captioner
    from syncsde.errors import ModelNotFoundError
    from syncsde.testing import save_tiny_blip

    captioner = Captioner(str(save_tiny_blip(tmp_path / "blip")), max_length=10)
    caption = captioner([torch.rand(3, 40, 50)])[0]
    assert isinstance(caption, str) and caption
    rec = {"image": str(image), "source_word": "zebra", "target_word": "dog", "sample_id": 0, "seed": 0}
    task = ImageEdit(
        StableDiffusion(str(tiny_sd_dir)), mask_res=4, num_inference_steps=2, missing_word="error", progress=False
    )
    with pytest.raises(InputError, match="no prompt"):
        task.prepare([rec])
    task.captioner = captioner
    with pytest.raises(
        InputError, match="source word 'zebra' is not in the source prompt"
    ):  # names the caption's words
        task.prepare([rec])
    with pytest.raises(ModelNotFoundError, match="cannot load captioner"):
        Captioner(str(tmp_path / "missing")).load()


def test_captioner_loads_only_for_records_without_a_prompt(tiny_sd_dir, image, tmp_path):
    """A captioner whose weights do not exist (configs/edit_sdxl.yaml without BLIP downloaded): records that carry a
    prompt run; a record without one stops on the one-line "cannot load captioner" error."""
    from syncsde.backbones.captioner import Captioner
    from syncsde.errors import ModelNotFoundError

    task = ImageEdit(
        StableDiffusion(str(tiny_sd_dir)),
        mask_res=4,
        num_inference_steps=2,
        captioner=Captioner(str(tmp_path / "missing")),
        progress=False,
    )
    rec = {"image": str(image), "source_word": "cat", "target_word": "dog", "sample_id": 0, "seed": 0}
    assert task.run([{**rec, "prompt": "a cat on grass"}])[0].image.shape == (3, 64, 64)
    assert task.captioner.model is None
    with pytest.raises(ModelNotFoundError, match="cannot load captioner .*missing.* without \"prompt\"") as e:
        task.prepare([rec])
    assert "\n" not in str(e.value)


def test_captioner_generates_as_lavis_blip_caption(tmp_path):
    """The official captioner (salesforce-lavis blip_caption base_coco): decoder prompt "a picture of ", 3 beams,
    10 to 30 tokens counting the prompt, the prompt's characters cut from the decoded caption."""
    from syncsde.backbones.captioner import Captioner
    from syncsde.testing import save_tiny_blip

    captioner = Captioner(str(save_tiny_blip(tmp_path / "blip"))).load()  # the defaults are LAVIS' settings
    img = torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(0))
    proc, model = captioner.processor, captioner.model
    inputs = proc(images=[(img * 255).byte()], text=["a picture of "], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            pixel_values=inputs.pixel_values, input_ids=inputs.input_ids, num_beams=3, min_length=10, max_length=30
        )
    assert 10 <= out.shape[1] <= 30
    assert captioner([img]) == [proc.batch_decode(out, skip_special_tokens=True)[0][len("a picture of ") :].strip()]


def test_a_missing_source_word_is_announced_once_per_record(tiny_sd_dir, image, capsys):
    """missing_word: clip edits the caption word nearest to the absent source word by CLIP text similarity; one line
    says which (the sidecar's source_word_used was the only trace)."""
    task = ImageEdit(
        StableDiffusion(str(tiny_sd_dir)), mask_res=4, num_inference_steps=2, clip_model="syncsde:tiny-clip",
        progress=False,
    )  # fmt: skip
    rec = {"image": str(image), "prompt": "a cat over grass", "source_word": "zebra", "target_word": "dog", "seed": 0}
    task.run([{**rec, "sample_id": 0}, {**rec, "sample_id": 1, "prompt": "a dog on grass"}])
    lines = [line for line in capsys.readouterr().err.splitlines() if "zebra" in line]
    used = "a cat over grass".split()[task._clip_words.nearest("zebra", "a cat over grass".split())]
    assert len(lines) == 2  # one per record
    assert lines[0] == (
        f"syncsde: 'zebra' is not in the prompt 'a cat over grass'; editing '{used}' instead (the nearest word by "
        "CLIP text similarity; missing_word: error refuses instead)"
    )
    assert "'a dog on grass'" in lines[1]


def test_edit_progress_counts_every_step_of_a_batch(tmp_path, monkeypatch):
    """The edit runs the inversion, the mask's reconstruction and the edit: 3 × 2 steps at 2 steps, counted as such
    (it showed "step 6/2")."""
    from pathlib import Path

    from syncsde.cli import main
    from syncsde.progress import Reporter

    seen = []
    step = Reporter.step
    monkeypatch.setattr(Reporter, "step", lambda self: (step(self), seen.append((self.batch_steps, self.expected))))
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    main(
        ["predict", "--config", "configs/tiny/edit.yaml", "--model.num_inference_steps", "2", "--output_dir",
         str(tmp_path)]
    )  # fmt: skip
    assert seen[:6] == [(i, 6) for i in range(1, 7)] and all(done <= expected for done, expected in seen)
