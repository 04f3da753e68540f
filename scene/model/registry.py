"""Component registries: every geometry, colour and opacity model is registered under a name and
chosen in YAML (``model.color: {type: triplane, ...}``).

A component class registers itself with a decorator and carries its config dataclass as
``Config`` (a :class:`ComponentConfig` whose ``type`` defaults to the registered name)::

    @COLOR.register("constant")
    class ConstantColor(ColorComponent):
        @dataclass
        class Config(ComponentConfig):
            type: str = "constant"
            lr: float = 1e-2

The typed-YAML machinery (:func:`utils.config.merge_into`) reads a slot's registry from its field
metadata (:func:`component_field`): a mapping with a new ``type`` replaces the slot's config with
that type's defaults, the other keys are then checked against that type's fields. There is no
second list of component names anywhere: the registries are the list.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass
from typing import Callable

from utils.errors import InputFileError

__all__ = ["ComponentConfig", "Registry", "GEOMETRY", "COLOR", "OPACITY", "SCREEN", "component_field",
           "require_geometry_type"]


@dataclass
class ComponentConfig:
    """Base of every component's config: ``type`` is the registered name of the component."""

    type: str = ""

    def masks_needed(self) -> list[str]:
        """What of the component reads the FLAME region masks: a run without the masks file is then
        one error naming it, never a silent change of method (e.g. ["feature lines"])."""
        return []

    def validate(self, model, where: str) -> None:
        """Refuse values the component cannot work with: one error naming ``where.<key>``
        (``model``: the whole model config, e.g. for ``n_expr``). Called after every merge."""


class Registry:
    """Component classes of one role ("model.color", ...) by name."""

    def __init__(self, role: str):
        self.role = role
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator: register ``cls`` as ``name``; ``cls.Config().type`` must be ``name``."""
        def decorate(cls: type) -> type:
            config = getattr(cls, "Config", None)
            if config is None or not (dataclasses.is_dataclass(config) and issubclass(config, ComponentConfig)):
                raise TypeError(f"{self.role} component {cls.__name__} needs a `Config` dataclass derived from "
                                "ComponentConfig")
            if config().type != name:
                raise TypeError(f"{self.role} component {cls.__name__}: Config.type defaults to {config().type!r}, "
                                f"not its registered name {name!r}")
            known = self._classes.get(name)
            if known is not None and _origin(known) != _origin(cls):
                # The same class of the same file imported again (a plugin listed by two configs,
                # a test file that is its own plugin) replaces itself; anything else is a clash.
                raise TypeError(f"{self.role} type {name!r} is already registered by {known.__module__}."
                                f"{known.__qualname__} ({_origin(known)[1]}); choose another name")
            self._classes[name] = cls
            cls.type_name = name
            cls.role = self.role
            return cls
        return decorate

    def unregister(self, name: str) -> None:
        """Remove a registration (tests that register their own components clean up with it)."""
        self._classes.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._classes))

    def __contains__(self, name: str) -> bool:
        return name in self._classes

    def get(self, name: str, where: str = "") -> type:
        """The class registered as ``name``; an unknown name is one error listing the choices."""
        cls = self._classes.get(name)
        if cls is None:
            prefix = f"{where}: " if where else ""
            raise InputFileError(f"{prefix}unknown {self.role} type {name!r}; registered types: "
                                 f"{', '.join(self.names())} (a component of your own is registered by the module "
                                 "that defines it: list that module under `plugins:` in the config)")
        return cls

    def default_config(self, name: str, where: str = "") -> ComponentConfig:
        """A fresh config of the type ``name`` (its defaults)."""
        return self.get(name, where).Config()


def _origin(cls: type) -> tuple[str, str]:
    """(qualified name, source file) of a class."""
    try:
        source = inspect.getsourcefile(cls) or ""
    except TypeError:
        source = ""
    return cls.__qualname__, os.path.realpath(source) if source else ""


GEOMETRY = Registry("model.geometry")
COLOR = Registry("model.color")
OPACITY = Registry("model.opacity")
SCREEN = Registry("model.screen")


def component_field(registry: Registry, default_type: str):
    """A dataclass field holding the config of the component chosen from ``registry`` (default
    ``default_type``); :func:`utils.config.merge_into` reads the registry from its metadata."""
    return dataclasses.field(default_factory=lambda: registry.default_config(default_type),
                             metadata={"registry": registry})


def require_geometry_type(model, where: str, geometry_type: str, what: str, reads: str) -> None:
    """One error naming ``where`` when the model's geometry is not ``geometry_type``, whose
    ``reads`` (e.g. "opacity shifts") the component ``what`` (e.g. "the gha opacity") reads."""
    geometry = getattr(model, "geometry", None)
    if getattr(geometry, "type", None) != geometry_type:
        raise InputFileError(f"{where}: {what} reads the {geometry_type} geometry's {reads}; set model.geometry "
                             f"to {{type: {geometry_type}}} (it is {getattr(geometry, 'type', None)!r})")
