"""parallel: windows — one sample's windows split over processes (syncsde.parallel): bitwise the unsplit result.

In-process (torch.multiprocessing + gloo, the analytic backbone): every strategy on the wide chain, a 2-D canvas and a
circular panorama, 1 against 3 processes; the mesh on a tiny depth ControlNet with multi-view attention, 1 against 2.
End to end (`syncsde predict` subprocesses, the embedded tiny model): the wide image, the 2-D canvas and the mesh
(SyncSDE with multi-view attention; SyncTweedies) on 1 (parallel: samples), 2 and 3 processes; a process killed
mid-sample (wide, mesh); bad combinations.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from syncsde.backbones import GaussianBackbone
from syncsde.errors import InputError
from syncsde.parallel import WindowSplit
from syncsde.strategies import Independent, MultiDiffusion, SyncSDE, SyncTweedies
from syncsde.task import SyncTask
from syncsde.tasks import WideImage

ROOT = Path(__file__).resolve().parents[1]

STRATEGIES = {
    "syncsde": lambda: SyncSDE(5.0),
    "syncsde-canonical": lambda: SyncSDE(20.0, preset="canonical"),
    "syncsde-chain": lambda: SyncSDE(5.0, preset="chain"),  # reads every trajectory (post-step, in order)
    "syncsde-exact": lambda: SyncSDE(5.0, correction="exact", schedule_floor=1.0),  # couplings, pre-step, pull()
    "syncsde-canonical-pre-step": lambda: SyncSDE(5.0, correlation="canonical", target="pre_step"),
    "synctweedies": lambda: SyncTweedies(2),
    "synctweedies-canonical-x0": lambda: SyncTweedies(5),
    "multidiffusion": lambda: MultiDiffusion(),
    "independent": lambda: Independent(),
}
GEOMETRIES = {
    "wide": dict(height=64, width=160, stride=8),  # 13 windows, a chain
    "canvas": dict(height=128, width=128, stride=32, vertical_stride=32),  # 3 x 3 windows
    "circular": dict(height=64, width=128, stride=16, circular=True),  # 8 windows, wrapping
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_all(rank, world, port, out):
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    batch = [{"prompt": "a", "sample_id": 0, "seed": 0}, {"prompt": "b", "sample_id": 7, "seed": 0}]
    results = {}
    for name, make in STRATEGIES.items():
        for geometry, size in GEOMETRIES.items():
            for parallel in ("windows", "samples") if world == 1 else ("windows",):
                task = WideImage(
                    GaussianBackbone(sample_size=8), make(), num_inference_steps=4, progress=False, parallel=parallel,
                    **size,
                )  # fmt: skip
                task.sampler = "ddpm"  # stochastic steps: the noise of every window is the unsplit run's
                results[name, geometry, parallel] = task.trajectories(batch)
    if rank == 0:
        torch.save(results, out)
    if world > 1:
        dist.destroy_process_group()


def trajectories_on(world: int, tmp_path: Path) -> dict:
    out = tmp_path / f"world{world}.pt"
    if world == 1:
        run_all(0, 1, 0, out)
    else:
        mp.spawn(run_all, (world, free_port(), out), nprocs=world)
    return torch.load(out)


def test_every_strategy_and_geometry_is_bitwise_the_unsplit_run(tmp_path):
    one, three = trajectories_on(1, tmp_path), trajectories_on(3, tmp_path)
    assert len(three) == len(STRATEGIES) * len(GEOMETRIES)
    for name, geometry, _ in three:
        split = three[name, geometry, "windows"]
        assert torch.equal(split, one[name, geometry, "windows"]), (name, geometry)
        # the analytic backbone is exact per row, so here the default unsplit run (one call) is the same bits too
        assert torch.equal(split, one[name, geometry, "samples"]), (name, geometry)


def test_split_owns_contiguous_groups_and_reads_only_overlaps():
    task = WideImage(GaussianBackbone(sample_size=8), SyncSDE(5.0), progress=False, **GEOMETRIES["wide"])
    problem = task.problem([])
    split = WindowSplit(problem, task.strategy.reads(), rank=1, world=3, window_batch=2)
    assert [list(r) for r in split.owned] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11, 12]]  # 7 groups of 2
    # the chain: window 4 reads window 3 on the 7 columns they share (of 8); nobody else
    assert list(split.needs[1]) == [3] and split.needs[1][3].index.numel() == 7 * 8
    canonical = WindowSplit(problem, SyncSDE(5.0, preset="canonical").reads(), rank=1, world=3, window_batch=2)
    # every window sharing a column with windows 4..7 (columns 4..14), each on those columns only
    assert list(canonical.needs[1]) == [0, 1, 2, 3, 8, 9, 10, 11, 12]
    assert canonical.needs[1][0].index.numel() == 4 * 8 and canonical.needs[1][12].index.numel() == 3 * 8
    assert WindowSplit(problem, Independent().reads(), 1, 3, 1).needs[1] == {}
    with pytest.raises(InputError, match="13 windows in groups of window_batch 13 .* use --trainer.devices 1"):
        WindowSplit(problem, task.strategy.reads(), 0, 2, 13)


def test_a_task_without_windows_refuses_parallel_windows():
    with pytest.raises(InputError, match="the task task has none .*wide_image.*use parallel: samples"):
        SyncTask(GaussianBackbone(), SyncSDE(5.0), parallel="windows")


def mesh_views(rank, world, port, folders, out):
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    from syncsde.backbones import StableDiffusionControlNet
    from syncsde.tasks import MeshTexturing

    task = MeshTexturing(
        StableDiffusionControlNet(*folders), SyncSDE(5.0, sync_t_min=0), view_size=64, latent_texture_size=32,
        rgb_texture_size=64, num_inference_steps=5, turntable_frames=0, progress=False, window_batch=3,
        parallel="windows" if world > 1 else "samples",
    )  # fmt: skip
    record = {"mesh": str(ROOT / "configs/assets/ball.obj"), "prompt": "a blue ball", "sample_id": 0, "seed": 0}
    x0 = task.trajectories([record])
    if rank == 0:
        torch.save(x0, out)
    if world > 1:
        dist.destroy_process_group()


def test_mesh_with_depth_controlnet_and_multiview_attention_is_bitwise_the_unsplit_run(tiny_sd_dir, tmp_path):
    """Calls of 3 views (3, 3, 3, 1: threads meeting at every self-attention layer), each with its views' depth
    control; 2 processes own 2 and 2 of the 4 groups and exchange keys/values (t = 801 > 800: the front view's too)."""
    from syncsde.testing import save_tiny_controlnet

    folders = (str(tiny_sd_dir), str(save_tiny_controlnet(tmp_path / "cn", tiny_sd_dir)))
    mesh_views(0, 1, 0, folders, tmp_path / "one.pt")
    mp.spawn(mesh_views, (2, free_port(), folders, tmp_path / "two.pt"), nprocs=2)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert one.shape == (1, 10, 4, 8, 8) and torch.equal(one, two)


# -- end to end ----------------------------------------------------------------------------------------------------
def syncsde(*args, timeout=300, wait=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "syncsde.cli", *args]
    if not wait:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


MESH_RECORD = "[{mesh: configs/assets/ball.obj, prompt: a sunset over the sea}]"


def predict(config: str, out: Path, steps: int, *extra, prompts="[a sunny day, snow]", wait=True):
    data = ["--data.init_args.records", MESH_RECORD] if config == "mesh" else ["--data.init_args.prompts", prompts]
    args = [
        "predict", "--config", f"configs/tiny/{config}.yaml", "--output_dir", str(out), "--trainer.accelerator", "cpu",
        "--trainer.callbacks", "[]", "--trainer.enable_progress_bar", "false", "--model.init_args.progress", "false",
        "--model.init_args.num_inference_steps", str(steps), *data, *extra,
    ]  # fmt: skip
    return syncsde(*args, wait=wait)


def windows(processes: int) -> list[str]:
    extra = ["--model.init_args.parallel", "windows"]
    return extra + (["--trainer.devices", str(processes), "--trainer.strategy", "ddp"] if processes > 1 else [])


def files(folder: Path) -> dict:
    """Every output file of the folder's samples but the sidecars (which hold the time taken)."""
    found = [p.relative_to(folder) for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".json"]
    return {str(p): (folder / p).read_bytes() for p in found if p.parts[0].startswith("0")}


@pytest.mark.parametrize("config", ["wide", "canvas"])
def test_cli_outputs_are_byte_identical_on_1_2_and_3_processes(config, tmp_path):
    # the canvas config's global view reads every window each step (refused under parallel: windows): its windows alone
    method = ["--method", "canonical"] if config == "canvas" else []
    runs = {
        "samples": predict(config, tmp_path / "samples", 3, "--model.init_args.window_batch", "1", *method),
        "windows2": predict(config, tmp_path / "windows2", 3, *windows(2), *method),
        "windows3": predict(config, tmp_path / "windows3", 3, *windows(3), *method),
    }
    for name, r in runs.items():
        assert r.returncode == 0, (name, r.stderr[-3000:])
    reference = files(tmp_path / "samples")
    assert len(reference) == 2
    for name in ("windows2", "windows3"):
        assert files(tmp_path / name) == reference, name
        assert (tmp_path / name / "manifest.json").exists() and not list((tmp_path / name).glob(".*tmp"))


MESH_RUNS = {
    # the tiny config: SyncSDE's couplings to every earlier view, SyncMVD's multi-view attention (keys/values of the
    # neighbour views, and of the front view while t > 800: the first of 5 steps is t = 801)
    "syncsde": [],
    # an averaging baseline (states and ε of every view), the network's calls independent of each other
    "synctweedies": ["--model.init_args.strategy", "syncsde.strategies.SyncTweedies",
                     "--model.init_args.strategy.init_args.case", "5",
                     "--model.init_args.multiview_attention", "false"],
}  # fmt: skip


@pytest.mark.parametrize("run", MESH_RUNS)
def test_cli_mesh_outputs_are_byte_identical_on_1_2_and_3_processes(run, tmp_path):
    extra = MESH_RUNS[run]
    runs = {
        "samples": predict("mesh", tmp_path / "samples", 5, "--model.init_args.window_batch", "1", *extra),
        "windows2": predict("mesh", tmp_path / "windows2", 5, *windows(2), *extra),
        "windows3": predict("mesh", tmp_path / "windows3", 5, *windows(3), *extra),
    }
    for name, r in runs.items():
        assert r.returncode == 0, (name, r.stderr[-3000:])
    reference = files(tmp_path / "samples")
    assert {"00000.png", "00000_views.png", "00000/mesh.glb"} <= set(reference)
    sidecar = json.loads((tmp_path / "samples" / "00000.json").read_text())
    assert sidecar["method"] == run and sidecar["multiview_attention"] == (run == "syncsde")
    for name in ("windows2", "windows3"):
        assert files(tmp_path / name) == reference, name


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
        except (OSError, ValueError):
            pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``."""
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("config", ["wide", "mesh"])  # the mesh: messages inside the network too (attention)
def test_a_process_killed_mid_sample_fails_the_run_in_one_line_and_a_rerun_makes_it_whole(config, tmp_path):
    out, steps = tmp_path / "out", 20
    proc = predict(config, out, steps, *windows(2), prompts="[a sunny day]", wait=False)
    deadline = time.time() + 240
    while not (out / "config.yaml").exists() or not children(proc.pid):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.2)
    child = children(proc.pid)[0]
    if config == "wide":
        time.sleep(1.0)  # into the first sample's steps
    else:  # past the mesh's preparation (rasterizing, maps: ~0.8 CPU s, no messages yet) into its steps (~0.17 CPU s
        start = cpu_seconds(child)  # each): by CPU time, whatever the machine's load
        while cpu_seconds(child) < start + 2.0:
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.2)
    os.kill(child, signal.SIGKILL)
    _, err = proc.communicate(timeout=240)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, err[-3000:]
    where = rf"during (self-attention layer \d+ of )?step \d+ of {steps}"  # the mesh: also inside the network
    assert re.search(rf"lost contact with process 1 {where}", lines[0])
    assert "regenerates it whole" in lines[0]
    assert not list(out.glob("0*")) and not list(out.glob("*.tmp"))  # nothing written, nothing half-written
    r = predict(config, out, steps, *windows(2), prompts="[a sunny day]")
    assert r.returncode == 0, r.stderr[-3000:]
    made = {p.name for p in out.glob("0*")}
    assert made == {"00000.json", "00000.png"} if config == "wide" else {"00000.json", "00000.png", "00000"} <= made


def test_bad_combinations_are_one_line_before_any_process_starts(tmp_path):
    r = predict("wide", tmp_path / "a", 3, *windows(2), "--model.init_args.window_batch", "13")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr[-3000:]
    assert "13 windows in groups of window_batch 13 (1 groups) over 2 processes" in r.stderr
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").glob("0*"))
    r = syncsde("predict", "--config", "configs/tiny/ambiguous.yaml", "--output_dir", str(tmp_path / "b"),
                "--model.init_args.parallel", "windows")  # fmt: skip
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr[-3000:]
    assert "the ambiguous task has none" in r.stderr and "the mesh task: views" in r.stderr  # and which tasks have
    r = predict("mesh", tmp_path / "c", 3, *windows(3), "--model.init_args.window_batch", "5")  # the mesh's views
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr[-3000:]
    assert "10 windows in groups of window_batch 5 (2 groups) over 3 processes" in r.stderr
