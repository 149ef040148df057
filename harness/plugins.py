"""Plugin manager and registry.

Plugins (built-in and third-party alike) are found through entry points in the group
`harness`. `HARNESS_PLUGINS=name1,name2` limits which entry points load (names as in
the entry points; an empty value loads none). The core's default plugin
(harness.default_plugins: the `none` distiller and pruner) is registered first and
always, so any subset of plugins works.

Every hook is called through pluggy (`pm.hook.<name>(...)`), so hook wrappers and
pluggy's tracing apply; `HARNESS_TRACE_HOOKS=1` logs each hook call to stderr. Each
registration hook hands the plugins a `register` object owned by the `Registry`, which
validates the class, stamps the plugin it came from and rejects duplicate names loudly.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import sys
from dataclasses import dataclass, field
from types import CodeType, FrameType, TracebackType
from typing import Any

import pluggy

from . import DISTRIBUTION, default_plugins, hookspecs
from .api import (
    NEEDS,
    STRUCTURES,
    Dataset,
    Distiller,
    EnergyMeter,
    ModelFactory,
    Pruner,
    check_tasks,
)
from .errors import PluginError, UsageError, closest

GROUP = "harness"

#: kind -> (hook name, base class)
KINDS: dict[str, tuple[str, type]] = {
    "dataset": ("harness_register_datasets", Dataset),
    "model": ("harness_register_models", ModelFactory),
    "distiller": ("harness_register_distillers", Distiller),
    "pruner": ("harness_register_pruners", Pruner),
    "energy_meter": ("harness_register_energy_meters", EnergyMeter),
}


@dataclass
class PluginInfo:
    """Where a plugin comes from."""

    name: str
    source: str  # "built-in" or "<distribution> <version>" or "registered in code"
    module: str
    registers: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Entry:
    kind: str
    name: str
    cls: Any
    plugin: str


class _Registrar:
    """The `register` a registration hook receives (typed for plugins as
    `harness.hookspecs.Register[Base]`): one object for the whole pluggy call, which
    finds the plugin that registers each class from the implementation on its stack."""

    def __init__(
        self, registry: Registry, kind: str, codes: dict[CodeType, list[tuple[object, str]]]
    ) -> None:
        self.registry, self.kind, self.codes = registry, kind, codes

    def __call__(self, cls: Any, /) -> None:
        plugin = _plugin_in_frames(_frames(sys._getframe(1)), self.codes) or "?"
        self.registry._add(self.kind, plugin, cls)


def _impl_codes(pm: pluggy.PluginManager, caller: Any) -> dict[CodeType, list[tuple[object, str]]]:
    """The code object of each implementation of a hook -> [(plugin, its name)]."""
    codes: dict[CodeType, list[tuple[object, str]]] = {}
    for impl in caller.get_hookimpls():
        code = getattr(impl.function, "__code__", None)
        if code is not None:
            codes.setdefault(code, []).append((impl.plugin, pm.get_name(impl.plugin) or repr(impl.plugin)))
    return codes


def _frames(frame: FrameType | None) -> list[FrameType]:
    """`frame` and its callers, innermost first."""
    out = []
    while frame is not None:
        out.append(frame)
        frame = frame.f_back
    return out


def _plugin_in_frames(frames: list[FrameType], codes: dict[CodeType, list[tuple[object, str]]]) -> str | None:
    """The plugin whose hook implementation is the first of `frames` (innermost first)
    to run one; a method's instance tells apart two plugins sharing one class."""
    for f in frames:
        owners = codes.get(f.f_code)
        if owners:
            if len(owners) > 1:
                me = f.f_locals.get("self")
                for plugin, name in owners:
                    if plugin is me:
                        return name
            return owners[0][1]
    return None


class Registry:
    """All registered things, by kind and name."""

    def __init__(self, pm: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
        self.pm = pm
        self.infos = infos
        self.entries: dict[str, dict[str, Entry]] = {k: {} for k in KINDS}
        for kind, (hook, _base) in KINDS.items():
            caller = getattr(pm.hook, hook)
            caller(register=_Registrar(self, kind, _impl_codes(pm, caller)))

    def _add(self, kind: str, plugin: str, cls: Any) -> None:
        base = KINDS[kind][1]
        where = f"plugin {plugin!r}"
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise PluginError(f"{where} registered {cls!r} as a {kind}: not a {base.__name__} subclass")
        name = getattr(cls, "name", "")
        if not isinstance(name, str) or not name or name != name.strip():
            raise PluginError(f"{where} registered a {kind} without a valid name: {cls!r}")
        try:
            check_tasks(cls.tasks, f"{where}, {kind} {name!r}")
        except ValueError as e:
            raise PluginError(str(e)) from None
        if kind == "distiller" and not set(cls.needs) <= set(NEEDS):
            raise PluginError(f"{where}, distiller {name!r}: needs must be within {NEEDS}")
        if kind == "pruner" and cls.structure not in (None, *STRUCTURES):
            raise PluginError(f"{where}, pruner {name!r}: structure must be None or one of {STRUCTURES}")
        if kind == "model" and not set(cls.prunable) <= set(STRUCTURES):
            raise PluginError(f"{where}, model {name!r}: prunable must be within {STRUCTURES}")
        if name in self.entries[kind]:
            other = self.entries[kind][name].plugin
            raise PluginError(
                f"{kind} {name!r} is registered by both plugin {other!r} and plugin {plugin!r}; "
                "uninstall one, or limit loading with HARNESS_PLUGINS"
            )
        self.entries[kind][name] = Entry(kind, name, cls, plugin)
        if plugin in self.infos:
            self.infos[plugin].registers.setdefault(kind, []).append(name)

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def get(self, kind: str, name: str, where: str = "") -> Any:
        """The registered class of `kind` called `name`, or a UsageError naming close ones."""
        try:
            return self.entries[kind][name].cls
        except KeyError:
            prefix = f"{where}: " if where else ""
            known = self.names(kind)
            hint = closest(name, known) or f" (known: {', '.join(known) or 'none'})"
            raise UsageError(f"{prefix}unknown {kind} {name!r}{hint}") from None


def _load_entry_points(pm: pluggy.PluginManager) -> dict[str, PluginInfo]:
    infos: dict[str, PluginInfo] = {}
    allowed = os.environ.get("HARNESS_PLUGINS")
    allow = None if allowed is None else {s.strip() for s in allowed.split(",") if s.strip()}
    seen: set[tuple[str, str]] = set()
    for ep in md.entry_points(group=GROUP):
        if (ep.name, ep.value) in seen:  # the same distribution found twice on sys.path
            continue
        seen.add((ep.name, ep.value))
        if allow is not None and ep.name not in allow:
            continue
        dist = ep.dist
        dist_name = dist.metadata["Name"] if dist is not None else "?"
        version = dist.version if dist is not None else "?"
        source = "built-in" if _normal(dist_name) == _normal(DISTRIBUTION) else f"{dist_name} {version}"
        try:
            module = ep.load()
        except Exception as e:  # a broken plugin is reported by name, not as a traceback
            raise PluginError(
                f"plugin {ep.name!r} ({source}, {ep.value}) failed to load: {type(e).__name__}: {e}"
            ) from e
        if pm.is_registered(module) or pm.has_plugin(ep.name):
            raise PluginError(f"plugin name {ep.name!r} is used by two entry points")
        pm.register(module, name=ep.name)
        infos[ep.name] = PluginInfo(ep.name, source, ep.value)
    return infos


def _normal(name: str) -> str:
    """A distribution name as the package index compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


_REGISTRY: Registry | None = None


#: Set to 1 to log every hook call (arguments, then result) to stderr.
TRACE_ENV = "HARNESS_TRACE_HOOKS"


def make_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with the harness's hookspecs and its default plugin (and
    pluggy's tracing when HARNESS_TRACE_HOOKS is set)."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    if os.environ.get(TRACE_ENV, "").strip() not in ("", "0"):
        pm.trace.root.setwriter(lambda line: print(f"harness: trace: {line}", end="", file=sys.stderr))
        pm.enable_tracing()
    pm.register(default_plugins, name=default_plugins.DEFAULT_PLUGIN)
    return pm


def _default_infos() -> dict[str, PluginInfo]:
    name = default_plugins.DEFAULT_PLUGIN
    return {name: PluginInfo(name, "built-in (default)", default_plugins.__name__)}


def get_registry() -> Registry:
    """The process-wide registry, loading entry points once."""
    global _REGISTRY
    if _REGISTRY is None:
        pm = make_plugin_manager()
        infos = {**_default_infos(), **_load_entry_points(pm)}
        _REGISTRY = Registry(pm, infos)
    return _REGISTRY


def register_plugin(plugin: object, name: str) -> Registry:
    """Register an in-code plugin (tests, notebooks) and rebuild the registry."""
    global _REGISTRY
    reg = get_registry()
    reg.pm.register(plugin, name=name)
    reg.infos[name] = PluginInfo(name, "registered in code", repr(plugin))
    _REGISTRY = Registry(reg.pm, {k: PluginInfo(v.name, v.source, v.module) for k, v in reg.infos.items()})
    return _REGISTRY


def unregister_plugin(name: str) -> None:
    global _REGISTRY
    reg = get_registry()
    reg.pm.unregister(name=name)
    reg.infos.pop(name, None)
    _REGISTRY = Registry(reg.pm, {k: PluginInfo(v.name, v.source, v.module) for k, v in reg.infos.items()})


def reset_registry() -> None:
    """Forget the loaded plugins (the next get_registry() loads entry points anew)."""
    global _REGISTRY
    _REGISTRY = None


def call_lifecycle(hook: str, **kwargs: Any) -> list[str]:
    """Call a lifecycle hook on every plugin, through pluggy; return the errors raised
    (not fatal). When an implementation raises, the error names its plugin and the
    implementations not yet called are called in turn (a subset of the hook)."""
    reg = get_registry()
    pm = reg.pm
    caller = getattr(pm.hook, hook)
    codes = _impl_codes(pm, caller)
    errors = []
    removed: list[object] = []
    while True:
        current = pm.subset_hook_caller(hook, remove_plugins=removed) if removed else caller
        try:
            current(**kwargs)
            return errors
        except Exception as e:  # a logging plugin must not take the grid down
            plugin = _plugin_in_frames(_frames_of(e.__traceback__), codes)
            errors.append(f"plugin {plugin or '?'!r} {hook}: {type(e).__name__}: {e}")
            order = [impl.plugin for impl in reversed(current.get_hookimpls())]  # (pluggy's call order)
            failed = [p for p in order if pm.get_name(p) == plugin]
            if not failed:
                return errors
            removed += order[: order.index(failed[0]) + 1]  # it and those already called


def _frames_of(tb: TracebackType | None) -> list[FrameType]:
    """The frames of a traceback, innermost first."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames[::-1]
