"""The bad-input sweep: for every config under configs/ and configs/tiny/, every option of the model, strategy,
backbone and data classes it names (found by walking their signatures, so new options are covered without editing
this file) gets typed bad values. Each must end the command with exactly one `syncsde: error: ...` line that names
the option and the fix, no traceback, and nothing written into the output folder.

The CLI runs in this process (`syncsde.cli.main`), and the checks run before any model weights are read where
possible (value types at parse time, finite numbers and the data module's files just after), so the sweep is fast.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import types
import typing
from pathlib import Path

import numpy as np
import pytest

from syncsde.cli import main
from syncsde.lightning_cli import load_yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "tiny").glob("*.yaml")) + sorted((ROOT / "configs").glob("*.yaml"))
FIX_WORDS = re.compile(
    r"\b(give|use|choose|set|must|the default is|the config's value is|add|rerun|lists|train with|run it with|pass|"
    r"point|download)\b"
)


def subcommand(cfg: dict) -> str:
    cls = load(cfg["model"]["class_path"])
    return "predict" if hasattr(cls, "settings") else "fit"


def load(class_path: str):
    module, name = class_path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def specs(node, prefix: str):
    """(option prefix, class path, init_args) of every class the config names under ``prefix``."""
    if isinstance(node, dict) and "class_path" in node:
        init = node.get("init_args") or {}
        yield prefix, node["class_path"], init
        for key, value in init.items():
            yield from specs(value, f"{prefix}.init_args.{key}")


def hints(cls) -> dict:
    return typing.get_type_hints(cls.__init__)


def strip_optional(hint):
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def accepts(hint, value) -> bool:
    try:
        hint(value)
        return True
    except ValueError:
        return False


def numeric_cases(hint, default, current):
    """Bad values for an int or float option: negative and zero counts, NaN and infinities."""
    if hint is bool:
        return ["maybe"]
    if isinstance(hint, type) and issubclass(hint, int):
        restricted = hint is not int
        zero_ok = accepts(hint, 0) if restricted else 0 in (default, current)
        return ["-1"] + ([] if zero_ok else ["0"])
    if isinstance(hint, type) and issubclass(hint, float):
        out = [".nan", ".inf", "-.inf"]
        if hint is not float:
            out += [v for v in ("-1", "0") if not accepts(hint, float(v))]
        return out
    if typing.get_origin(hint) is typing.Literal:
        return ["no-such-choice"]
    return []


def is_list(hint) -> bool:
    return typing.get_origin(hint) in (list, tuple, typing.Sequence, __import__("collections.abc").abc.Sequence)


def sweep_cases():
    """(config, subcommand, [option, value], option name that the message must contain), one per class, option and
    value among the embedded configs and one among the paper configs (the first config naming the class)."""
    seen, cases = set(), []
    for path in CONFIGS:
        cfg = load_yaml(path.read_text())  # short names expanded, as the CLI reads configs
        sub = subcommand(cfg)
        for top in ("model", "data"):
            for prefix, class_path, init in specs(cfg[top], top):
                cls = load(class_path)
                for name, hint in hints(cls).items():
                    if name == "return":
                        continue
                    param = inspect.signature(cls).parameters.get(name)
                    if param is None:
                        continue
                    default = param.default
                    current = init.get(name, default)
                    hint = strip_optional(hint)
                    values = numeric_cases(hint, default, current)
                    if is_list(hint) and isinstance(current, (list, tuple)) and current:
                        values.append("[]")
                    values += [("file", v) for v in file_cases(current)]
                    for value in values:  # once per class in the embedded configs, once in the paper configs
                        key = (path.parent.name, class_path, name, value)
                        first = not any(c[0] == path for c in cases)  # every config gets at least one case
                        if key in seen and not first:
                            continue
                        seen.add(key)
                        cases.append((path, sub, [f"--{prefix}.init_args.{name}", value], name))
        cases += record_file_cases(path, cfg, seen)
    return cases


def file_cases(current) -> list[str]:
    """A str option whose config value is an existing file (an input) gets a missing one, an unreadable one (a
    folder where the file should be) and a corrupt one."""
    if not isinstance(current, str) or not current or not (ROOT / current).is_file():
        return []
    return ["missing", "a-folder", "corrupt"]


def record_file_cases(path, cfg, seen) -> list:
    """The files named inside records (masks, images, meshes): missing, a folder, corrupt."""
    data = cfg["data"]
    cls = load(data["class_path"])
    init = data.get("init_args") or {}
    records = init.get("records") or []
    out = []
    for key in getattr(cls, "path_keys", ()):
        if not records or (path.parent.name, data["class_path"], key) in seen:
            continue
        seen.add((path.parent.name, data["class_path"], key))
        for kind in ("missing", "a-folder", "corrupt"):
            out.append((path, "predict", ["--data.init_args.records", ("record", key, kind)], key))
    return out


def materialise(args: list, tmp_path: Path, cfg: dict) -> list[str]:
    """The command-line arguments of a case (``--option=value``: values may start with "-"), its symbolic bad
    files made real under tmp_path."""
    option, value = args
    extra = []
    if isinstance(value, tuple) and value[0] == "file":
        value = bad_file(value[1], tmp_path)
    elif isinstance(value, tuple) and value[0] == "record":
        _, key, kind = value
        record = dict(cfg["data"]["init_args"]["records"][0])
        record[key] = bad_file(kind, tmp_path, suffix=Path(str(record[key])).suffix)
        value = json.dumps([record])
        extra = ["--data.init_args.records_file", "null", "--data.init_args.base_dir", "null"]
    return [f"{option}={value}", *extra]


def bad_file(kind: str, tmp_path: Path, suffix: str = ".bin") -> str:
    if kind == "missing":
        return str(tmp_path / f"no-such-file{suffix}")
    if kind == "a-folder":
        folder = tmp_path / f"a-folder{suffix}"
        folder.mkdir(exist_ok=True)
        return str(folder)
    if kind == "a-file":
        f = tmp_path / "a-file"
        f.write_text("not a folder\n")
        return str(f)
    f = tmp_path / f"corrupt{suffix}"
    f.write_bytes(b"\x89\xff\x00garbage\xfe" * 7)
    return str(f)


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err + captured.out


def assert_one_line(code, text, option, out: Path):
    lines = [line for line in text.splitlines() if line.strip()]
    assert code not in (0, None), text
    assert "Traceback" not in text, text
    assert len(lines) == 1 and lines[0].startswith("syncsde: error: "), text
    assert option in lines[0], f"the message does not name {option}: {lines[0]}"
    assert FIX_WORDS.search(lines[0]), f"the message names no fix: {lines[0]}"
    assert not out.exists(), f"{out} was written"


CASES = sweep_cases()


@pytest.mark.parametrize(
    "config, sub, args, option",
    CASES,
    ids=[f"{c[0].parent.name}/{c[0].stem}:{c[2][0].split('.')[-1]}={c[2][1]!s:.20}" for c in CASES],
)
def test_bad_option_is_one_line(config, sub, args, option, tmp_path, capsys):
    cfg = load_yaml(config.read_text())
    out = tmp_path / "out"
    if sub == "predict":
        extra = ["--output_dir", str(out)]
    else:  # should a bad value get through, train one step into tmp_path, never into the shipped weights
        extra = ["--trainer.max_steps=1", f"--trainer.default_root_dir={out}", f"--model.init_args.export_dir={out}"]
    code, text = run_cli([sub, "--config", str(config), *extra, *materialise(args, tmp_path, cfg)], capsys)
    assert_one_line(code, text, option, out)


def test_sweep_covers_every_config_and_kind():
    covered = {c[0] for c in CASES}
    assert covered == set(CONFIGS), set(CONFIGS) - covered
    values = {str(c[2][1]) for c in CASES}
    for v in ("-1", "0", ".nan", ".inf", "[]", "('file', 'missing')", "('file', 'corrupt')"):
        assert v in values, v
    assert any("records" in c[2][0] for c in CASES)


# sizes that do not fit the backbone (embedded configs: their weights are at hand, the check needs the model's size)
SIZES = [
    ("tiny/wide.yaml", "--model.init_args.width", "100", "width"),
    ("tiny/wide.yaml", "--model.init_args.stride", "7", "stride"),
    ("tiny/wide.yaml", "--model.init_args.stride", "4096", "stride"),
    ("tiny/wide.yaml", "--model.init_args.height", "44", "height"),  # 32 + 8k only
    ("tiny/wide.yaml", "--model.init_args.height", "16", "height"),  # below the window
    ("tiny/motion.yaml", "--model.init_args.overlap", "120", "overlap"),
    ("tiny/mesh.yaml", "--model.init_args.fov", "180", "fov"),
]


@pytest.mark.parametrize("config, option, value, word", SIZES, ids=[f"{c[0]}:{c[2]}" for c in SIZES])
def test_size_that_does_not_fit_is_one_line(config, option, value, word, tmp_path, capsys):
    out = tmp_path / "out"
    code, text = run_cli(["predict", "--config", f"configs/{config}", "--output_dir", str(out), option, value], capsys)
    assert_one_line(code, text, word, out)


def test_prompt_file_missing_unreadable_corrupt_empty(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    for value in [*(bad_file(kind, tmp_path) for kind in ("missing", "a-folder", "corrupt")), str(empty)]:
        out = tmp_path / "out"
        args = ["predict", "--config", "configs/tiny/wide.yaml", "--output_dir", str(out)]
        code, text = run_cli([*args, "--data.init_args.prompt_file", value], capsys)
        assert_one_line(code, text, "prompt_file", out)


def test_checkpoint_and_statistics_missing_or_corrupt(tmp_path, capsys):
    mean, std = tmp_path / "Mean.npy", tmp_path / "Std.npy"
    np.save(mean, np.zeros(263, dtype=np.float32))
    np.save(std, np.ones(263, dtype=np.float32))
    option = "--model.init_args.backbone.init_args."
    stats = [f"{option}mean", str(mean), f"{option}std", str(std)]
    for kind in ("missing", "a-folder", "corrupt"):
        out = tmp_path / "out"
        args = ["predict", "--config", "configs/motion.yaml", "--output_dir", str(out), *stats]
        code, text = run_cli([*args, f"{option}checkpoint", bad_file(kind, tmp_path)], capsys)
        assert_one_line(code, text, "checkpoint", out)
    for kind in ("missing", "corrupt"):
        out = tmp_path / "out"
        args = ["predict", "--config", "configs/motion.yaml", "--output_dir", str(out)]
        code, text = run_cli([*args, f"{option}mean", bad_file(kind, tmp_path, ".npy")], capsys)
        assert_one_line(code, text, "mean", out)


def test_base_dir_missing_or_a_file(tmp_path, capsys):
    for value in (str(tmp_path / "none"), bad_file("a-file", tmp_path)):
        out = tmp_path / "out"
        args = ["predict", "--config", "configs/tiny/edit.yaml", "--output_dir", str(out)]
        code, text = run_cli([*args, "--data.init_args.base_dir", value], capsys)
        assert_one_line(code, text, "base_dir", out)


def test_weights_folder_missing_a_file_or_incomplete(tmp_path, capsys):
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "model_index.json").write_text("{not json")
    for value in (str(tmp_path / "none"), bad_file("a-file", tmp_path), str(incomplete)):
        out = tmp_path / "out"
        args = ["predict", "--config", "configs/tiny/wide.yaml", "--output_dir", str(out)]
        code, text = run_cli([*args, "--model.init_args.backbone.init_args.model", value], capsys)
        assert_one_line(code, text, "backbone.init_args.model", out)


def test_unknown_option_and_bad_class_are_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    base = ["predict", "--config", "configs/tiny/wide.yaml", "--output_dir", str(out)]
    for extra, word in (
        (["--model.init_args.no_such_option", "1"], "no_such_option"),
        (["--model.init_args.strategy", "no.such.Strategy"], "strategy"),
        (["--model.init_args.num_inference_steps", "abc"], "num_inference_steps"),
        (["--threads", "0"], "threads"),
    ):
        code, text = run_cli([*base, *extra], capsys)
        assert_one_line(code, text, word, out)
