"""The run config: every stage's config dataclass nested in one, and the one way to parse it.

The command line (``--rlhf.max_steps 10``), ``--set rlhf.max_steps=10``, TOML files and presets all
become command-line arguments for `tyro <https://brentyi.github.io/tyro/>`_, which builds
[`RunConfig`][lfp_mech.runner.config.RunConfig] from the dataclasses' types, defaults and
docstrings. So there is one source of truth for what an option is called, its type, its default, its
documentation (``--help``) and its validation, and every invalid input fails before any stage runs
with one line naming the option and what is allowed.

Why tyro: it builds nested dataclasses (a section per stage) from their annotations and attribute
docstrings with no registration code, reads ``Literal``/``Optional``/tuple types, prints a
grouped ``--help``, and lets a preset be the default instance. (simple-parsing, which sparsify
uses, needs its own conflict and prefix settings for nested sections; draccus has no grouped
help.)
"""

import dataclasses
import difflib
import json
import os
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from lfp_mech.activations.config import ActivationConfig
from lfp_mech.config_base import RUN_LEVEL_FIELDS
from lfp_mech.devices import check_names
from lfp_mech.diff.config import DiffConfig
from lfp_mech.divergence.config import DivergenceConfig
from lfp_mech.errors import ConfigError
from lfp_mech.irl.config import IRLConfig
from lfp_mech.models.config import ModelConfig
from lfp_mech.probes.config import ProbesConfig
from lfp_mech.rlhf.config import RLHFConfig
from lfp_mech.saes.config import SAEConfig
from lfp_mech.tracking import Backend, check_backend_name
from lfp_mech.validate.config import ValidateConfig

__all__ = [
    "RunConfig",
    "StagesConfig",
    "config_from_dict",
    "parse_args",
    "set_args",
    "stage_options",
]

DEFAULT_MODEL = "smollm2-135m"


@dataclass
class StagesConfig:
    """One section per stage (``--<stage>.<option>``, ``[stages.<stage>]`` in TOML)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    rlhf: RLHFConfig = field(default_factory=RLHFConfig)
    divergence: DivergenceConfig = field(default_factory=DivergenceConfig)
    activations: ActivationConfig = field(default_factory=ActivationConfig)
    saes: SAEConfig = field(default_factory=SAEConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    diff: DiffConfig = field(default_factory=DiffConfig)
    irl: IRLConfig = field(default_factory=IRLConfig)


@dataclass
class RunConfig:
    """Everything that defines a run: the model, seed, device and precision, and every stage's
    options."""

    name: str = "default"
    """Run name; the run directory defaults to ``runs/<name>``."""
    model: str = DEFAULT_MODEL
    """Base model: a registered name (``lfp-mech models``), a local HF checkpoint folder, or any
    Hugging Face hub id (``EleutherAI/pythia-14m``; from the local HF cache offline). Its
    architecture must be one TransformerLens converts (Llama, GPT-NeoX, GPT-Neo, GPT-2, Gemma,
    Gemma 2, Qwen2, Mistral); it and every stage's block options are checked against the model's
    config before any stage runs (also when the model stage is already complete)."""
    seed: int = 0
    """Seed of every stage (each stage's ``seed``)."""
    device: str = "cpu"
    """Torch device of every stage: "cpu", "cuda", "cuda:1", "mps". Under ``accelerate launch``
    each process of the data-parallel RLHF stage uses its own GPU of this type."""
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """Precision of the models: "float32", "bfloat16", "float16" (GPU only) or "auto"
    (bfloat16 on a CUDA GPU that supports it, else float32). TRL training uses it as mixed
    precision (fp32 master weights); SAE training, probe fitting and the IRL reward model stay
    in float32. Checked against the machine before any stage runs."""
    tracking: Backend = "none"
    """Log the training loops (RLHF steps, SAE steps, IRL epochs) to "tensorboard" or "wandb"
    under ``<run_dir>/tracking/<stage>/`` ("none": no logging). Needs ``pip install
    tensorboard`` / ``wandb``. Observes only: it does not change results, and changing it reruns
    no stage (``--force STAGE`` to log a completed one)."""
    stages: Annotated[StagesConfig, tyro.conf.arg(name="")] = field(default_factory=StagesConfig)
    """The stages' options."""

    def __post_init__(self) -> None:
        if isinstance(self.stages, Mapping):
            raise ConfigError(
                "RunConfig(stages=...) takes a StagesConfig; build a run config from a dict "
                "with lfp_mech.runner.config.config_from_dict"
            )
        if not self.name or self.name in (".", "..") or "/" in self.name or "\\" in self.name:
            raise ConfigError(
                f"name = {self.name!r} is not a run name: use a non-empty name without slashes "
                "(the run directory is runs/<name>; --run-dir sets any other folder)"
            )
        check_names(self.device, self.dtype)
        _set_run_level(self.stages, {name: getattr(self, name) for name in RUN_LEVEL_FIELDS})
        check_backend_name(self.tracking)

    def stage(self, name: str) -> Any:
        """The config section of stage ``name``."""
        if not hasattr(self.stages, name):
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(section_names())}")
        return getattr(self.stages, name)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (run-level fields once, not repeated in every stage section)."""
        return _without_run_level(dataclasses.asdict(self))

    def to_toml(self) -> str:
        """The resolved config as TOML; ``lfp-mech run --config`` reads it back to the same run.

        TOML has no null: ``None`` is written as the string ``"None"``.
        """
        import tomli_w

        header = (
            '# lfp_mech run config (every option resolved; TOML has no null: None is "None").\n'
            "# Run it: lfp-mech run --config <this file>\n"
        )
        return header + tomli_w.dumps(_none_as_string(self.to_dict()))


def _set_run_level(section: Any, values: Mapping[str, Any]) -> None:
    """Copy the run's seed/device/dtype into every (nested) stage config that declares them."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if f.name in values:
            setattr(section, f.name, values[f.name])
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            _set_run_level(value, values)


def _without_run_level(data: dict[str, Any]) -> dict[str, Any]:
    def strip(section: Any) -> Any:
        if not isinstance(section, dict):
            return section
        return {k: strip(v) for k, v in section.items() if k not in RUN_LEVEL_FIELDS}

    return {**data, "stages": {k: strip(v) for k, v in data["stages"].items()}}


def _none_as_string(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _none_as_string(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_none_as_string(v) for v in data]
    return "None" if data is None else data


# --------------------------------------------------------------------------- the option tree


def section_names() -> list[str]:
    """The stage sections of the run config, in run order."""
    return [f.name for f in dataclasses.fields(StagesConfig)]


def stage_options(section: str | None = None) -> list[str]:
    """Dotted option names of one section (``rlhf.max_steps``), or the top-level ones."""
    if section is None:
        return [f.name for f in dataclasses.fields(RunConfig) if f.name != "stages"]
    node: Any = StagesConfig
    for part in section.split("."):
        match = [f for f in dataclasses.fields(node) if f.name == part]
        if not match or not dataclasses.is_dataclass(match[0].type):
            raise ConfigError(
                f"unknown section {section!r}; sections: {', '.join(section_names())}"
            )
        node = match[0].type
    return [f"{section}.{name}" for name in _leaf_names(node)]


def _leaf_names(cls: Any, prefix: str = "") -> Iterator[str]:
    for f in dataclasses.fields(cls):
        if f.name in RUN_LEVEL_FIELDS:
            continue
        if dataclasses.is_dataclass(f.type):
            yield from _leaf_names(f.type, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}"


def _check_key(key: str) -> None:
    """A one-line error for an unknown dotted option, naming the valid ones."""
    head, dot, _ = key.partition(".")
    if not dot:
        valid = stage_options()
        if key in valid:
            return
        if key in section_names():
            raise ConfigError(
                f"{key!r} is a stage, not an option: give its options as a table ([stages.{key}] "
                f"in TOML) or one by one (--set {key}.OPTION=VALUE; lfp-mech run --help-stage {key})"
            )
        raise ConfigError(_unknown(key, valid, "run options"))
    if head not in section_names():
        raise ConfigError(
            f"unknown stage {head!r} in {key!r}; stages: {', '.join(section_names())}"
        )
    valid = stage_options(head)
    if key not in valid:
        raise ConfigError(_unknown(key, valid, f"{head} options"))


def _unknown(key: str, valid: Sequence[str], what: str) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown option {key!r}{hint}; {what}: {', '.join(valid)}"


# --------------------------------------------------------------------------- to tyro arguments


def set_args(assignments: Sequence[str]) -> list[str]:
    """``--set`` items (``rlhf.max_steps=10``, ``saes.sweep_alphas=[1e-3,1e-2]``) as arguments.

    A value in brackets (a JSON list, or unquoted strings ``[a,b]``) gives one argument per
    element; anything else is passed as written and parsed by the option's type.
    """
    args: list[str] = []
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--set {assignment!r} is not KEY=VALUE (e.g. --set rlhf.max_steps=10)"
            )
        _check_key(key)
        raw = raw.strip()
        kind = _option_type(key)
        if kind is bool:  # TOML's true/false, as a user types them
            raw = BOOL_WORDS.get(raw.lower(), raw)
        elif raw.lower() in ("none", "null") and type(None) in typing.get_args(kind):
            raw = "None"  # an optional option unset, however it is spelled
        args += [f"--{key}", *_values(raw)]
    return args


BOOL_WORDS = {
    **dict.fromkeys(("true", "yes", "on", "1"), "True"),
    **dict.fromkeys(("false", "no", "off", "0"), "False"),
}
"""How ``--set`` reads a yes/no option's value (case-insensitive; tyro takes True / False)."""


def _option_type(key: str) -> Any:
    """The type of dotted option ``key`` (checked by ``_check_key``)."""
    parts = key.split(".")
    node: Any = RunConfig if len(parts) == 1 else StagesConfig
    for part in parts:
        node = next(f.type for f in dataclasses.fields(node) if f.name == part)
    return node


def _values(raw: str) -> list[str]:
    if raw.startswith("["):
        try:
            items = json.loads(raw)
        except json.JSONDecodeError:  # unquoted strings: [a/b,c]
            items = (
                [v.strip() for v in raw[1:-1].split(",") if v.strip()]
                if raw.endswith("]")
                else None
            )
        if isinstance(items, list):
            return [_scalar(v) for v in items]
    return [raw]


def _scalar(value: Any) -> str:
    return "None" if value is None else str(value)


def dict_args(data: Mapping[str, Any]) -> list[str]:
    """A nested config dict (TOML, presets) as arguments: ``{"stages": {"rlhf": {...}}}`` or
    ``{"rlhf": {...}}`` both give ``--rlhf.<option> <value>``."""
    args: list[str] = []
    for key, value in data.items():
        if key == "stages" and isinstance(value, Mapping):
            args += dict_args(value)
        else:
            args += _flatten(key, value)
    return args


def _flatten(key: str, value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [arg for k, v in value.items() for arg in _flatten(f"{key}.{k}", v)]
    _check_key(key)
    if isinstance(value, list | tuple):
        return [f"--{key}", *(_scalar(v) for v in value)]
    return [f"--{key}", _scalar(value)]


# --------------------------------------------------------------------------- parsing


def parse_args(
    args: Sequence[str], *, prog: str = "lfp-mech run", base: RunConfig | None = None
) -> RunConfig:
    """Build a [`RunConfig`][lfp_mech.runner.config.RunConfig] from command-line arguments (later
    ones win).

    Raises [`ConfigError`][lfp_mech.errors.ConfigError] with one line naming the option for an
    unknown option, a value of the wrong type or an invalid value, before anything runs."""
    with _one_line_errors():
        return tyro.cli(
            RunConfig,
            args=list(args),
            prog=prog,
            default=base,
            use_underscores=True,
            config=(tyro.conf.FlagConversionOff,),
        )


def config_from_dict(data: Mapping[str, Any], *, base: RunConfig | None = None) -> RunConfig:
    """A [`RunConfig`][lfp_mech.runner.config.RunConfig] from nested plain data (as
    [`RunConfig.to_dict`][lfp_mech.runner.config.RunConfig.to_dict] returns)."""
    return parse_args(dict_args(data), base=base)


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A TOML file's data (``ConfigError`` if it is missing or not valid TOML)."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err


class _OneLineError(Exception):
    pass


def _one_line_errors():
    """Turn tyro's parse failures into one-line [`ConfigError`][lfp_mech.errors.ConfigError]s
    (tyro's hook, if present)."""
    import contextlib

    try:
        from tyro import _errors
    except ImportError:  # an older/newer tyro without the hook: its own message, then exit 2
        return contextlib.nullcontext()

    def hook(event: Any) -> None:
        raise ConfigError(_describe(event, _errors))

    return _errors.on_parse_error(hook)


def _describe(event: Any, errors: Any) -> str:
    argument = getattr(event, "argument", None)
    option = _option_name(argument) if argument is not None else None
    if isinstance(event, errors.UnrecognizedArgs):
        flags = [t for t in event.tokens if t.startswith("--")]
        key = flags[0][2:].replace("-", "_") if flags else " ".join(event.tokens)
        try:
            _check_key(key)
        except ConfigError as err:
            return str(err)
        return f"unexpected argument(s) {' '.join(event.tokens)!r}"
    if isinstance(event, errors.InvalidChoice):
        return f"{option} = {event.value!r}: must be one of {', '.join(event.choices)}"
    if isinstance(event, errors.InstantiationFailure):
        first_line = event.message.strip().splitlines()[0]  # a union lists one error per type
        if option is not None:
            return f"{option}: invalid value ({first_line}); expected {_type_name(argument)}"
        return first_line
    if isinstance(event, errors.BadValue):
        return f"{option}: wrong number of values; expected {_type_name(argument)}"
    return f"invalid run config ({type(event).__name__})"


def _option_name(argument: Any) -> str:
    prefix = getattr(argument, "extern_prefix", "")
    name = argument.field.intern_name
    return f"{prefix}.{name}" if prefix else name


def _type_name(kind: Any) -> str:
    """``int``, ``int | 'auto' | None``, ..."""
    kind = getattr(getattr(kind, "field", None), "type_stripped", kind)
    if typing.get_origin(kind) is typing.Literal:
        return " | ".join(repr(v) for v in typing.get_args(kind))
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(k) for k in typing.get_args(kind))
    if kind is type(None):
        return "None"
    if typing.get_origin(kind) is tuple:  # tuple[float, ...]: say what goes in it
        items = [a for a in typing.get_args(kind) if a is not Ellipsis]
        inner = ", ".join(_type_name(a) for a in items)
        return f"a list of {inner} ([a,b,...] with --set)" if items else "a list"
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
