"""``lfp-mech``: run the study, or one stage of it, from the command line.

Examples::

    lfp-mech run                          # the default study: SmolLM2-135M, offline, CPU
    lfp-mech run --preset smoke           # tiny random model, every stage, < 2 minutes
    lfp-mech run --set seed=1 --set rlhf.max_steps=10 --run-dir runs/seed1
    lfp-mech run --stages model,rlhf      # only these stages (resume-aware)
    lfp-mech models                       # what can be loaded, and what is available offline
    lfp-mech stages                       # the stages of a run, in order
"""

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from lfp_mech.errors import LfpMechError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfp-mech",
        description="Mechanistic interpretability of RLHF: what did a model learn from its "
        "reward (learned feedback patterns, via SAE probes), and can the reward be recovered "
        "from behaviour (IRL)? Everything runs offline on CPU by default.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:" + __doc__.split("Examples::", 1)[1],
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run (or resume) the whole study in a run directory",
        description="Run every stage, skipping those already complete with the same config. "
        "Writes runs/<name>/ with one folder per stage and manifest.json.",
    )
    source = run.add_mutually_exclusive_group()
    source.add_argument("--preset", default="default", help="preset name (see `lfp-mech presets`)")
    source.add_argument("--config", help="a .toml or .json run config (may set `preset = ...`)")
    run.add_argument("--run-dir", help="run directory (default: runs/<name>)")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value: seed=1, model=tiny-neox, rlhf.max_steps=10 (repeatable)",
    )
    run.add_argument("--stages", help="comma-separated stages to run (default: all)")
    run.add_argument("--force", default="", help="comma-separated stages to rerun even if complete")

    sub.add_parser("models", help="list loadable models and whether they are available offline")
    sub.add_parser("stages", help="list the stages of a run, in order")
    presets = sub.add_parser("presets", help="list presets, or print one as a config")
    presets.add_argument("name", nargs="?", help="print this preset's full config as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # force: an imported library may already have configured the root logger. Third-party
    # INFO chatter (TransformerLens logs to the root logger) stays hidden; ours is shown.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    logging.getLogger("lfp_mech").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("WANDB_MODE", "disabled")
    try:
        return _dispatch(args)
    except LfpMechError as error:
        logging.getLogger("lfp_mech").error("%s", error)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    from lfp_mech import pipeline

    if args.command == "run":
        config = (
            pipeline.load_config(args.config)
            if args.config
            else pipeline.preset_config(args.preset)
        )
        config = pipeline.apply_overrides(config, args.set)
        run_dir = pipeline.run_pipeline(
            config,
            args.run_dir,
            stages=_split(args.stages) or None,
            force=_split(args.force),
        )
        print(f"run complete: {run_dir}")
    elif args.command == "models":
        from lfp_mech.models import available_models

        rows = available_models()
        width = max(len(r["name"]) for r in rows)
        for row in rows:
            print(f"{row['name']:<{width}}  {row['status']}\n{'':<{width}}  {row['description']}")
    elif args.command == "stages":
        for index, stage in enumerate(pipeline.STAGES.values(), start=1):
            requires = f"  (needs {', '.join(stage.requires)})" if stage.requires else ""
            print(f"{index}. {stage.name}: {stage.description}{requires}")
    elif args.command == "presets":
        if args.name:
            print(json.dumps(pipeline.preset_config(args.name).to_dict(), indent=2))
        else:
            for name, data in pipeline.PRESETS.items():
                print(f"{name}: model {data['model']}")
    return 0


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


if __name__ == "__main__":
    sys.exit(main())
