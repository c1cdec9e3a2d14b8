"""The benchmarks' measuring code on tiny models: what they count and compare (their figures come from the real-size
runs in the README, never from these tests)."""

import pytest

from syncsde.testing import save_tiny_sd


def test_panorama_counts_each_methods_network_work(monkeypatch):
    """At equal output size (512×2048), SyncSDE's 13 windows at stride 16 against the diffusers pipeline's 25 at
    stride 8: the UNet rows counted by the hook are the windows × 2 CFG branches × steps."""
    import syncsde.testing
    from syncsde.evaluation.benchmarks import panorama

    monkeypatch.setattr(syncsde.testing, "save_random_sd2", lambda path: save_tiny_sd(path, sample_size=64))
    data = panorama.main(["--repeats", "1", "--steps", "1"])
    rows = {name: m["unet_rows"] for name, m in data["medians"].items()}
    assert list(rows.values()) == [13 * 2, 25 * 2]
    assert all(m["cpu_s"] >= m["unet_cpu_s"] > 0 for m in data["medians"].values())


def test_overhead_pairs_each_strategy_step_with_its_denoiser_call():
    """One (strategy, denoiser) pair per sampling step and run, the strategy timed apart from the network."""
    from syncsde.evaluation.benchmarks import overhead

    data = overhead.main(["--steps", "2", "--repeats", "2", "--width", "640", "--no-readme"])
    assert data["windows"] == 2
    for row in data["rows"].values():
        assert row["pairs"] == 2 * 2
        assert 0 < row["strategy_ms"] < row["denoiser_ms"]
        assert row["ratio"] == pytest.approx(row["strategy_ms"] / row["denoiser_ms"], rel=1)


def test_recipes_benchmark_times_both_memory_formats(monkeypatch):
    """Each recipe is trained in both memory formats; the recipes' own (channels-last) really is channels-last."""
    import torch

    from syncsde.evaluation.benchmarks import recipes
    from syncsde.tiny import train

    formats = []
    fit_start = train._Recipe.on_fit_start

    def spy(self):
        fit_start(self)
        formats.append(self.vae.encoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last))

    monkeypatch.setattr(train._Recipe, "on_fit_start", spy)
    threads = torch.get_num_threads()
    try:
        rows = recipes.main(
            ["--steps", "3", "--repeats", "1", "--recipes", "train_vae", "--threads", "1", "--no-readme"]
        )
    finally:
        torch.set_num_threads(threads)  # main sets the process's thread count
    assert formats == [True]  # the default-format run does not go through the recipes' on_fit_start
    (row,) = rows
    assert row["default_s"] > 0 and row["channels_last_s"] > 0
    assert row["speed-up"] == pytest.approx(row["default_s"] / row["channels_last_s"])
