"""DoubleTake (BASELINES.md §13) against the public code's arithmetic (priorMDM, re-derived here) and its limits."""

import pytest
import torch

from syncsde.coupling import SyncProblem
from syncsde.errors import InputError
from syncsde.sampler import sample, sample_generator
from syncsde.schedule import SD_SCHEDULER, Schedule
from syncsde.strategies import DoubleTake, Independent
from syncsde.strategies.doubletake import shake, transition_windows
from syncsde.windows import Windows

N, C, W, H = 3, 2, 32, 4  # segments, channels, frames per segment, handshake frames


def eps_model(x, step):
    """A deterministic stand-in for the network that mixes frames (so that pinned frames matter to the others)."""
    return 0.3 * x + 0.1 * torch.roll(x, 1, -1) + 0.05 * torch.sin(step.t / 100 + x)


def problem(denoise=eps_model, overlap=H):
    win = Windows(W + (W - overlap) * (N - 1), W, W - overlap)
    return SyncProblem(N, win.couplings(), canonical=win.canonical((C, 1)), denoise=denoise)


def run(strategy, kind="ddpm", steps=6, seed=0, prob=None):
    schedule = Schedule.from_config(SD_SCHEDULER, steps, kind=kind)
    x_T = torch.randn(2, N, C, 1, W, generator=torch.Generator().manual_seed(seed))
    generators = [sample_generator(seed, i) for i in range(2)]
    return sample(eps_model, x_T, schedule, strategy, prob or problem(), generators)


class Spy:
    """Records the state each step returns."""

    def __init__(self, inner):
        self.inner, self.states = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def step(self, *args):
        out = self.inner.step(*args)
        self.states.append(out.clone())
        return out


def test_off_is_independent_exactly():
    off = DoubleTake(handshake=False, second_take=False)
    assert torch.equal(run(off), run(Independent()))
    assert not torch.equal(run(DoubleTake(second_take=False)), run(Independent()))  # the comparison can fail


def test_handshake_frames_agree_after_every_step():
    spies = {"doubletake": Spy(DoubleTake()), "independent": Spy(Independent())}
    for spy in spies.values():
        run(spy)
    for state in spies["doubletake"].states:
        assert torch.equal(state[:, :-1, ..., W - H :], state[:, 1:, ..., :H])
    assert len(spies["doubletake"].states) == 6
    last = spies["independent"].states[-1]
    assert not torch.allclose(last[:, :-1, ..., W - H :], last[:, 1:, ..., :H])


def public_unfolding(sample, lengths, handshake):
    """priorMDM's unfolding blend after a step (``p_sample_loop`` with ``arb_len``), in place on (bs, feats, 1,
    frames): for each consecutive pair, suffix·(1 − α) + prefix·α with α = k/h, written into both."""
    alpha = torch.arange(0, handshake, 1) / handshake
    for i, length in zip(range(1, sample.shape[0]), lengths):
        suffix = sample[i - 1, :, :, -handshake + length : length]
        prefix = sample[i, :, :, :handshake]
        blend = suffix * (1 - alpha) + prefix * alpha
        sample[i - 1, :, :, -handshake + length : length] = blend
        sample[i, :, :, :handshake] = blend
    return sample


def test_handshake_equals_the_public_arithmetic():
    x = torch.randn(1, N, C, 1, W, generator=torch.Generator().manual_seed(3))
    reference = public_unfolding(x[0].clone(), [W] * N, H)
    assert torch.equal(shake(x, H)[0], reference)
    assert torch.equal(shake(x, H)[0, :, ..., H : W - H], x[0, :, ..., H : W - H])  # only handshake frames change
    assert not torch.equal(reference, x[0])


def test_mask_equals_the_public_code():
    b = 3
    m = DoubleTake(blend_len=b).mask(N, W, H)
    p = (W - H) // 2
    # the public code's mask over a transition whose handshake starts at frame p: ones, ramps, zeros
    ref = torch.ones(W)
    ref[p : p + H] = 0
    ref[p - b : p] = torch.arange(0.85, 0.0, -0.85 / b)
    ref[p + H : p + H + b] = torch.arange(0.0, 0.85, 0.85 / b)
    torch.testing.assert_close(m[0], ref, rtol=0, atol=1e-7)
    assert torch.equal(m[0], m[1]) and torch.equal(m[-1], torch.ones(W))  # the last row is the pinned filler
    flat = DoubleTake(blend_len=1).mask(N, W, H)[0]  # blend_len < 2: the handshake alone
    assert torch.equal(flat, (~((torch.arange(W) >= p) & (torch.arange(W) < p + H))).float())


def test_transition_windows_centre_the_handshake():
    x = torch.randn(1, N, C, 1, W)
    win, p = transition_windows(x, H), (W - H) // 2
    assert win.shape == (1, N - 1, C, 1, W)
    assert torch.equal(win[:, :, ..., : p + H], x[:, :-1, ..., W - H - p :])  # segment i's tail with the handshake
    assert torch.equal(win[:, :, ..., p + H :], x[:, 1:, ..., H : W - p])  # then segment i+1 after the handshake


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_second_take_changes_only_the_blend_windows(kind):
    b = 3
    first = run(DoubleTake(blend_len=b, second_take=False), kind=kind)
    both = run(DoubleTake(blend_len=b), kind=kind)
    window = torch.zeros(N, W, dtype=torch.bool)  # the frames the second take re-samples, per segment
    window[:-1, W - H - b :] = True
    window[1:, : H + b] = True
    outside = ~window.view(1, N, 1, 1, W).expand_as(first)
    assert torch.equal(both[outside], first[outside])
    changed = (both - first).abs().amax(dim=(0, 2, 3))  # (N, W)
    assert (changed[window] > 1e-4).all()
    assert torch.equal(both[:, :-1, ..., W - H :], both[:, 1:, ..., :H])  # the handshakes still agree


def test_second_take_starts_at_skip():
    calls = []

    def counting(x, step):
        calls.append(step.index)
        return eps_model(x, step)

    run(DoubleTake(skip=0.5), steps=6, prob=problem(counting))
    assert calls == [3, 4, 5]


def test_refusals():
    with pytest.raises(InputError, match="overlapping by at most half.*overlap to at most 16"):
        run(DoubleTake(), prob=problem(overlap=17))
    with pytest.raises(InputError, match=r"at least 2·\(overlap \+ blend_len\) = 34 frames.*blend_len"):
        run(DoubleTake(blend_len=13))
    with pytest.raises(InputError, match="provides denoise.*--model.strategy.second_take false"):
        run(DoubleTake(), prob=problem(denoise=None))
    with pytest.raises(InputError, match="--model.strategy.skip 1.0"):
        DoubleTake(skip=1.0)
    assert DoubleTake().needs() == {"canonical", "denoise"} and DoubleTake(second_take=False).needs() == {"canonical"}


def test_motion_task_gives_its_denoiser_and_the_method_its_overlap():
    from syncsde.backbones import GaussianBackbone
    from syncsde.motion.procedural import ProceduralMotion
    from syncsde.registry import get
    from syncsde.tasks import LongMotion, MaskTextToImage

    options = get("method", "doubletake").options("motion")
    assert options == {"overlap": 20, "init_from_canonical": False}
    task = LongMotion(ProceduralMotion(clips=4, rank=2), DoubleTake(), num_inference_steps=4, guidance_scale=1.0,
                      progress=False, **options)  # fmt: skip
    batch = [{"texts": ["a person walks", "a person jumps"], "sample_id": 0, "seed": 0}]
    x0 = task.trajectories(batch)
    assert torch.equal(x0[:, 0, ..., 100:], x0[:, 1, ..., :20])
    first = LongMotion(ProceduralMotion(clips=4, rank=2), DoubleTake(second_take=False), num_inference_steps=4,
                       guidance_scale=1.0, progress=False, **options).trajectories(batch)  # fmt: skip
    assert not torch.equal(x0, first) and torch.equal(x0[:, 0, ..., :90], first[:, 0, ..., :90])
    with pytest.raises(InputError, match="DoubleTake needs a task that provides denoise.*tasks that do: .*motion"):
        MaskTextToImage(GaussianBackbone(), DoubleTake(), progress=False)  # declares its own provisions, without it
