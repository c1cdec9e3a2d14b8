"""The task base class: a LightningModule whose ``predict_step`` runs synchronized sampling (ARCHITECTURE.md).

A task states the geometry of one problem — trajectories, their prompts and initial noise, the couplings, and
the assembly of the output — and never steps a scheduler itself. Subclasses implement :meth:`trajectory_prompts`,
:meth:`initial_noise`, :meth:`problem` and :meth:`assemble`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable, Literal, NamedTuple, Sequence

import torch
import torch.distributed as dist
from jsonargparse import lazy_instance
from jsonargparse.typing import NonNegativeFloat, PositiveInt
from lightning import LightningModule
from torch import Tensor

from syncsde.backbones.base import Backbone, Conditioning, guided_eps, take_rows
from syncsde.console import warn_once
from syncsde.coupling import Denoise, Differentiable, SyncProblem
from syncsde.errors import InputError
from syncsde.parallel import WindowSplit
from syncsde.registry import check
from syncsde.sampler import sample, sample_generator
from syncsde.schedule import Schedule, abar_function
from syncsde.strategies import Strategy, SyncSDE

SAMPLER_DTYPES = {"float32": torch.float32, "float16": torch.float16}
DEFAULT_STRATEGY = lazy_instance(SyncSDE)  # the paper's update (1/λ = 5): every task's default


@dataclass
class SampleOutput:
    """One finished sample: the main image (3, H, W) in [0, 1], its sidecar metadata, extra images by name,
    animations (lists of frames) by name, the (image, text) pairs the CLIP score judges (default: the main image
    with the sample's prompt), and arrays by name."""

    sample_id: int
    image: Tensor
    meta: dict
    extras: dict[str, Tensor] = field(default_factory=dict)
    animations: dict[str, list[Tensor]] = field(default_factory=dict)
    scored: list[tuple[Tensor, str]] = field(default_factory=list)
    arrays: dict[str, Any] = field(default_factory=dict)  # saved as <id>_<name>.npy (numpy arrays or tensors)
    files: dict[str, bytes] = field(default_factory=dict)  # saved as <id>/<name> (files that refer to each other)

    def clip_pairs(self) -> list[tuple[Tensor, str]]:
        return self.scored or [(self.image, self.meta.get("target_prompt") or self.meta.get("prompt", ""))]


class NetworkCall(NamedTuple):
    """One network call of a step: on ``trajectories`` of every sample, i.e. on ``rows`` of the (B·N)-row stack of
    a batch's trajectories (row b·N + j: trajectory j of sample b); ``run()`` gives their ε."""

    trajectories: Sequence[int]
    rows: list[int]
    run: Callable[[], Tensor]


@contextmanager
def count_rows(module: torch.nn.Module):
    """Counts the rows ``module`` is called on (yields a one-element list, updated in place): the network
    evaluations (NFE) of a batch, every guidance branch, inversion step and extra call of a strategy included."""
    count = [0]

    def hook(_module, args, kwargs):
        x = args[0] if args else next(iter(kwargs.values()))
        count[0] += int(x.shape[0])

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield count
    finally:
        handle.remove()


class SyncTask(LightningModule):
    """Base of every task.

    A task declares ``needs``, the backbone abilities it relies on, and ``provides``, what it gives strategies
    (:mod:`syncsde.registry`); both are checked once, when the task is built. Subclasses take their own options and
    pass the rest on (``**kwargs``), so the options below are declared here only.

    Args:
        backbone: the pretrained denoiser (:class:`~syncsde.backbones.Backbone`).
        strategy: how trajectories interact (default SyncSDE, the paper's update; ``--method NAME`` picks a method).
        num_inference_steps: sampler steps S.
        guidance_scale: classifier-free guidance weight w.
        negative_prompt: prompt of the unconditional branch.
        sampler: "ddim" (η = ``eta``) or "ddpm".
        eta: DDIM η (0 = deterministic).
        sampler_dtype: dtype of the sampler state — the trajectories between network calls and each step's
            arithmetic: "float32" (default), or "float16" as the official code keeps it (``--use_float_16``, README
            "Differences from the official code"). The network runs in the backbone's own dtype either way.
        max_batch: split the one network call per step into chunks of at most this many rows (memory); None = one call.
        progress: show a progress bar over steps.
        parallel: how a run's processes (``--trainer.devices N --trainer.strategy ddp``) share the work: ``samples``
            (each sample on one process) or ``windows`` (every sample on all processes, each running a contiguous
            share of its windows and exchanging overlaps every step: :mod:`syncsde.parallel`, README "One canvas on
            many devices"); only tasks whose trajectories are windows of one canvas (wide images, 2-D canvases) or
            views of one object (the mesh) support ``windows``.
        window_batch: trajectories per network call, in fixed groups of a sample's trajectories (each call holds
            both guidance branches); None = all in one call, or one per call with ``parallel: windows``. The
            network's float results depend on how many rows a call has, so bitwise equal runs need equal groups.
    """

    task_name = "task"
    window_parallel = False  # whether parallel: windows applies (trajectories are windows of one canvas, or views)
    needs: frozenset[str] = frozenset({"images", "vp_schedule"})  # of the backbone (syncsde.registry.ABILITIES)
    # to strategies (syncsde.registry.PROVISIONS); "denoise" is filled here, by the base task's sampling
    provides: frozenset[str] = frozenset({"couplings", "canonical", "denoise"})

    def __init__(
        self,
        backbone: Backbone,
        strategy: Strategy = DEFAULT_STRATEGY,
        num_inference_steps: PositiveInt = 50,
        guidance_scale: float = 7.5,
        negative_prompt: str = "",
        sampler: Literal["ddim", "ddpm"] = "ddim",
        eta: NonNegativeFloat = 0.0,
        sampler_dtype: Literal["float32", "float16"] = "float32",
        max_batch: PositiveInt | None = None,
        progress: bool = True,
        parallel: Literal["samples", "windows"] = "samples",
        window_batch: PositiveInt | None = None,
    ):
        super().__init__()
        if parallel not in ("samples", "windows"):
            raise InputError(f"parallel must be samples or windows, got {parallel!r}")
        if parallel == "windows" and not self.window_parallel:
            raise InputError(
                f"parallel: windows splits the windows of one canvas over processes; the {self.task_name} task has "
                "none (the wide_image task has: wide images and 2-D canvases; the mesh task: views); use "
                "parallel: samples"
            )
        if sampler_dtype not in SAMPLER_DTYPES:
            raise InputError(f"sampler_dtype must be one of {', '.join(SAMPLER_DTYPES)}, got {sampler_dtype!r}")
        check(self, backbone, strategy)
        if parallel == "windows" and strategy.needs() & {"denoise", "differentiable"}:
            raise InputError(
                f"{type(strategy).__name__} calls the network again within a step, on windows of its choice, which "
                "parallel: windows does not split; use parallel: samples"
            )
        if backbone.guidance_distilled and negative_prompt:
            raise InputError(
                f"{backbone.name} is guidance-distilled (no unconditional branch): it takes no negative prompt; "
                'set negative_prompt to ""'
            )
        self.backbone = backbone
        self.strategy = strategy
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.negative_prompt = negative_prompt
        self.sampler = sampler
        self.eta = eta
        self.sampler_dtype = sampler_dtype
        self.max_batch = max_batch
        self.progress = progress
        self.parallel, self.window_batch = parallel, window_batch
        self.split: WindowSplit | None = None  # the last sampling's share of the windows (parallel: windows)

    # -- what a task states -------------------------------------------------------------------------------
    def trajectory_prompts(self, batch: Sequence[dict]) -> list[list[str | tuple[str, str]]]:
        """For each sample, the prompt of each of its N trajectories: a string (with the task's negative prompt)
        or a (prompt, negative prompt) pair."""
        raise NotImplementedError

    def initial_noise(self, batch: Sequence[dict], generators: Sequence[torch.Generator]) -> Tensor:
        """x_T of shape (B, N, ...), drawn on the CPU from each sample's own generator."""
        raise NotImplementedError

    def problem(self, batch: Sequence[dict]) -> SyncProblem:
        """The couplings between trajectories (and geometry for baseline strategies)."""
        raise NotImplementedError

    def assemble(self, x0: Tensor, batch: Sequence[dict]) -> list[SampleOutput]:
        """Turn the final trajectories (B, N, ...) into outputs."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Task parameters for the sidecars."""
        return {}

    def settings(self, device: torch.device | None = None) -> dict:
        """Everything that changes a sample besides its record and seed, as written into its sidecar (a resumed
        run must match the folder's samples on these): among them the backbone's (:meth:`Backbone.settings`: the
        dtype its network runs in on ``device``, default this module's) and the rows of a network call
        (``window_batch``, ``max_batch``; the data's ``batch_size`` is in each record), as the network's float
        results depend on them."""
        strategy, task = self.strategy.describe(), self.describe()
        clash = sorted((strategy.keys() & task.keys()) - {"method"})
        if clash:  # one value would overwrite the other in the sidecar: a folder that lies about its samples
            raise ValueError(f"{type(self.strategy).__name__} and the {self.task_name} task both describe {clash}")
        return {
            "task": self.task_name,
            **strategy,
            "steps": self.num_inference_steps,
            "sampler": self.sampler,
            "eta": self.eta,
            "sampler_dtype": self.sampler_dtype,
            "guidance_scale": self.guidance_scale,
            "negative_prompt": self.negative_prompt,
            **self.backbone.settings(device or self.device),
            "window_batch": self.call_group,
            "max_batch": self.max_batch,
            **task,
        }

    def validate(self, record: dict) -> None:
        """Check one record cheaply, without sampling: whatever would stop its sample later (a mask empty at the
        working size, a view that does not apply, a text the backbone cannot read) stops here with one line. The CLI
        validates every pending record before anything is written into the output folder, so a run that fails on a
        bad record leaves the folder as it was. Tasks extend it."""

    def prepare(self, batch: Sequence[dict]) -> list[dict]:
        """Per-batch work before sampling (e.g. inversion); returns the records, possibly with more keys."""
        return list(batch)

    # -- the shared machinery -----------------------------------------------------------------------------
    @property
    def native_size(self) -> int:
        """The backbone's native output size in pixels (512 for SD-2-base, 64 for IF stage I)."""
        return self.backbone.sample_size * self.backbone.scale_factor

    @property
    def call_group(self) -> int | None:
        """Trajectories per network call (``window_batch``; one under ``parallel: windows`` unless set; None: all)."""
        return self.window_batch or (1 if self.parallel == "windows" else None)

    @property
    def state_dtype(self) -> torch.dtype:
        """The dtype of the sampler state (``sampler_dtype``)."""
        return SAMPLER_DTYPES[self.sampler_dtype]

    def schedule(self, shape: Sequence[int] | None = None) -> Schedule:
        """The inference schedule for trajectories of working-space ``shape`` (C, h, w)."""
        return self.backbone.schedule(self.num_inference_steps, self.sampler, self.eta, shape=shape)

    def on_predict_start(self) -> None:
        self.backbone.adapt_dtype(self.device)

    def conditioning(self, batch: Sequence[dict]) -> tuple[Conditioning, Conditioning | None]:
        """Text conditioning for all B·N trajectories (each distinct prompt encoded once); the unconditional rows only
        when classifier-free guidance runs (w ≠ 1 and a backbone without embedded guidance)."""
        pairs = [
            p if isinstance(p, tuple) else (p, self.negative_prompt)
            for sample_prompts in self.trajectory_prompts(batch)
            for p in sample_prompts
        ]
        guided = self.guidance_scale != 1.0 and not self.backbone.guidance_distilled
        unique = sorted({text for pair in pairs for text in (pair if guided else pair[:1])})
        self.warn_overlong(unique)
        emb = self.backbone.encode_prompts(unique)
        pos = {p: i for i, p in enumerate(unique)}
        cond = take_rows(emb, [pos[p] for p, _ in pairs])
        uncond = take_rows(emb, [pos[n] for _, n in pairs]) if guided else None
        return cond, uncond

    def warn_overlong(self, prompts: Sequence[str]) -> None:
        """One warning per run when a prompt is longer than the text encoder reads (its end is cut off)."""
        limit = self.backbone.token_limit
        if limit is None:
            return
        for prompt, count in zip(prompts, self.backbone.token_counts(prompts)):
            if count > limit:
                text = prompt if len(prompt) <= 30 else prompt[:27] + "..."
                warn_once(
                    "overlong prompt",
                    f"the prompt '{text}' has {count} tokens; {self.backbone.name}'s text encoder reads {limit} (start "
                    "and end included) and ignores the rest: shorten it",
                )

    @torch.no_grad()
    def trajectories(self, batch: Sequence[dict], x_T: Tensor | None = None) -> Tensor | None:
        """Synchronized sampling of all trajectories of a batch: x_T (B, N, ...) → x_0 (float32, whatever the sampler
        state's dtype). ``x_T`` overrides the initial noise seeded from (seed, sample_id). With ``parallel: windows``
        on several processes, process 0 gets x_0 and the others None."""
        return self._sample(self.prepare(batch), x_T)

    def _sample(self, batch: Sequence[dict], x_T: Tensor | None) -> Tensor | None:
        generators = [sample_generator(s["seed"], s["sample_id"]) for s in batch]
        if x_T is None:
            x_T = self.initial_noise(batch, generators)
        x_T = x_T.to(self.device, self.state_dtype)
        cond, uncond = self.conditioning(batch)
        problem = self.problem(batch).to(self.device, self.state_dtype)  # placed once: nothing moves per step
        variance = "learned_variance" in self.strategy.uses
        B, N = x_T.shape[:2]
        split = self.window_split(problem)
        rows = split.own if split is not None else range(N)  # the trajectories this process denoises
        group = self.call_group or N

        def network(x: Tensor, step, rows: Sequence[int]) -> Tensor:  # x: (B, len(rows), ...), in fixed groups
            calls = []
            for a in range(0, x.shape[1], group):
                part = x[:, a : a + group]
                index = [b * N + rows[a + k] for b in range(B) for k in range(part.shape[1])]
                c, u = cond, uncond
                if len(index) < B * N:
                    c, u = take_rows(cond, index), None if uncond is None else take_rows(uncond, index)
                args = (self.backbone, part.flatten(0, 1), step, c, u, self.guidance_scale, self.max_batch, variance)
                calls.append(NetworkCall(rows[a : a + part.shape[1]], index, partial(guided_eps, *args)))
            eps = self.network_calls(calls, f"step {step.index + 1} of {len(schedule.steps)}")
            return torch.cat([e.view(B, -1, *e.shape[1:]) for e in eps], 1)

        def denoise(x: Tensor, step) -> Tensor:  # the sampler's call: this process's trajectories
            return network(x, step, rows)

        needs = self.strategy.needs()
        if split is None and needs & {"denoise", "differentiable"}:  # more network calls within a step (a strategy's)
            call = lambda x, step, ks: network(x, step, list(ks))  # noqa: E731
            if "denoise" in needs:
                problem = replace(problem, denoise=Denoise(call, abar_function(self.backbone.scheduler_config())))
            if "differentiable" in needs:  # the same call, run by the strategy under torch.enable_grad()
                problem = replace(problem, differentiable=Differentiable(call, self.backbone.decode))
        schedule = self.schedule(x_T.shape[2:])
        self.split = split
        x0 = sample(denoise, x_T, schedule, self.strategy, problem, generators, self.progress, split)
        return None if x0 is None else x0.float()

    def network_calls(self, calls: Sequence[NetworkCall], what: str) -> list[Tensor]:
        """One step's network calls (``what`` names the step), each giving ε of its rows; one after another. A task
        whose network mixes trajectories inside runs them together (the mesh's multi-view attention)."""
        return [call.run() for call in calls]

    def window_split(self, problem: SyncProblem) -> WindowSplit | None:
        """This process's share of the trajectories under ``parallel: windows`` (None: all of them, no exchange)."""
        if self.parallel != "windows":
            return None
        trainer = self._trainer
        if trainer is not None:  # the processes of Lightning's strategy
            rank, world = trainer.global_rank, trainer.world_size
        else:  # plain Python: the default process group, if one is set up
            rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        return WindowSplit(problem, self.strategy.reads(), rank, world, self.call_group)

    def window_count(self, record: dict) -> int:
        """The number of trajectories of the sample ``record`` (what ``parallel: windows`` splits)."""
        return self.problem([record]).num_trajectories

    def check_processes(self, processes: int, todo: Sequence[dict]) -> None:
        """Before any process is launched: stop a run whose work cannot be shared by ``processes`` processes."""
        if self.parallel == "windows":
            WindowSplit.check(self.window_count(todo[0]), self.call_group, processes)
        elif len(todo) < processes:
            raise InputError(
                f"{len(todo)} sample(s) to generate on {processes} processes; use --trainer.devices {len(todo)} or "
                "fewer"
            )

    def setup(self, stage: str) -> None:
        if self.parallel == "windows":  # every process sees every sample (Trainer(use_distributed_sampler=False))
            self.trainer._accelerator_connector.use_distributed_sampler = False
        if "differentiable" in self.strategy.needs():  # its gradients: no_grad, not inference mode (the same values)
            self.trainer.predict_loop.inference_mode = False

    @torch.no_grad()
    def run(self, batch: Sequence[dict], x_T: Tensor | None = None) -> list[SampleOutput]:
        """Sample and assemble one batch; every output carries its sidecar metadata."""
        start = time.perf_counter()
        with count_rows(self.backbone) as rows:
            batch = self.prepare(batch)
            x0 = self._sample(batch, x_T)
        nfe = self.total_rows(rows[0]) / len(batch)
        if x0 is None:  # parallel: windows, a process other than 0: its share is with process 0, which writes
            return []
        outputs = self.assemble(x0, batch)
        seconds = (time.perf_counter() - start) / len(batch)
        common = self.settings()
        for out, s in zip(outputs, batch):
            record = {k: v for k, v in s.items() if isinstance(v, (str, int, float, list))}
            out.meta = {**record, **common, **out.meta, "seconds": round(seconds, 3), "nfe": nfe}
        return outputs

    def total_rows(self, rows: int) -> int:
        """The network rows of a batch over every process that sampled it (``parallel: windows`` splits one batch's
        rows between processes; otherwise each process samples its own batches)."""
        if self.split is None or not dist.is_initialized():
            return rows
        total = torch.tensor(rows, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return int(total.item())

    def predict_step(self, batch: Sequence[dict], batch_idx: int = 0) -> list[SampleOutput]:
        return self.run(batch)

    def generate(self, prompts: Sequence[Any], seed: int = 0, x_T: Tensor | None = None) -> list[SampleOutput]:
        """Plain-Python entry point: sample ids 0..len−1; records are prompts or dicts with a "prompt" key."""
        self.on_predict_start()
        batch = [
            {**(r if isinstance(r, dict) else {"prompt": r}), "sample_id": i, "seed": seed}
            for i, r in enumerate(prompts)
        ]
        return self.run(batch, x_T)
