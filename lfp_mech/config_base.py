"""What every stage's config dataclass shares: checks whose errors name the option, run-level
fields.

A stage's config (``lfp_mech/<stage>/config.py``) is a dataclass that subclasses
[`StageConfig`][lfp_mech.config_base.StageConfig] and sets ``section`` to its place in the run config, so that an invalid value
fails with one line naming the option, its value and what is allowed::

    saes.l1_coefficient = -1.0: must be >= 0

The run config nests every stage's dataclass
([`lfp_mech.runner.config.RunConfig`][lfp_mech.runner.config.RunConfig]); the command line,
``--set`` overrides, TOML files and presets are all parsed from it.

``seed``, ``device`` and ``dtype`` are run-level settings: a stage config declares them as
[`RunSeed`][lfp_mech.config_base.RunSeed], [`RunDevice`][lfp_mech.config_base.RunDevice] and
[`RunDtype`][lfp_mech.config_base.RunDtype], the run copies its own values into them, and they are
hidden from the command line (set ``--seed`` / ``--device`` / ``--dtype`` on the run). Built by
hand in Python, a stage config keeps the values it is given."""

import dataclasses
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar

import tyro

from lfp_mech.errors import ConfigError

__all__ = ["RunDevice", "RunDtype", "RunSeed", "StageConfig", "check_depths"]

RunSeed = Annotated[int, tyro.conf.Suppress]
"""A stage's ``seed`` field: the run's ``seed`` in a run, hidden from the command line."""
RunDevice = Annotated[str, tyro.conf.Suppress]
"""A stage's ``device`` field: the run's ``device`` in a run, hidden from the command line."""

RunDtype = Annotated[str, tyro.conf.Suppress]
"""A stage's ``dtype`` field: the run's ``dtype`` ("float32", "bfloat16", "float16"; "auto" is
resolved before any stage runs), hidden from the command line."""

RUN_LEVEL_FIELDS = ("seed", "device", "dtype")
"""Fields a run copies into every stage config (and its nested configs) that declares them."""


class StageConfig:
    """Base of the stage config dataclasses: validation helpers that name the option.

    Subclasses set ``section`` (``"saes"``, ``"validate.autointerp"``) and call the ``require_*``
    helpers from ``__post_init__``.
    """

    section: ClassVar[str] = ""

    def check_environment(self, run: Any) -> None:
        """Checks that need the machine (files, the hub), run before any stage runs for every
        stage that will run (``run`` is the run config); ``__post_init__`` checks values only,
        so a finished run's config still loads elsewhere. Default: nothing to check."""

    def invalid(self, option: str, requirement: str) -> ConfigError:
        """A one-line [`ConfigError`][lfp_mech.errors.ConfigError]:
        ``section.option = value: requirement``."""
        where = f"{self.section}.{option}" if self.section else f"{type(self).__name__}.{option}"
        return ConfigError(f"{where} = {getattr(self, option)!r}: {requirement}")

    def require(self, condition: bool, option: str, requirement: str) -> None:
        """Raise [`invalid`][lfp_mech.config_base.StageConfig.invalid] unless ``condition`` holds."""
        if not condition:
            raise self.invalid(option, requirement)

    def require_positive(self, *options: str) -> None:
        """Each option must be > 0."""
        for option in options:
            self.require(getattr(self, option) > 0, option, "must be > 0")

    def require_at_least(self, minimum: int | float, *options: str) -> None:
        """Each option must be >= ``minimum``."""
        for option in options:
            self.require(getattr(self, option) >= minimum, option, f"must be >= {minimum}")

    def require_optional_at_least(self, minimum: int | float, *options: str) -> None:
        """Each option must be None or >= ``minimum``."""
        for option in options:
            value = getattr(self, option)
            self.require(value is None or value >= minimum, option, f"must be >= {minimum} or None")

    def require_between(
        self,
        option: str,
        low: int | float,
        high: int | float,
        *,
        low_open: bool = False,
        high_open: bool = False,
    ) -> None:
        """``low <= option <= high``, with either end open on request."""
        value = getattr(self, option)
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        self.require(above and below, option, f"must be in {interval}")

    def check_depth(self, n_layers: int, model: str) -> None:
        """Check the section's decoder-block indices against ``model``, which has ``n_layers``
        blocks. The ``model`` stage calls it on every section (nested ones too) from the model's
        config, before any weights load, so an index that does not fit fails there and not
        stages later. Sections with block options override it; the default checks nothing."""

    def require_block(self, option: str, n_layers: int, model: str, *, first: int = 0) -> None:
        """``option`` is None or a block index of a model with ``n_layers`` blocks:
        ``first..n_layers - 1 + first`` (``first=1`` for "after block k" options)."""
        value = getattr(self, option)
        last = n_layers - 1 + first
        if value is not None and not first <= value <= last:
            raise self.invalid(
                option,
                f"does not fit {model}, which has {n_layers} decoder blocks; use "
                f"{first}..{last} (or None)",
            )

    def require_blocks(self, option: str, n_layers: int, model: str) -> None:
        """``option`` is None or a sequence of block indices of a model with ``n_layers``
        blocks."""
        values = getattr(self, option)
        bad = [v for v in values or () if not 0 <= v < n_layers]
        if bad:
            raise self.invalid(
                option,
                f"block(s) {bad} do not fit {model}, which has {n_layers} decoder blocks; use "
                f"0..{n_layers - 1} (or None)",
            )

    def require_choice(self, option: str, choices: Iterable[Any]) -> None:
        """The option must be one of ``choices``."""
        choices = list(choices)
        self.require(
            getattr(self, option) in choices,
            option,
            f"must be one of {', '.join(repr(c) for c in choices)}",
        )


def check_depths(sections: Any, n_layers: int, model: str) -> None:
    """Call [`StageConfig.check_depth`][lfp_mech.config_base.StageConfig.check_depth] on every
    stage config inside the dataclass ``sections`` (the run's ``stages``), nested ones too."""
    if isinstance(sections, StageConfig):
        sections.check_depth(n_layers, model)
    for f in dataclasses.fields(sections):
        value = getattr(sections, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_depths(value, n_layers, model)
