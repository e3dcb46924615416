"""What the ``lfp-mech`` commands do, apart from parsing
([`lfp_mech.runner.cli`][lfp_mech.runner.cli])."""

import argparse
import contextlib
import dataclasses
import io
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import tyro

from lfp_mech.errors import ConfigError
from lfp_mech.runner.config import (
    RunConfig,
    dict_args,
    load_toml,
    parse_args,
    section_names,
    set_args,
)
from lfp_mech.runner.presets import PRESET_SUMMARIES, PRESETS
from lfp_mech.runner.registry import STAGES

__all__ = ["load_config", "print_help", "push", "resolve", "run"]

DEFAULT_PRESET = "default"


def resolve(
    preset: str | None,
    config_file: str | os.PathLike[str] | None,
    assignments: Sequence[str],
    flags: Sequence[str],
) -> RunConfig:
    """The run config from a preset, a TOML file, ``--set`` items and option flags (later wins).

    A TOML file may name its base preset (``preset = "smoke"``); ``--preset`` and that key must
    not disagree. Every invalid input fails here, with one line, before any stage runs.
    """
    data = load_toml(config_file) if config_file else {}
    file_preset = data.pop("preset", None)
    if preset and file_preset and preset != file_preset:
        raise ConfigError(
            f"--preset {preset} and the config file's preset = {file_preset!r} disagree"
        )
    base = preset or file_preset or DEFAULT_PRESET
    if base not in PRESETS:
        raise ConfigError(f"unknown preset {base!r}; presets: {', '.join(PRESETS)}")
    args = [*dict_args(PRESETS[base]), *dict_args(data), *set_args(assignments), *flags]
    return parse_args(args)


def load_config(path: str | os.PathLike[str]) -> RunConfig:
    """The run config of a TOML file (its ``preset`` key, default "default", is the base)."""
    return resolve(None, path, (), ())


def run(config: RunConfig, run_dir: str | None, stages: str | None, force: str) -> Path:
    """Run the pipeline for ``config`` (comma-separated stage lists as on the command line)."""
    from lfp_mech.runner.pipeline import run_pipeline

    if stages is not None and not _split(stages):
        raise ConfigError(
            f"--stages {stages!r} names no stage: list some (lfp-mech stages), or leave it out "
            "to run them all"
        )
    return run_pipeline(config, run_dir, stages=_split(stages) or None, force=_split(force))


def print_help(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``run --help`` / ``config --help``: the command's own options, then every config option
    (defaults shown as the chosen preset resolves them); ``--help-stage``: one stage's options."""
    # a bad preset, file or --set fails here, as it would in a run: help never shows defaults
    # other than the ones the run would use
    base = resolve(args.preset, args.config, args.set, [])
    stage = getattr(args, "help_stage", None)
    if stage:
        _stage_help(stage, base)
        return
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sys.stdout.write(subparsers.choices[args.command].format_help())
    sys.stdout.write(
        "\nConfig options (also settable with --set KEY=VALUE and in the TOML file):\n"
    )
    # the command's usage line is above; tyro's own ("[-h] [OPTIONS]") would be a second one
    sys.stdout.write(_without_usage(_tyro_help_text(RunConfig, base, f"lfp-mech {args.command}")))


def _stage_help(stage: str, base: RunConfig) -> None:
    if stage not in section_names():
        raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(section_names())}")
    section = getattr(base.stages, stage)
    # a one-field wrapper, so the flags carry the stage prefix they have in a run
    wrapper = dataclasses.make_dataclass(
        f"{stage}_options",
        [(stage, type(section), dataclasses.field(default_factory=lambda: section))],
    )
    sys.stdout.write(_tyro_help_text(wrapper, None, f"lfp-mech run --help-stage {stage}"))


def _tyro_help_text(cls: type, default: object, prog: str) -> str:
    """tyro's help for ``cls`` (it prints and exits; captured here)."""
    output = io.StringIO()
    with (
        _plain_help_text(),
        contextlib.redirect_stdout(output),
        contextlib.suppress(SystemExit),
    ):
        tyro.cli(
            cls,
            args=["--help"],
            prog=prog,
            default=default,
            use_underscores=True,
            config=(tyro.conf.FlagConversionOff,),
        )
    return output.getvalue()


def _without_usage(help_text: str) -> str:
    """``help_text`` less its leading ``usage:`` paragraph."""
    if not help_text.lstrip().startswith("usage:"):
        return help_text
    return help_text.lstrip().split("\n\n", 1)[-1]


_MKDOCS_LINK = re.compile(r"\[`([^`]+)`\]\[[^\]]*\]")
_LIST_ITEM = re.compile(r"^(?:[-*] |\d+\. )")


def plain_help_text(docstring: str) -> str:
    """A config docstring as one help paragraph per blank-line paragraph: lines joined (list
    items kept on their own lines), mkdocs cross-references and reST literals as plain text."""
    paragraphs = []
    for paragraph in re.split(r"\n\s*\n", docstring.strip()):
        lines: list[str] = []
        for line in (part.strip() for part in paragraph.splitlines()):
            if lines and line and not _LIST_ITEM.match(line):
                lines[-1] += " " + line
            elif line:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return _MKDOCS_LINK.sub(r"\1", "\n\n".join(paragraphs)).replace("``", "")


@contextlib.contextmanager
def _plain_help_text() -> Iterator[None]:
    """tyro joins a docstring's lines only where the next one starts with a letter, so ours
    (wrapped at 100 columns, often before markup or a parenthesis) print ragged. Inside, its line
    joiner is :func:`plain_help_text` (tyro's caches cleared on entry and exit, so parsing
    outside is untouched); on a tyro without that internal, help prints as tyro formats it."""
    strings = getattr(tyro, "_strings", None)
    cache = getattr(tyro, "_unsafe_cache", None)
    original = getattr(strings, "remove_single_line_breaks", None)
    if original is None or cache is None:
        yield
        return
    cache.clear_cache()
    strings.remove_single_line_breaks = plain_help_text
    try:
        yield
    finally:
        strings.remove_single_line_breaks = original
        cache.clear_cache()


def models_table() -> str:
    """``lfp-mech models``: every registered model with its offline availability."""
    from lfp_mech.models.conversion import SUPPORTED_ARCHITECTURES
    from lfp_mech.models.registry import available_models

    rows = available_models()
    width = max(len(r["name"]) for r in rows)
    table = "".join(
        f"{r['name']:<{width}}  {r['status']}\n{'':<{width}}  {r['description']}\n" for r in rows
    )
    return table + (
        "\nAlso accepted: any local HF checkpoint folder, and any hub id (org/name), loaded from "
        "the Hugging Face cache offline or from the hub.\nSupported architectures: "
        f"{', '.join(SUPPORTED_ARCHITECTURES)}.\n"
    )


def stages_table() -> str:
    """``lfp-mech stages``: the stages in run order, what each needs."""
    lines = []
    for index, spec in enumerate(STAGES, start=1):
        requires = f"  (needs {', '.join(spec.requires)})" if spec.requires else ""
        if spec.uses:
            requires += f"  (uses {', '.join(spec.uses)} when they have run)"
        lines.append(
            f"{index}. {spec.name}: {spec.description}{requires}\n"
            f"   code: lfp_mech/{spec.package}/stage.py, options: --help-stage {spec.name}\n"
        )
    return "".join(lines)


def presets_table() -> str:
    """``lfp-mech presets``: each preset's model and what it changes."""
    lines = []
    for name, data in PRESETS.items():
        changed = ", ".join(sorted(data.get("stages", {}))) or "nothing"
        lines.append(
            f"{name}: model {data['model']}; {PRESET_SUMMARIES[name]}\n"
            f"   stage sections changed: {changed}\n"
        )
    return "".join(lines)


def push(args: argparse.Namespace) -> str:
    """``lfp-mech push``: upload (or with ``--local-dir`` / ``--dry-run`` only write or list)
    the folder of a run's policy and SAEs; what to print."""
    import tempfile

    from lfp_mech.runner.push import push_run

    what = _split(args.what)
    if args.dry_run and not args.local_dir:
        with tempfile.TemporaryDirectory(prefix="lfp_mech_push_") as tmp:
            folder = Path(
                push_run(args.run_dir, args.repo_id, what=what, local_dir=Path(tmp) / "repo")
            )
            return _listing(folder, f"would upload to {args.repo_id}:")
    if args.local_dir:
        folder = Path(push_run(args.run_dir, args.repo_id, what=what, local_dir=args.local_dir))
        return _listing(folder, f"wrote the folder for {args.repo_id} (not uploaded): {folder}")
    url = push_run(args.run_dir, args.repo_id, what=what, private=args.private)
    return f"pushed to {url}\n"


def _listing(folder: Path, header: str) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    lines = [f"  {p.relative_to(folder)}  ({p.stat().st_size:,} bytes)" for p in files]
    return "\n".join([header, *lines, f"{len(files)} files, {total / 1e6:.1f} MB"]) + "\n"


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]
