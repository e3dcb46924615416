"""``lfp-mech``: run the study, or one stage of it, from the command line.

Examples::

    lfp-mech run                                  # the default study: SmolLM2-135M, offline, CPU
    lfp-mech run --preset smoke                   # tiny random model, every stage, < 2 minutes
    lfp-mech run --set seed=1 --set rlhf.max_steps=10 --run-dir runs/seed1
    lfp-mech run --rlhf.max_steps 10              # the same option as a flag
    lfp-mech run --config my_run.toml             # a config file (see `lfp-mech config`)
    lfp-mech run --stages model,rlhf              # only these stages (resume-aware)
    lfp-mech run --set device=cuda --set dtype=auto   # on a GPU, bf16 where it supports it
    accelerate launch --multi_gpu --num_processes 2 -m lfp_mech run --set device=cuda
                                                  # RLHF data-parallel on 2 GPUs, the rest on
                                                  # the main process (ACCELERATE_USE_CPU=1 and
                                                  # device=cpu: 2 CPU processes over gloo)
    lfp-mech run --help-stage irl                 # the options of one stage
    lfp-mech config --preset smoke > smoke.toml   # the fully resolved config, as TOML
    lfp-mech models                               # what can be loaded, what is available offline
    lfp-mech stages                               # the stages of a run, in order
    lfp-mech report runs/default                  # rewrite a run's report.md / report.html
    lfp-mech push runs/default --repo-id me/lfp   # upload the tuned policy and SAEs to the hub
    lfp-mech push runs/default --repo-id me/lfp --local-dir out/  # the same folder, no upload
"""

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from lfp_mech.errors import ConfigError, LfpMechError

logger = logging.getLogger("lfp_mech")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; ``run`` and ``config`` hand their config flags on to tyro."""
    parser = argparse.ArgumentParser(
        prog="lfp-mech",
        description="Mechanistic interpretability of RLHF: what did a model learn from its "
        "reward (learned feedback patterns, via SAE probes), and can the reward be recovered "
        "from behaviour (IRL)? Everything runs offline on CPU by default.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:" + (__doc__ or "").split("Examples::", 1)[1],
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        add_help=False,
        help="run (or resume) the study in a run directory",
        description="Run every stage, skipping those already complete with the same config. "
        "Writes runs/<name>/ with one folder per stage and manifest.json. Config options come "
        "from the preset, then --config, then --set, then option flags (later wins). "
        "GPU: --set device=cuda (--set dtype=auto: bf16 where supported). Several processes: "
        "accelerate launch --multi_gpu --num_processes N -m lfp_mech run ... trains the RLHF "
        "stage data-parallel and runs every other stage on the main process, in one run "
        "directory.",
    )
    _config_source_arguments(run)
    run.add_argument("--run-dir", help="run directory (default: runs/<name>)")
    run.add_argument("--stages", help="comma-separated stages to run (default: all)")
    run.add_argument("--force", default="", help="comma-separated stages to rerun even if complete")
    run.add_argument("--help-stage", metavar="STAGE", help="show the options of one stage")
    run.add_argument("-h", "--help", action="store_true", help="show every option and exit")
    _verbose_argument(run)
    config = sub.add_parser(
        "config",
        add_help=False,
        help="print the fully resolved run config as TOML (read back by run --config)",
    )
    _config_source_arguments(config)
    config.add_argument("-h", "--help", action="store_true", help="show every option and exit")
    _verbose_argument(config)
    sub.add_parser("models", help="list loadable models and whether they are available offline")
    sub.add_parser("stages", help="list the stages of a run, in order")
    sub.add_parser("presets", help="list the presets")
    report = sub.add_parser("report", help="rewrite report.md / report.html of a run directory")
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (runs/<name>)")
    _push_parser(sub)
    return parser


def _push_parser(sub: argparse._SubParsersAction) -> None:
    push = sub.add_parser(
        "push",
        help="upload a run's tuned policy and SAEs to the Hugging Face hub",
        description="Upload RUN_DIR's tuned policy (HF format, with a model card) and its SAEs "
        "(SAE-Lens's hub layout: one folder per SAE, loadable with "
        "sae_lens.SAE.from_pretrained(REPO, SAE_ID)) to one hub repo, in one commit. Needs a "
        "hub login (`hf auth login` or HF_TOKEN); --local-dir writes the folder instead.",
    )
    push.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    push.add_argument("--repo-id", required=True, metavar="USER/NAME", help="the hub repo")
    push.add_argument(
        "--what", default="policy,saes", help="comma-separated: policy, saes (default: both)"
    )
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument(
        "--local-dir",
        metavar="DIR",
        help="write the folder that would be uploaded to DIR and upload nothing (no hub needed)",
    )
    push.add_argument(
        "--dry-run",
        action="store_true",
        help="list the files that would be uploaded and upload nothing (no hub needed)",
    )


def _verbose_argument(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: absent after the command, it leaves `lfp-mech -v run`'s value alone
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )


def _config_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help="preset name (`lfp-mech presets`; default: default)")
    parser.add_argument("--config", help="a TOML run config (as `lfp-mech config` writes it)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an option: seed=1, model=tiny-neox, rlhf.max_steps=10, "
        "saes.sweep_alphas=[1e-3,1e-2], activations.base_model=false (repeatable)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The ``lfp-mech`` entry point; returns the exit status."""
    args, extra = build_parser().parse_known_args(argv)
    # force: an imported library may already have configured the root logger. Third-party
    # INFO chatter (TransformerLens logs to the root logger) stays hidden; ours is shown.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # OMP_WAIT_POLICY is left to the user (unset: OpenMP's threads spin briefly before they
    # sleep). PASSIVE (threads sleep at once) made sampling 1.33x and GRPO steps 1.6x slower
    # on a 2-core CPU (docs/budget.md); set it when several processes share the cores.
    if extra and args.command not in ("run", "config"):
        build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return _dispatch(args, extra)
    except LfpMechError as error:
        logger.error("%s", error)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(args: argparse.Namespace, extra: list[str]) -> int:
    from lfp_mech.runner import commands

    if args.command in ("run", "config"):
        if args.help or (args.command == "run" and args.help_stage):
            commands.print_help(args, build_parser())
            return 0
        config = commands.resolve(args.preset, args.config, args.set, extra)
        if config.tracking != "wandb":  # libraries that log to W&B by themselves stay quiet
            os.environ.setdefault("WANDB_MODE", "disabled")
        if args.command == "config":
            sys.stdout.write(config.to_toml())
            return 0
        run_dir = commands.run(config, args.run_dir, args.stages, args.force)
        from lfp_mech.distributed import is_main_process

        if is_main_process():  # the other processes of `accelerate launch` leave quietly
            sys.stdout.write(f"run complete: {run_dir}\n")
    elif args.command == "models":
        sys.stdout.write(commands.models_table())
    elif args.command == "stages":
        sys.stdout.write(commands.stages_table())
    elif args.command == "presets":
        sys.stdout.write(commands.presets_table())
    elif args.command == "report":
        from lfp_mech.runner.report import write_report

        markdown, page = write_report(args.run_dir)
        sys.stdout.write(f"{markdown}\n{page}\n")
    elif args.command == "push":
        sys.stdout.write(commands.push(args))
    else:  # pragma: no cover - argparse rejects other commands
        raise ConfigError(f"unknown command {args.command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
