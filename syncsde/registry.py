"""The plug-in contract (ARCHITECTURE.md, "Plug-ins"): short names, declared abilities, one compatibility check.

Four kinds of plug-in have short names:

- **methods**: a strategy class with settings, and the task options that belong to the method (SyncMVD is
  SyncTweedies case 5 while t > 200, with multi-view attention): ``syncsde predict ... --method syncmvd``;
  registered with :func:`method` beside the strategy (``syncsde/strategies/__init__.py``);
- **backbones** and **geometries**: a class, registered with :func:`register` (``--model.backbone sdxl``);
- **tasks**: a LightningModule, named by its ``task_name`` and found through the ``syncsde.tasks`` entry-point group
  of the installed package (the core never imports the tasks; a plug-in package adds its own tasks the same way);
- **commands**: ``syncsde <name>`` subcommands of the application layer, through the ``syncsde.commands`` group.

Abilities are words. A backbone declares what it can do (:data:`ABILITIES`, ``Backbone.abilities``); a task
declares what it needs of the backbone (``SyncTask.needs``) and what it provides to strategies (``SyncTask.provides``,
:data:`PROVISIONS`); a strategy declares what it needs of the task (``Strategy.needs``). :func:`check` compares
them once, when the task is built, and refuses in one line that names what is missing and what would serve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module, metadata
from typing import Any, Iterable, Mapping

from syncsde.errors import InputError

# what a backbone can do
ABILITIES = {
    "images": "decodes its working space to RGB images",
    "vp_schedule": "samples a variance-preserving ε/v schedule (DDPM steps, DDIM inversion), not a flow-matching one",
    "unet_attention": "a diffusers UNet whose attention layers can be recorded and rewired",
    "attention_maps": "its text and image attention can be recorded as maps (the edit mask: a UNet's, SD3's joint)",
    "controlnet": "a ControlNet that takes a control image (depth) per trajectory",
    "learned_variance": "returns learned-variance channels beside ε (DeepFloyd IF)",
    "flow_matching": "a flow-matching velocity model (SD3, Flux)",
    "packed_tokens": "works on 2×2 packed latent tokens (Flux)",
    "guidance_distilled": "guidance-distilled: no unconditional branch, no negative prompt (Flux-dev)",
    "joints": "a motion model whose features convert to skeleton joints",
}
# what a task gives strategies
PROVISIONS = {
    "couplings": "couplings between trajectories (SyncSDE's autoregressive correlation)",
    "canonical": "a canonical variable (canvas, image, texture, motion) with forward maps and an aggregation",
    "regions": "foreground masks and an image encoder (region-based MultiDiffusion's bootstrapping)",
    "denoise": "the task's guided network call, for more calls than the one per step (StochSync, DoubleTake)",
    "global_view": "one more trajectory seeing the whole canvas at the native size (SyncSDE's global view)",
    "differentiable": "the guided denoiser and the decoder with gradients (SyncDiffusion's perceptual gradient)",
    "self_attention": "the UNet's self-attention, rewired between trajectories while sampling (MasaCtrl's mutual "
    "self-attention): which trajectory reads which one's keys and values",
}
KINDS = ("method", "backbone", "geometry")
# the core's modules that register plug-ins when imported
CORE_PLUGINS = (
    "syncsde.strategies",
    "syncsde.backbones",
    "syncsde.motion.mdm",
    "syncsde.motion.procedural",
    "syncsde.windows",
    "syncsde.sphere",
)
GROUPS = {"task": "syncsde.tasks", "command": "syncsde.commands"}  # entry-point groups of the installed packages


@dataclass(frozen=True)
class Method:
    """A named way to synchronize: ``strategy`` (a class) with ``args``, plus options of the task (``task_args``:
    task name, or ``*`` for any task, → options). ``tasks`` limits where it applies (None: every task that
    provides what the strategy needs); ``baseline_for``: the tasks whose comparison runs it by default (the
    paper's baselines)."""

    name: str
    strategy: type
    summary: str
    args: Mapping[str, Any] = field(default_factory=dict)
    task_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tasks: tuple[str, ...] | None = None
    baseline_for: tuple[str, ...] = ()

    @property
    def class_path(self) -> str:
        return f"{self.strategy.__module__}.{self.strategy.__qualname__}"

    def build(self, **overrides):
        """The strategy object (``overrides`` on top of the method's settings)."""
        return self.strategy(**{**self.args, **overrides})

    def options(self, task: str | None) -> dict:
        """The task options this method sets on ``task``."""
        return {**self.task_args.get("*", {}), **(self.task_args.get(task, {}) if task else {})}

    def needs(self) -> frozenset[str]:
        """What the method's strategy needs of the task."""
        return frozenset(self.build().needs())

    def applies_to(self, task_cls: type) -> bool:
        if self.tasks is not None and task_cls.task_name not in self.tasks:
            return False
        return self.needs() <= frozenset(task_cls.provides)


_entries: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}


def key(name: str) -> str:
    """Names are case-insensitive and ``-`` is ``_`` (``visual-anagrams`` = ``visual_anagrams``)."""
    return name.strip().lower().replace("-", "_")


def _add(kind: str, name: str, entry) -> None:
    taken = _entries[kind].get(key(name))
    if taken is not None and taken is not entry:
        raise ValueError(f"the {kind} name {name!r} is taken by {taken}")
    _entries[kind][key(name)] = entry


def register(kind: str, name: str):
    """Class decorator: ``@register("backbone", "sdxl")``. The class gets ``registered_name``."""

    def deco(cls):
        _add(kind, name, cls)
        cls.registered_name = name
        return cls

    return deco


def method(name: str, strategy: type, summary: str, **kw) -> Method:
    """Register a method (a strategy with settings; see :class:`Method` for the keywords)."""
    entry = Method(name, strategy, summary, **kw)
    _add("method", name, entry)
    return entry


def names(kind: str) -> list[str]:
    """The registered names of a kind, in registration order (tasks and commands: of the installed packages)."""
    if kind in GROUPS:
        return list(_entry_points(kind))
    _load_plugins()
    return list(_entries[kind])


def get(kind: str, name: str):
    """The plug-in ``name`` of ``kind`` (a class, or a :class:`Method`), or a one-line InputError listing the names."""
    if kind in GROUPS:
        points = _entry_points(kind)
        if key(name) not in points:
            raise InputError(f"no {kind} named {name!r}; choose one of {', '.join(points)}")
        return points[key(name)].load()
    _load_plugins()
    found = _entries[kind].get(key(name))
    if found is None:
        raise InputError(f"no {kind} named {name!r}; choose one of {', '.join(_entries[kind])} (`syncsde methods`)")
    return found


def find(kind: str, name: str):
    """``get`` without the error: None when ``name`` is not a registered name of ``kind``."""
    try:
        return get(kind, name)
    except InputError:
        return None


def task_classes() -> dict[str, type]:
    """Every installed task class by name (imports them all: for listings, not for a run)."""
    return {name: get("task", name) for name in names("task")}


def class_path(obj: type) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _entry_points(kind: str) -> dict[str, metadata.EntryPoint]:
    return {key(ep.name): ep for ep in metadata.entry_points(group=GROUPS[kind])}


_plugins_loaded = False


def _load_plugins() -> None:
    """The core's own plug-ins, and those of installed packages (entry-point group ``syncsde.plugins``: modules that
    register methods, backbones or geometries when imported)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in CORE_PLUGINS:
        import_module(module)
    for ep in metadata.entry_points(group="syncsde.plugins"):
        import_module(ep.value)


# -- the compatibility check ------------------------------------------------------------------------------------
def abilities(backbone) -> frozenset[str]:
    return frozenset(getattr(backbone, "abilities", ()))


def _words(words: Iterable[str], table: Mapping[str, str]) -> str:
    return " and ".join(f"{w} ({table.get(w, '?')})" for w in sorted(words))


def serving_backbones(needs: Iterable[str]) -> list[str]:
    """The registered backbones whose declared abilities cover ``needs``."""
    needs = frozenset(needs)
    return [name for name in names("backbone") if needs <= frozenset(get("backbone", name).abilities)]


def check(task, backbone, strategy) -> None:
    """Refuse, in one line, a task on a backbone that lacks what the task needs, or a strategy that needs what the
    task does not provide."""
    check_backbone(task, backbone, task.needs)
    lacking = frozenset() if strategy is None else strategy.needs() - frozenset(task.provides)
    if lacking:
        where = [n for n, cls in _task_providers(strategy.needs())]
        raise InputError(
            f"{type(strategy).__name__} needs a task that provides {_words(lacking, PROVISIONS)}; the "
            f"{task.task_name} task does not" + (f"; tasks that do: {', '.join(where)}" if where else "")
        )


def check_backbone(task, backbone, needs: Iterable[str], setting: str | None = None) -> None:
    """Refuse, in one line, ``backbone`` for ``task`` if it lacks one of ``needs`` (those of one of the task's
    ``setting`` s, if given: the line then says how to turn it off)."""
    missing = frozenset(needs) - abilities(backbone)
    if not missing:
        return
    serve = serving_backbones(needs)
    what = f"the {task.task_name} task" + (f" with {setting} true" if setting else "")
    raise InputError(
        f"{what} needs a backbone with {_words(missing, ABILITIES)}; {backbone.name} ({type(backbone).__name__}) "
        "has not"
        + (f"; backbones that serve: {', '.join(serve)}" if serve else "")
        + (f"; or set --model.{setting} false" if setting else "")
    )


def _task_providers(needs: Iterable[str]) -> list[tuple[str, type]]:
    try:
        classes = task_classes()
    except Exception:  # noqa: BLE001 (a broken plug-in must not hide the refusal itself)
        return []
    return [(n, c) for n, c in classes.items() if frozenset(needs) <= frozenset(c.provides)]
