"""Cluster profiles: YAML files that say where sweeps run.

A profile names a ``backend`` and its options. The options of a running cluster
come from five layers, merged in one place (:func:`resolve`):

    call argument > CLI flag > environment (SWEEPKIT_*) > profile file > built-in default

Profiles are looked up, first found wins, in: the folders of ``$SWEEPKIT_CLUSTERS``
(separated by ``:``), ``./clusters``, ``~/.config/sweepkit/clusters`` and the
profiles that ship with sweepkit.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .backends import backend_for

__all__ = ["Profile", "resolve", "available", "ProfileError"]

# Set by the command line (``sweepkit run --cluster sge --workers 4``): the CLI layer.
CLI_PROFILE: str | None = None
CLI_OPTIONS: dict[str, Any] = {}

DEFAULT_PROFILE = "local"


class ProfileError(ValueError):
    """A profile that does not exist, or an option it does not take."""


@dataclass
class Profile:
    name: str
    backend: str
    options: dict[str, Any]
    source: str  # the file it came from, or "built-in"
    origin: dict[str, str] = field(default_factory=dict)  # option -> layer that set it

    def describe(self) -> str:
        return f"{self.name} (backend {self.backend}, from {self.source})"


def search_path() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("SWEEPKIT_CLUSTERS", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "clusters", Path.home() / ".config" / "sweepkit" / "clusters"]
    dirs += [_builtin_dir()]
    unique: dict[Path, Path] = {}
    for d in dirs:  # each folder once, in its first place
        unique.setdefault(d.resolve(), d)
    return list(unique.values())


def _builtin_dir() -> Path:
    here = Path(__file__).resolve().parent
    inside = here / "clusters"  # installed from a wheel
    return inside if inside.is_dir() else here.parent / "clusters"  # a source checkout


def available() -> dict[str, list[Path]]:
    """Every profile name with the files that define it, the one in use first."""
    found: dict[str, list[Path]] = {}
    for d in search_path():
        for f in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            if f.resolve() not in [p.resolve() for p in found.get(f.stem, [])]:
                found.setdefault(f.stem, []).append(f)
    return found


def load_file(name: str) -> tuple[dict, Path]:
    profiles = available()
    if name not in profiles:
        known = sorted(profiles)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ProfileError(
            f"unknown cluster profile {name!r}; {hint}known profiles: {', '.join(known)}. "
            f"A profile is a YAML file named <profile>.yaml in one of: "
            + ", ".join(str(d) for d in search_path())
        )
    path = profiles[name][0]
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"cluster profile {path} is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping) or "backend" not in data:
        raise ProfileError(f"cluster profile {path} must be a mapping with a 'backend:' key (e.g. backend: local)")
    return dict(data), path


def resolve(name: str | None = None, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Profile:
    """The profile to use and its options, merged from every layer in precedence order."""
    environ = os.environ if environ is None else environ
    name = name or CLI_PROFILE or environ.get("SWEEPKIT_CLUSTER") or DEFAULT_PROFILE
    data, path = load_file(name)
    backend_name = data.pop("backend")
    backend = backend_for(backend_name, profile=name)
    layers = [
        ("built-in default", backend.defaults),
        (f"profile file {path}", normalize(data)),
        ("environment", _from_environ(environ, backend.defaults)),
        ("command line", normalize(CLI_OPTIONS)),
        ("sweep_cluster() argument", normalize(overrides or {})),
    ]
    options: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for layer, values in layers:
        for key, value in values.items():
            if key not in backend.defaults:
                raise ProfileError(_unknown_option(key, layer, name, backend))
            options[key] = value
            origin[key] = layer
    options = backend.validate(options)
    return Profile(name, backend_name, options, str(path), origin)


def normalize(options: Mapping[str, Any]) -> dict[str, Any]:
    """Option names in one spelling: ``job_prologue`` and ``job-prologue`` are the same."""
    return {str(k).replace("_", "-").lower(): v for k, v in options.items()}


def _from_environ(environ: Mapping[str, str], known: Mapping[str, Any]) -> dict[str, Any]:
    """``SWEEPKIT_WORKERS=4`` sets ``workers``; values are parsed as YAML (``4`` is an int)."""
    found = {}
    for key in known:
        var = "SWEEPKIT_" + key.upper().replace("-", "_")
        if var in environ:
            try:
                found[key] = yaml.safe_load(environ[var])
            except yaml.YAMLError:
                found[key] = environ[var]
    return found


def _unknown_option(key: str, layer: str, profile: str, backend) -> str:
    valid = sorted(backend.defaults)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"cluster profile {profile!r} (backend {backend.name}) has no option {key!r} (set by the {layer}).{hint}"
        f" Its options: {', '.join(valid)}"
    )
