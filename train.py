"""Train one avatar from a NeRSemble-format subject.

    python train.py -s SUBJECT -m OUTPUT [--config configs/tensorial.yaml ...] [--flame PATH]
                    [--protocol ga|paper|none | --eval] [--iterations N] [--resolution-scale F]
                    [--set section.key=value] [--device D] [--backend B] [--resume [--allow-changes]]
                    [--check-config]

Configs compose in order (later wins), then command-line overrides. The resolved config is saved
as OUTPUT/config.yaml; checkpoints go to OUTPUT/checkpoints/ (atomic, the last K kept), and
``--resume`` continues the latest readable one exactly.

Every way a run ends leaves a state it resumes from exactly (exit codes):
    0    done
    1    crashed (an unexpected error): the last consistent state was saved first when possible
    2    bad input or a refused command: one line on stderr (a file, a setting, the fix)
    3    SIGTERM or SIGUSR1 (a scheduler's preemption warning): saved at the step boundary
    4    non-finite or diverging loss: the update was not applied; the last good state is saved
    130  SIGINT (Ctrl-C): saved at the step boundary (a second Ctrl-C stops without saving)
"""
from __future__ import annotations

import argparse
import sys

import yaml

from flame_model import DEFAULT_FLAME_MODEL_PATH
from gaussian_renderer import backend_choices_text
from scene.config import resolve_config
from scene.data.protocols import PROTOCOLS
from scene.training.trainer import EXIT_INTERRUPTED, EXIT_USER_ERROR, Trainer, TrainingStopped, TrainRequest
from utils.config import parse_assignment
from utils.errors import InputFileError, UserFacingError
from utils.stop_signals import StopSignals


class RefusedFlag(argparse.Action):
    """A flag of another codebase with no counterpart here: one line saying so, exit 2."""

    def __init__(self, option_strings, dest, message: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.message = message

    def __call__(self, parser, namespace, values, option_string=None):
        parser.exit(EXIT_USER_ERROR, f"error: {option_string} {self.message}\n")


def add_gaussian_avatars_flags(p: argparse.ArgumentParser) -> None:
    """GaussianAvatars' train.py flags, with their meaning there (or one line refusing them)."""
    ga = p.add_argument_group("GaussianAvatars flags", "accepted as GaussianAvatars' train.py spells them")
    ga.add_argument("--bind_to_mesh", action="store_true",
                    help="accepted and ignored: splats here are always bound to FLAME triangles")
    ga.add_argument("-w", "--white_background", action="store_true",
                    help="white background: the same as --set run.background=[1,1,1] (already the default)")
    ga.add_argument("--interval", type=int, metavar="N",
                    help="evaluate and save every N iterations (GaussianAvatars' shared interval): the same as "
                         "--set run.eval_interval=N --set run.save_interval=N")
    ga.add_argument("--port", action=RefusedFlag, metavar="N",
                    message="is GaussianAvatars' network viewer port: this train.py has no training viewer "
                            "(drop --port; watch the run with TensorBoard on OUTPUT/tensorboard, and look at any saved "
                            "checkpoint with python viewer.py -m OUTPUT)",
                    help="refused: there is no training viewer")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train a compact tensorial Gaussian head avatar.")
    p.add_argument("-s", "--source_path", help="subject folder (transforms_*.json); taken from OUTPUT/config.yaml with --resume")
    p.add_argument("-m", "--model_path", required=True, help="output folder")
    p.add_argument("--config", action="append", default=[], help="YAML config; repeat to compose (later wins)")
    p.add_argument("--flame", help=f"FLAME model pickle (default {DEFAULT_FLAME_MODEL_PATH})")
    p.add_argument("--flame-masks", help="FLAME_masks.pkl (default: beside the model)")
    p.add_argument("--eval", action="store_true", help="hold out val/test: the same as --protocol ga")
    p.add_argument("--protocol", choices=PROTOCOLS,
                   help="which frames train and which are held out (scene/data/protocols.py): ga (= --eval), paper "
                        "(test = the subject's FREE sequence), none (default without --eval: every frame trains)")
    p.add_argument("--iterations", type=int)
    p.add_argument("--resolution-scale", type=float, help="train on images and intrinsics scaled by F")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto | cpu | cuda")
    p.add_argument("--backend", help=f"rasterizer: {backend_choices_text()}")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="any config override")
    p.add_argument("--resume", action="store_true", help="continue the latest checkpoint in OUTPUT")
    p.add_argument("--allow-changes", action="store_true",
                   help="with --resume: continue even though the subject, FLAME files or config differ (recorded)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--check-config", action="store_true",
                   help="resolve the configs and overrides (plugins imported), print the resolved config and exit; "
                        "nothing is read from -s or written to -m (launch.py runs it before submitting)")
    add_gaussian_avatars_flags(p)
    return p.parse_args(argv)


def cli_overrides(args) -> list[dict]:
    named = {
        ("optim", "iterations"): args.iterations,
        ("run", "resolution_scale"): args.resolution_scale,
        ("run", "seed"): args.seed,
        ("run", "device"): args.device,
        ("run", "backend"): args.backend,
        ("run", "eval_interval"): args.interval,
        ("run", "save_interval"): args.interval,
        ("run", "background"): [1.0, 1.0, 1.0] if args.white_background else None,
    }
    out = [{section: {key: value}} for (section, key), value in named.items() if value is not None]
    out += [parse_assignment(text) for text in args.set]
    return out


def request_from_args(args: argparse.Namespace) -> TrainRequest:
    """The :class:`TrainRequest` the command line asks for (``--eval`` is ``--protocol ga``)."""
    if args.eval and args.protocol not in (None, "ga"):
        raise InputFileError(f"--eval means --protocol ga; it contradicts --protocol {args.protocol}")
    return TrainRequest(model_path=args.model_path, source_path=args.source_path, config_files=list(args.config),
                        overrides=cli_overrides(args), flame=args.flame, flame_masks=args.flame_masks,
                        protocol=args.protocol or ("ga" if args.eval else None), resume=args.resume,
                        allow_changes=args.allow_changes, quiet=args.quiet)


def main(argv=None, stops: StopSignals | None = None) -> int:
    """``stops``: the process's handlers for stop signals outside the training loop (the command
    line installs them for the life of the process; a caller inside another program leaves its
    handlers alone). One that came while the run started is passed on to the trainer (it stops,
    saved, at its first step boundary); one that comes after the last step finds nothing left to
    save, and the run still ends as done (exit 0) instead of being killed by it."""
    args = parse_args(argv)
    try:
        request = request_from_args(args)
        if args.check_config:  # the resolved config on stdout, or the one error line below
            config = resolve_config(request.config_files, request.overrides)
            print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
            return 0
        trainer = Trainer(request)
        if stops is not None and stops.received:
            trainer.request_stop(stops.received)
        trainer.train()
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingStopped as exc:
        print(f"[train] {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main(stops=StopSignals().install()))
