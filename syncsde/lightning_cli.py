"""``syncsde predict`` and ``syncsde fit``: LightningCLI with the checks that keep an output folder truthful.

Imported only when one of these subcommands runs (``syncsde --help`` does not pay for Lightning's import).

Before any process is launched, ``predict`` locks the output folder (a second run on the same folder is refused
while the first holds it; the operating system releases the lock of a killed run), removes the temporary files a
killed run left, checks the folder's samples against this run's settings (resume never mixes settings), plans the
samples still to make, checks the process count against them, and validates every pending record (a bad record, even
the last, stops the run before anything is written into the folder). ``config.yaml`` is written only when the first
sample is about to be generated. Results go to the writer and are released (predictions are not returned).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import signal
import sys
from pathlib import Path

import torch
from jsonargparse import Namespace, get_loader, set_loader
from lightning import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI

from syncsde.console import DESCRIPTION, THREADS_HELP, VERBOSE_HELP, quiet
from syncsde.errors import InputError, Stopped, SyncSDEError
from syncsde.io import FolderBusy, lock_folder, remove_temporaries
from syncsde.parallel import end_process_group
from syncsde.progress import SampleProgress
from syncsde.strategies.base import Strategy
from syncsde.task import SyncTask
from syncsde.writer import SampleWriter

_locks: list = []  # output-folder locks held by this process's run
_folder: dict = {}  # the predict run's output folder and its number of samples (for the line of a stopped run)


def run(argv: list[str] | None) -> None:
    """LightningCLI on ``argv`` (None: the command line), short names expanded (:func:`expand`)."""
    SyncSDEError.last = None
    argv = list(sys.argv[1:] if argv is None else argv)
    check_config_files(argv)
    argv, full = full_help(expand(argv))
    # the short help hides options from the parser, which would drop them from the config it dumps: help only
    SyncCLI.short_help = not full and any(a in ("-h", "--help") for a in argv)
    try:
        SyncCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=None,
            seed_everything_default=False,
            trainer_defaults={"logger": False, "enable_model_summary": False},
            parser_kwargs={"exit_on_error": False, "description": DESCRIPTION, "parser_mode": "syncsde"},
            args=argv,
        )
    except Stopped as e:
        sys.stderr.write(stopped_line(e.signum) + "\n")
        sys.exit(128 + e.signum)
    finally:
        stop_on_signals(False)
        end_process_group()
        while _locks:
            _locks.pop().close()
        _folder.clear()



STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_handlers: dict = {}  # the handlers stop_on_signals replaced


def stop_on_signals(on: bool) -> None:
    """SIGTERM and SIGINT stop a run (:class:`~syncsde.errors.Stopped`, raised once in the main thread) instead of
    being ignored (Lightning only notes a SIGTERM) or ending it with a bare exit 1 (Lightning's KeyboardInterrupt);
    ``on=False`` restores the handlers from before."""
    if not on:
        while _handlers:
            signal.signal(*_handlers.popitem())
        return
    _handlers.update({s: signal.getsignal(s) for s in STOP_SIGNALS if s not in _handlers})

    def stop(signum, frame):
        for s in STOP_SIGNALS:  # a second signal while the run winds down is not another exception
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(signum)

    for s in STOP_SIGNALS:
        signal.signal(s, stop)


def stopped_line(signum: int) -> str:
    """What a stopped run finished and how to resume it, in one line."""
    name = signal.Signals(signum).name
    out = _folder.get("out")
    if out is None:
        return f"syncsde: stopped by {name} before any sample was made; nothing was written"
    from syncsde.writer import sidecars

    done = len(sidecars(out))
    return (
        f"syncsde: stopped by {name}: {done} of {_folder['total']} samples are finished in {out}; rerun the same "
        "command to make the rest"
    )


# what `syncsde predict --help` shows; `--help full` shows every option (the trainer's training options too)
SHORT_HELP = {
    "help", "config", "method", "output_dir", "overwrite", "threads", "verbose", "model", "model.help", "data",
    "data.help", "trainer.devices", "trainer.strategy", "trainer.strategy.help", "trainer.accelerator",
    "trainer.accelerator.help",
}  # fmt: skip


SHORT_TITLES = {
    "trainer": "the processes of a run (`--help full` lists the trainer's other options)",
    "model": "the task, its backbone and method: `syncsde predict --model.help CLASS` lists a task's options",
    "data": "the samples: `syncsde predict --data.help CLASS` lists a data module's options",
}


def full_help(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without the ``full`` of ``--help full``, and whether it was there."""
    for i, a in enumerate(argv[:-1]):
        if a in ("-h", "--help") and argv[i + 1] == "full":
            return argv[: i + 1] + argv[i + 2 :], True
    return argv, False


class SyncCLI(LightningCLI):
    short_help = False  # `--help` (not `--help full`): predict's help lists the generation options only

    @staticmethod
    def subcommands():
        return {k: v for k, v in LightningCLI.subcommands().items() if k in ("fit", "predict")}

    def setup_parser(self, *args, **kwargs):
        super().setup_parser(*args, **kwargs)
        predict = self._subcommand_parsers.get("predict")
        if predict is None or not self.short_help:
            return
        predict.description = (
            "Run a task into an output folder. The generation options; `syncsde predict --help full` lists every "
            "option (the trainer's training options too)."
        )
        for group in predict._action_groups:
            shown = [a for a in group._group_actions if a.dest in SHORT_HELP]
            for action in group._group_actions:
                if action.dest not in SHORT_HELP:
                    action.help = argparse.SUPPRESS
            group.description = None
            group.title = SHORT_TITLES.get(shown[0].dest.split(".")[0], group.title) if shown else None

    def add_arguments_to_parser(self, parser):
        parser.add_argument(
            "--method",
            type=str | None,
            default=None,
            help="predict: a method by its short name, e.g. canonical, synctweedies, syncmvd (`syncsde methods` lists "
            "them); the same as --model.strategy NAME",
        )
        parser.add_argument(
            "--output_dir",
            type=str | None,
            default=None,
            help="predict: folder for images, sidecars and manifest (default outputs/<task>)",
        )
        parser.add_argument(
            "--overwrite",
            type=bool,
            default=False,
            help="predict: regenerate samples already in output_dir instead of skipping them",
        )
        parser.add_argument("--threads", type=int | None, default=None, help=THREADS_HELP)
        parser.add_argument("--verbose", type=bool, default=False, help=VERBOSE_HELP)

    def before_instantiate_classes(self):
        cfg = self.config[self.subcommand]
        quiet(not cfg.verbose)
        if cfg.threads is not None and cfg.threads < 1:
            raise InputError(f"--threads {cfg.threads}: give a positive number of threads, e.g. 1")
        check_kind(self.subcommand, cfg)
        check_finite(cfg)

    def instantiate_classes(self):
        # the light components first (the data module reads the records and checks the files they name; strategies
        # check their parameters), so that a bad input stops before any model weights are read
        for spec in light_specs(self.config[self.subcommand]):
            build(spec)
        super().instantiate_classes()

    def before_fit(self):
        set_threads(self.config["fit"].threads, self.trainer)

    def before_predict(self):
        cfg = self.config["predict"]
        set_threads(cfg.threads, self.trainer)
        out = Path(cfg.output_dir or f"outputs/{self.model.task_name}")
        text = self._parser("predict").dump(cfg, skip_none=False)
        prepare_output(self.trainer, self.model, self.datamodule, out, cfg.overwrite, text)
        if is_leader():
            _folder.update(out=out, total=len(self.datamodule.samples()))
            stop_on_signals(True)
        self.config_init["predict"]["return_predictions"] = False  # results go to the writer and are released


# -- short names (syncsde.registry) ---------------------------------------------------------------------------
STRATEGY_OPTIONS = ("--method", "--model.strategy", "--model.init_args.strategy")
BACKBONE_OPTIONS = ("--model.backbone", "--model.init_args.backbone")


def _pairs(argv: list[str]):
    """(index, option, value, width) of every ``--option value`` / ``--option=value`` in ``argv``."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "=" in a:
            yield i, *a.split("=", 1), 1
            i += 1
        elif a.startswith("--") and i + 1 < len(argv):
            yield i, a, argv[i + 1], 2
            i += 2
        else:
            i += 1


def short(value: str) -> bool:
    """A short name (``canonical``, ``sdxl``, ``wide_image``), not a class path or class name."""
    return value == value.lower() and "." not in value and not value.startswith("{")


def expand(argv: list[str]) -> list[str]:
    """Short names on the command line, as full options: ``--method NAME`` (= ``--model.strategy NAME``) becomes the
    method's strategy and settings, plus the task options the method sets on this config's task; ``--model.backbone
    NAME`` and ``--model NAME`` become class paths. A method given before ``--config`` takes effect after it (the
    config would otherwise replace it); options after it still override it."""
    from syncsde import registry

    argv = _after_config(argv)
    out = list(argv)
    for i, option, value, width in reversed(list(_pairs(argv))):
        if option in STRATEGY_OPTIONS and short(value):
            method = registry.get("method", value)
            spec = json.dumps({"class_path": method.class_path, "init_args": dict(method.args)})
            options = method.options(_task_name(argv)).items()
            extra = [x for k, v in options for x in (f"--model.{k}", v if isinstance(v, str) else json.dumps(v))]
            out[i : i + width] = ["--model.strategy", spec, *extra]
        elif option in BACKBONE_OPTIONS and short(value):
            out[i : i + width] = ["--model.backbone", registry.class_path(registry.get("backbone", value))]
        elif option == "--model" and short(value):
            out[i : i + width] = ["--model", registry.class_path(registry.get("task", value))]
    return out


def _after_config(argv: list[str]) -> list[str]:
    """``argv`` with the strategy options that stand before the last ``--config`` moved right after it."""
    pairs = list(_pairs(argv))
    configs = [(i, w) for i, option, _, w in pairs if option == "--config"]
    if not configs:
        return argv
    last, width = configs[-1]
    early = [(i, w) for i, option, value, w in pairs if option in STRATEGY_OPTIONS and short(value) and i < last]
    taken = {j for i, w in early for j in range(i, i + w)}
    moved = [a for i, w in early for a in argv[i : i + w]]
    head = [a for j, a in enumerate(argv[: last + width]) if j not in taken]
    return head + moved + argv[last + width :]


def _task_name(argv: list[str]) -> str | None:
    """The task of this command: from ``--model CLASS`` or the model of the last config file that has one."""
    import yaml

    for _, option, value, _ in reversed(list(_pairs(argv))):
        try:
            if option == "--model":
                return load_class(value).task_name if not short(value) else value
            if option == "--config":
                spec = (yaml.safe_load(Path(value).read_text()) or {}).get("model")
                if spec:
                    return load_class(spec["class_path"] if isinstance(spec, dict) else spec).task_name
        except Exception:  # noqa: BLE001 (a config that does not load is reported by the parser itself)
            return None
    return None


def check_config_files(argv: list[str]) -> None:
    """Every ``--config`` file reads as a YAML mapping, or one line naming the file (and the line, column and reason
    of a syntax error); jsonargparse would say "Unexpected config:" or quote "<unicode string>" without the file."""
    import yaml

    for _, option, value, _ in _pairs(argv):
        if option != "--config" or not Path(value).is_file():
            continue  # a missing file is the parser's to report
        try:
            content = yaml.safe_load(Path(value).read_text())
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise InputError(f"{value}{where}: {e.problem or e.context} (YAML syntax); fix the file") from None
        except yaml.YAMLError as e:
            raise InputError(f"{value}: {str(e).splitlines()[0]} (YAML); fix the file") from None
        if content is None:
            raise InputError(f"{value} is empty; give a config with model: and data: (e.g. configs/tiny/wide.yaml)")
        if not isinstance(content, dict):
            raise InputError(f"{value} is not a mapping of options; give a config with model: and data: sections")


def load_yaml(text: str):
    """The configs' loader: jsonargparse's YAML, with short names expanded in config files (``strategy: canonical``,
    ``class_path: sdxl``, and a top-level ``method: canonical`` as ``--method``; :mod:`syncsde.registry`)."""
    from syncsde import registry

    value = YAML(text)
    if not isinstance(value, dict):
        return value
    if isinstance(value.get("method"), str) and isinstance(value.get("model"), dict):
        model = value["model"]
        init = model.setdefault("init_args", {}) if "class_path" in model else model
        init["strategy"] = value.pop("method")

    def walk(node, task=None):
        if not isinstance(node, dict):
            if isinstance(node, list):
                for item in node:
                    walk(item, task)
            return
        path = node.get("class_path")
        if isinstance(path, str) and short(path):
            for kind in ("backbone", "task"):
                found = registry.find(kind, path)
                if found is not None:
                    node["class_path"] = registry.class_path(found)
                    break
        if isinstance(node.get("class_path"), str):
            try:
                task = getattr(load_class(node["class_path"]), "task_name", task)
            except Exception:  # noqa: BLE001 (the parser reports a class that does not import)
                pass
        init = node.get("init_args") if isinstance(node.get("init_args"), dict) else node
        tiling = init.get("vae_tiling")
        if isinstance(tiling, dict) and isinstance(tiling.get("mode"), bool):  # YAML 1.1 reads on/off as booleans
            tiling["mode"] = "on" if tiling["mode"] else "off"
        strategy = init.get("strategy")
        if isinstance(strategy, str) and short(strategy):
            method = registry.get("method", strategy)
            init["strategy"] = {"class_path": method.class_path, "init_args": dict(method.args)}
            for k, v in method.options(task).items():
                init.setdefault(k, v)
        for v in node.values():
            walk(v, task)

    walk(value)
    return value


YAML = get_loader("yaml")
set_loader("syncsde", load_yaml)


def light_specs(cfg) -> list:
    """The config's data module and strategies: components that load no weights."""
    found = [cfg.data] if isinstance(cfg.get("data"), Namespace) else []

    def walk(node):
        if isinstance(node, Namespace):
            if "class_path" in node and issubclass(load_class(node.class_path), Strategy):
                found.append(node)
            for value in vars(node).values():
                walk(value)

    walk(cfg.get("model"))
    return found


def load_class(class_path: str):
    module, name = class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def build(spec):
    """An object from its config (``class_path`` + ``init_args``), as jsonargparse would make it."""
    init = spec.get("init_args")
    return load_class(spec.class_path)(**(init.as_dict() if init is not None else {}))


def config_name(cfg) -> str:
    paths = cfg.get("config") or []
    return str(paths[-1]) if paths else "this config"


def check_kind(subcommand: str, cfg) -> None:
    """``predict`` needs a sampling task, ``fit`` a training recipe: say which command the config is for."""
    spec = cfg.get("model")
    if spec is None:
        return
    cls = load_class(spec.class_path)
    sampling = issubclass(cls, SyncTask)
    trains = cls.training_step is not LightningModule.training_step
    if subcommand == "predict" and not sampling:
        raise InputError(
            f"{config_name(cfg)} is a training recipe ({spec.class_path}), not a task; train with "
            f"`syncsde fit --config {config_name(cfg)}`"
        )
    if subcommand == "fit" and not trains:
        raise InputError(
            f"{config_name(cfg)} describes sampling ({spec.class_path}), not training; run it with "
            f"`syncsde predict --config {config_name(cfg)}`"
        )


def check_finite(cfg) -> None:
    """Every number in the model's and data's settings is finite (NaN and infinity are never meaningful here)."""
    for top in ("model", "data"):
        spec = cfg.get(top)
        for key, value in spec.items() if isinstance(spec, Namespace) else ():
            numbers = _flatten(value) if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
                raise InputError(f"--{top}.{key} {value}: give a finite number")


def _flatten(values):
    for v in values:
        if isinstance(v, (list, tuple)):
            yield from _flatten(v)
        else:
            yield v


# -- the output folder -------------------------------------------------------------------------------------------
def is_leader() -> bool:
    """The process that starts the run: global rank 0 before any process is launched (torchrun, SLURM and
    Lightning's own launcher name the others by these variables)."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def prepare_output(trainer, model, datamodule, out: Path, overwrite: bool, config_text: str) -> None:
    """Before any process is launched: lock the folder, check it against this run's settings, plan the samples,
    check the process count, and install the writer (which writes ``config.yaml`` once the first sample starts)."""
    if not hasattr(datamodule, "attach_output"):
        name = type(datamodule).__name__
        raise InputError(f"data module {name} has no samples to generate; use a syncsde.data class")
    leader = is_leader()
    lock = None
    if leader and out.exists():
        if not out.is_dir():
            raise InputError(f"--output_dir {out} is a file; give a folder")
        lock = take_lock(out)
    datamodule.attach_output(out, overwrite, model.settings(trainer.strategy.root_device))
    todo = datamodule.pending()
    if not todo:
        total = len(datamodule.samples())
        outdated = [c for c in trainer.callbacks if hasattr(c, "outdated") and c.outdated(out)] if leader else []
        if outdated:  # a run killed after its last sample but before its metrics
            print(f"syncsde: all {total} samples are already in {out}; computing its missing metrics", file=sys.stderr)
            for callback in outdated:
                callback.recompute(out)
            sys.exit(0)
        print(
            f"syncsde: all {total} samples are already in {out}; nothing to do (`syncsde evaluate {out}` recomputes "
            "its metrics; --overwrite true regenerates the samples)",
            file=sys.stderr,
        )
        sys.exit(0)
    model.check_processes(trainer.num_devices * trainer.num_nodes, todo)
    validate(model, todo)
    if leader:
        if lock is None:
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InputError(f"cannot create --output_dir {out} ({e.strerror}); choose a writable folder") from None
            take_lock(out)
        remove_temporaries(out)  # left by a killed run; we hold the lock, so nobody is writing them
        datamodule.discard_foreign()
    trainer.callbacks.insert(0, SampleWriter(out, config_text))  # first: the metrics then read what it wrote
    # one bar over samples and steps (also when disabled: it keeps the sampler's own per-loop bars off)
    bar = SampleProgress()
    if trainer.progress_bar_callback is None:
        bar.disable()
    trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, ProgressBar)] + [bar]


def validate(model, todo: list[dict]) -> None:
    """Every pending record, checked by its task (:meth:`SyncTask.validate`) before anything is written into the
    folder: a bad last record stops the run before the first sample, and the folder stays as it was."""
    seen = set()
    for s in todo:
        record = json.dumps({k: v for k, v in s.items() if k != "sample_id"}, sort_keys=True, default=str)
        if record not in seen:
            seen.add(record)
            model.validate(s)


def take_lock(out: Path):
    """The output folder's lock, held until the run ends, or one line saying who holds it."""
    try:
        lock = lock_folder(out)
    except FolderBusy as e:
        raise InputError(
            f"another syncsde run ({e}) is writing into {out}; wait for it to finish or choose another --output_dir"
        ) from None
    except OSError as e:
        raise InputError(f"cannot write into --output_dir {out} ({e.strerror}); choose a writable folder") from None
    _locks.append(lock)
    return lock


def default_threads(processes: int) -> int:
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(processes, 1))


def set_threads(threads: int | None, trainer) -> None:
    """Torch's thread count for this process (and, through OMP_NUM_THREADS, for the processes it launches)."""
    cpu = trainer.accelerator.__class__.__name__ == "CPUAccelerator"
    n = threads or default_threads(trainer.num_devices if cpu else 1)
    torch.set_num_threads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)
