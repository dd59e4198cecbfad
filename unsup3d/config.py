"""The Hydra configs of unsup3d: composing them, where a run writes, start-up validation against the
``_target_`` signatures, and building components from them.

* The configs live in the checkout's top-level ``conf/`` and are installed as the package
  :data:`CONFIG_MODULE` (``unsup3d.conf``; ``pyproject.toml`` maps the folder onto it, in a wheel and in an
  editable install alike), so they are found through the import system wherever the package is installed
  and whatever the working folder: :data:`CONFIG_DIR` is that folder (``train.yaml``, ``eval.yaml`` and the
  groups ``paths``, ``dataset``, ``model``, ``renderer``, ``trainer``, ``logger``, ``callbacks``,
  ``experiment``), :data:`CONFIG_SEARCH_PATH` what the Hydra apps name (``pkg://unsup3d.conf``), and
  :func:`compose_config` composes one outside a Hydra app (tests, benchmarks).
* :func:`run_dir`: a run writes under ``paths.output_dir``, which is Hydra's run directory
  (``${hydra:runtime.output_dir}``, i.e. ``hydra.run.dir``) in a Hydra app; a config composed outside
  one sets ``paths.output_dir=DIR`` itself.
* :func:`check_node` validates a node with a ``_target_`` against the target's signature: an unknown key,
  or (for this package's own targets) a value of the wrong kind, is a :class:`ConfigError` naming the
  key; third-party targets (Lightning) check their values themselves when built.
* :func:`instantiate_node` builds a node with :func:`hydra.utils.instantiate` (plain Python containers
  for the arguments); a constructor's ``TypeError`` / ``ValueError`` becomes a :class:`ConfigError`
  naming the node.
"""

from __future__ import annotations

import difflib
import importlib.resources
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = [
    "CONFIG_DIR",
    "CONFIG_MODULE",
    "CONFIG_SEARCH_PATH",
    "ConfigError",
    "check_entries",
    "check_node",
    "compose_config",
    "instantiate_node",
    "native_cpu_precision",
    "run_dir",
]

#: The package of the configs (the checkout's ``conf/``, installed as ``unsup3d/conf/``).
CONFIG_MODULE = "unsup3d.conf"
#: Where the Hydra apps search for their configs: the package, through the import system.
CONFIG_SEARCH_PATH = f"pkg://{CONFIG_MODULE}"
#: The config folder on disk (``conf/`` of an editable install, ``site-packages/unsup3d/conf/`` of a wheel).
CONFIG_DIR = Path(str(importlib.resources.files(CONFIG_MODULE)))

# Keys of a node that are Hydra's instructions to instantiate, not arguments of the target.
_HYDRA_KEYS = frozenset({"_target_", "_args_", "_convert_", "_recursive_", "_partial_"})


def native_cpu_precision(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """Lightning precision for training on this CPU: ``"bf16-mixed"`` where it computes bf16 natively
    (the ``avx512_bf16`` or ``amx_bf16`` flag in ``cpuinfo``), else ``"32-true"`` (bf16 emulated in
    fp32 is slower than fp32; where ``cpuinfo`` is not readable, as off Linux, too).

    The config resolver ``${unsup3d.cpu_precision:}`` calls it (``experiment=synthetic_cpu`` trains with
    it: 1.3-1.4x faster with a quality curve no worse, README Results).
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return "32-true"
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return "bf16-mixed" if flags & {"avx512_bf16", "amx_bf16"} else "32-true"


# use_cache: /proc/cpuinfo is read once per config, not at every access of the key.
OmegaConf.register_new_resolver("unsup3d.cpu_precision", native_cpu_precision, use_cache=True, replace=True)


class ConfigError(ValueError):
    """A configuration key is unknown or has a bad value."""


def compose_config(config_name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``<config_name>.yaml`` of :data:`CONFIG_MODULE` with command-line style ``overrides``,
    outside a Hydra app (pass ``paths.output_dir=DIR`` to give the run a directory)."""
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def run_dir(cfg: DictConfig) -> Path:
    """The run directory, ``paths.output_dir``: Hydra's run directory in a Hydra app, else the value a
    composed config was given.

    Raises:
        ConfigError: it is not set (a config composed outside a Hydra app without ``paths.output_dir``).
    """
    try:
        value = OmegaConf.select(cfg, "paths.output_dir", throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise ConfigError("paths.output_dir is not set: it is Hydra's run directory in unsup3d-train / "
                          "unsup3d-eval; a config composed outside them needs paths.output_dir=DIR "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    if value is None or str(value) == "":
        raise ConfigError("paths.output_dir is not set: pass paths.output_dir=DIR")
    return Path(str(value))


def _target(node: DictConfig, where: str) -> Callable[..., Any]:
    path = node.get("_target_")
    if not isinstance(path, str) or not path:
        raise ConfigError(f"'{where}' has no _target_ naming what to build")
    try:
        return get_object(path)
    except Exception as exc:  # noqa: BLE001 - hydra raises ImportError, AttributeError or its own
        raise ConfigError(f"bad value for '{where}._target_': cannot import {path!r} ({exc})") from exc


def _parameters(target: Callable[..., Any]) -> tuple[dict[str, Any], bool]:
    """``(name -> default, accepts **kwargs)`` of a class's constructor or a function."""
    params = inspect.signature(target).parameters.values()
    named = {p.name: p.default for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return named, any(p.kind == p.VAR_KEYWORD for p in params)


def _kind_ok(value: Any, default: Any) -> bool:
    """Whether ``value`` has the kind of the parameter's default (only simple defaults are checked;
    the constructors validate ranges and the rest with messages of their own)."""
    if value is None or default is None or default is inspect.Parameter.empty:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return True


def check_node(node: DictConfig, where: str, check_values: bool | None = None) -> None:
    """Validate the keys (and values) of a node with a ``_target_`` against the target's signature.

    Args:
        node: the config node (``cfg.model``, ``cfg.callbacks.image_logger``...).
        where: its path in the config, for the messages (``"model"``).
        check_values: compare each value's kind with the parameter's default; default: only for this
            package's own targets (third-party ones validate their arguments when built).

    Raises:
        ConfigError: naming the unknown key or the bad value, with the valid keys.
    """
    target = _target(node, where)
    if check_values is None:
        check_values = getattr(target, "__module__", "").split(".")[0] == "unsup3d"
    defaults, open_ended = _parameters(target)
    for key in node:
        key = str(key)
        if key in _HYDRA_KEYS:
            continue
        if key not in defaults:
            if open_ended:
                continue
            close = difflib.get_close_matches(key, list(defaults), n=3)
            raise ConfigError(f"unknown key '{where}.{key}'" + (f" (did you mean {close}?)" if close else "")
                              + f"; valid keys: {', '.join(sorted(defaults))}")
        if not check_values:
            continue
        value = node[key]
        value = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
        if not _kind_ok(value, defaults[key]):
            raise ConfigError(f"bad value for '{where}.{key}': {value!r} (expected a value like {defaults[key]!r})")


def check_entries(section: DictConfig | None, where: str) -> None:
    """Validate a group of named components (``callbacks``, ``logger``): each entry is a node with a
    ``_target_`` (checked with :func:`check_node`) or null (left out)."""
    if section is None:
        return
    if not isinstance(section, DictConfig):
        raise ConfigError(f"bad value for '{where}': {section!r} (expected name: {{_target_: ...}} entries)")
    for name, node in section.items():
        if node is None:
            continue
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(f"bad value for '{where}.{name}': {node!r} (expected a config with a _target_, "
                              "or null to leave it out)")
        check_node(node, f"{where}.{name}")


def instantiate_node(node: DictConfig, where: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)`` with plain Python containers as arguments.

    Raises:
        ConfigError: the target rejected its arguments (``TypeError`` / ``ValueError``), naming ``where``.
        Any other exception of the target, as it was raised.
    """
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if cause is None or isinstance(cause, (TypeError, ValueError)):
            reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
            raise ConfigError(f"bad configuration of '{where}' ({node.get('_target_')}): {reason}") from exc
        raise cause from None
