"""The ``sweepkit`` command line.

    sweepkit run SCRIPT [--cluster NAME] [--workers N] [--set KEY=VALUE] [script options]
    sweepkit clusters [--show NAME]
    sweepkit job-script PROFILE [--set KEY=VALUE]
    sweepkit status DIR
    sweepkit results DIR [--format csv|parquet] [--output FILE]
    sweepkit verify DIR [--sample N]
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import inspect
import os
import re
import runpy
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from . import profiles

CLUSTER_FLAGS = ("--cluster", "--workers", "--set")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sweepkit", description="Run many independent tasks on a Dask cluster.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run a script or recipe on a cluster profile",
                         description="Run SCRIPT as __main__ inside sweep_cluster(...). Options other than "
                         "sweepkit's own (--cluster, --workers, --set, --progress) go to the script.")
    run.add_argument("script", type=Path)
    add_cluster_flags(run)

    clusters = sub.add_parser("clusters", help="list the cluster profiles and where each comes from")
    clusters.add_argument("--show", metavar="NAME", help="print one profile's resolved options and their sources")

    job = sub.add_parser("job-script", help="print the job script a batch-scheduler profile submits")
    job.add_argument("profile")
    add_cluster_flags(job, cluster=False)

    status = sub.add_parser("status", help="progress and provenance of a stored run")
    status.add_argument("store", type=Path)

    res = sub.add_parser("results", help="write a stored run's results table")
    res.add_argument("store", type=Path)
    res.add_argument("--format", choices=("csv", "parquet"), default="csv")
    res.add_argument("--output", "-o", type=Path, help="file to write (csv: stdout if not given; parquet: required)")

    ver = sub.add_parser("verify", help="recompute a sample of a stored run's tasks and compare")
    ver.add_argument("store", type=Path)
    ver.add_argument("--sample", type=int, default=10, help="how many finished tasks to recompute (default 10)")

    rest: list[str] = []
    if argv and argv[0] == "run":  # the script's own options (and --help after it) pass through
        argv, rest = split_run_args(argv)
    args = parser.parse_args(argv)
    sys.path.insert(0, os.getcwd())  # as `python script.py` would: the user's own modules import
    try:
        sys.exit(COMMANDS[args.command](args, rest) or 0)
    except BrokenPipeError:  # `sweepkit results DIR | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except (profiles.ProfileError, ValueError, TypeError, ImportError, RuntimeError, FileNotFoundError) as exc:
        if os.environ.get("SWEEPKIT_DEBUG"):
            raise
        sys.exit(f"sweepkit {args.command}: error: {exc}")


def split_run_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """``run SCRIPT ...``: sweepkit's own flags, wherever they are, and the script's options."""
    own, rest, script_seen = argv[:1], [], False
    tokens = iter(argv[1:])
    for token in tokens:
        name = token.split("=", 1)[0]
        if name in CLUSTER_FLAGS:
            own += [token] if "=" in token else [token, next(tokens, "")]
        elif name in ("--progress", "--no-progress") or (not script_seen and token.startswith("-")):
            own.append(token)
        elif not script_seen:
            own.append(token)
            script_seen = True
        else:
            rest.append(token)
    return own, rest


def add_cluster_flags(parser: argparse.ArgumentParser, cluster: bool = True) -> None:
    if cluster:
        parser.add_argument("--cluster", metavar="NAME",
                            help="cluster profile (default: $SWEEPKIT_CLUSTER, else 'local'); see `sweepkit clusters`")
    parser.add_argument("--workers", metavar="N", help="worker processes: N, or MIN:MAX to scale adaptively")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                        help="set a profile option, e.g. --set memory=8GiB --set queue=long.q (repeatable)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar (default: when stderr is a terminal)")


@contextlib.contextmanager
def cluster_flags(args: argparse.Namespace) -> Iterator[None]:
    """Install the command line as the 'CLI flag' layer of the profile precedence.

    The profile is checked now (a typo fails before any work), but its cluster starts
    only when a sweep needs it, and stops when the command ends.
    """
    from .cluster import close_implicit

    options: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        options[key] = yaml.safe_load(value)
    if args.workers is not None:
        options["workers"] = yaml.safe_load(args.workers)
    saved = profiles.CLI_PROFILE, profiles.CLI_OPTIONS, os.environ.get("SWEEPKIT_PROGRESS")
    profiles.CLI_OPTIONS = options
    profiles.CLI_PROFILE = getattr(args, "cluster", None) or os.environ.get("SWEEPKIT_CLUSTER") or profiles.DEFAULT_PROFILE
    if args.progress is not None:
        os.environ["SWEEPKIT_PROGRESS"] = "1" if args.progress else "0"
    try:
        profiles.resolve()
        yield
    finally:
        close_implicit()
        profiles.CLI_PROFILE, profiles.CLI_OPTIONS, progress = saved
        if progress is None:
            os.environ.pop("SWEEPKIT_PROGRESS", None)
        else:
            os.environ["SWEEPKIT_PROGRESS"] = progress


# -- sweepkit run -----------------------------------------------------------------------
_UNDER_RUN = False  # `sweepkit run` has chosen the cluster: recipes take no cluster flags


def cmd_run(args: argparse.Namespace, rest: list[str]) -> int:
    global _UNDER_RUN
    script = args.script
    if not script.is_file():
        raise FileNotFoundError(f"no script at {script}")
    sys.argv = [str(script), *rest]
    sys.path.insert(0, str(script.resolve().parent))
    with cluster_flags(args):
        _UNDER_RUN = True
        try:
            runpy.run_path(str(script), run_name="__main__")
        except KeyboardInterrupt:
            print("sweepkit: interrupted", file=sys.stderr)
            return 130
        finally:
            _UNDER_RUN = False
    return 0


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the empty ones."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, [], argparse.SUPPRESS):
            return action.help
        return super()._get_help_string(action)


def run_recipe(fn: Callable[..., Any], argv: list[str] | None = None) -> Any:
    """Command line for a recipe: options from ``fn``'s signature, then run it on a cluster.

    ``def main(n_runs: int = 10_000, out: Path = Path("out"))`` gets ``--n-runs``
    and ``--out``; help text comes from the docstring's ``Args:`` section. Cluster
    flags (``--cluster``, ``--workers``, ``--set``) choose where it runs, ``local``
    by default. Under ``sweepkit run`` the cluster is already chosen.
    """
    doc = inspect.getdoc(fn) or ""
    epilog = "Where it runs: the options of `sweepkit run` (--cluster NAME, --workers N, --set KEY=VALUE, --progress)."
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=_Help, allow_abbrev=False, epilog=epilog if _UNDER_RUN else None,
    )
    helps = dict(re.findall(r"^\s*(\w+)\s*(?:\([^)]*\))?:\s*(.+)$", doc.partition("Args:")[2], re.M))
    hints = typing.get_type_hints(fn)
    for name, p in inspect.signature(fn).parameters.items():
        kind = _optional_inner(hints.get(name, type(p.default) if p.default is not inspect.Parameter.empty else str))
        kw: dict[str, Any] = {"help": helps.get(name, "")}
        if p.default is inspect.Parameter.empty:
            kw["required"] = True
        else:
            kw["default"] = p.default
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is typing.Literal:
            kw["choices"] = typing.get_args(kind)
        elif typing.get_origin(kind) in (list, tuple):  # --sizes 250 1000
            kw["nargs"] = "+"
            kw["type"] = next((a for a in typing.get_args(kind) if a is not Ellipsis), str)
        elif kind in (int, float, str, Path):
            kw["type"] = kind
        else:
            raise TypeError(f"{fn.__name__}(): option {name!r} has type {kind}; recipe options can be "
                            "int, float, str, bool, Path, Literal[...] or a list of those")
        parser.add_argument("--" + name.replace("_", "-"), dest=name, **kw)
    if not _UNDER_RUN:
        add_cluster_flags(parser)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = [o for action in parser._actions for o in action.option_strings]
        close = difflib.get_close_matches(unknown[0].split("=")[0].replace("_", "-"), flags, n=1)
        parser.error(f"unrecognized argument {unknown[0]!r}" + (f"; did you mean {close[0]}?" if close else ""))
    options = vars(args)
    if _UNDER_RUN:
        return fn(**options)
    with cluster_flags(argparse.Namespace(**{k: options.pop(k) for k in ("cluster", "workers", "set", "progress")})):
        try:
            return fn(**options)
        except KeyboardInterrupt:
            sys.exit("sweepkit: interrupted")


def _optional_inner(kind: Any) -> Any:
    """``int | None`` -> ``int``."""
    inner = [a for a in typing.get_args(kind) if a is not type(None)]
    return inner[0] if typing.get_origin(kind) in (typing.Union, types.UnionType) and inner else kind


# -- sweepkit clusters / job-script ----------------------------------------------------------
def cmd_clusters(args: argparse.Namespace, rest: list[str]) -> None:
    if args.show:
        profile = profiles.resolve(args.show)
        print(f"{profile.name}: backend {profile.backend}, from {profile.source}")
        for key, value in sorted(profile.options.items()):
            layer = profile.origin.get(key, "built-in default")
            if layer.startswith("profile file"):
                layer = "profile file"
            elif layer == "environment":
                layer = "environment: SWEEPKIT_" + key.upper().replace("-", "_")
            print(f"  {key}: {_option_text(key, value)}    # {layer}")
        return
    found = profiles.available()
    rows = [("PROFILE", "BACKEND", "FILE", "DESCRIPTION")]
    for name, paths in sorted(found.items()):
        data = yaml.safe_load(paths[0].read_text()) or {}
        rows.append((name, str(data.get("backend", "?")), str(paths[0]), str(data.get("description", ""))))
        rows += [("", "", f"(shadows {p})", "") for p in paths[1:]]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
    print("\nProfiles are found in, first match wins: " + ", ".join(str(d) for d in profiles.search_path()))


def _option_text(key: str, value: Any) -> str:
    if key == "workers" and isinstance(value, (tuple, list)):
        low, high = value
        return str(high) if low == high else f"{low}:{high}"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def cmd_job_script(args: argparse.Namespace, rest: list[str]) -> None:
    from .backends import backend_for
    from .manifest import redact

    args.cluster = args.profile
    with cluster_flags(args):
        profile = profiles.resolve()
    script = backend_for(profile.backend, profile.name).job_script(profile.options)
    if script is None:
        raise ValueError(f"profile {profile.name!r} (backend {profile.backend}) submits no job script")
    print(redact(script), end="" if script.endswith("\n") else "\n")


# -- stored runs --------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace, rest: list[str]) -> None:
    from .report import status_text

    print(status_text(args.store))


def cmd_results(args: argparse.Namespace, rest: list[str]) -> None:
    from .report import _csv_cell, write_table
    from .store import load

    if args.format == "parquet" and args.output is None:
        raise ValueError("--format parquet writes a file: give it with --output FILE.parquet")
    frame = load(args.store).to_frame()
    if args.output is None:
        frame.map(_csv_cell).to_csv(sys.stdout, index=False)
        return
    output = write_table(frame, args.output)
    print(f"wrote {len(frame)} rows to {output}", file=sys.stderr)


def cmd_verify(args: argparse.Namespace, rest: list[str]) -> int:
    from .report import verify

    report = verify(args.store, sample=args.sample)
    for row in report:
        print(f"task {row['task']:>8}  {row['result']:<8}  {row['detail']}")
    bad = [r for r in report if r["result"] != "match"]
    print(f"{len(report) - len(bad)} of {len(report)} recomputed tasks match the stored results")
    return 1 if bad else 0


COMMANDS: dict[str, Callable[[argparse.Namespace, list[str]], Any]] = {
    "run": cmd_run, "clusters": cmd_clusters, "job-script": cmd_job_script,
    "status": cmd_status, "results": cmd_results, "verify": cmd_verify,
}
