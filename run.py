#!/usr/bin/env python3
"""vigil command line: run | stage | replay | check | preview | keys | models | alerts | receiver | demo | bench. Thin:
parses, then calls into pipeline/ and stages/."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pipeline import alerts_cli
from pipeline.arguments import at_least, clock_time, not_negative_float, port_number, positive_float
from pipeline.commands import (
    DEMO_SECRET,
    DEMO_SECRET_ENV,
    cmd_bench,
    cmd_check,
    cmd_demo,
    cmd_keys_generate,
    cmd_models_fetch,
    cmd_models_list,
    cmd_receiver,
    cmd_replay,
    cmd_run,
    cmd_stage,
)
from pipeline.logs import configure_logging
from pipeline.preview import cmd_preview

ROOT = Path(__file__).resolve().parent


DEMO_CONFIG = str(ROOT / "configs" / "demo.yaml")
MODES = ["live", "fast", "realtime"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description="vigil: multimodal video surveillance pipeline")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    add_pipeline_commands(sub, common)
    add_setup_commands(sub, common)
    alerts_cli.add_parser(sub, common, DEMO_CONFIG)
    add_demo_commands(sub, common)
    add_bench_command(sub, common)
    return parser


def add_pipeline_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """run, stage, replay, check: the pipeline itself."""
    run = sub.add_parser("run", parents=[common], help="run the pipeline for the cameras of a config")
    add_config_argument(run)
    run.add_argument("--mode", choices=MODES, help="override runtime.mode")
    run.set_defaults(func=cmd_run)

    stage = sub.add_parser(
        "stage",
        parents=[common],
        help="run only the named stages on this host (stages spread over hosts; see network in the config)",
    )
    stage.add_argument(
        "names", nargs="+", metavar="NAME", help="decode, decode:CAMERA, detect, transcribe, fuse or alert"
    )
    stage.add_argument("--config", required=True, help="YAML config describing the whole deployment")
    stage.add_argument("--metrics-address", help="host:port for /metrics and /healthz on this host ('' turns them off)")
    stage.add_argument("--mode", choices=MODES, help="override runtime.mode")
    stage.set_defaults(func=cmd_stage)

    replay = sub.add_parser("replay", parents=[common], help="replay a video file through the pipeline")
    replay.add_argument("file", help="video file to replay")
    replay.add_argument("--config", default=DEMO_CONFIG, help="settings to use")
    replay.add_argument("--mode", choices=["fast", "realtime"], default="fast", help="fast (lossless) or realtime")
    replay.add_argument("--webhook", help="send alerts to this URL instead of the config's webhooks")
    replay.add_argument(
        "--recorded-at",
        type=clock_time,
        metavar="TIME",
        help="when the file was recorded ('2026-11-28 21:59:40', in runtime.timezone; 'auto': read from the file, "
        "a vigil segment's name or its creation_time): armed schedules and the alerts' local_time follow the "
        "recording (default: the time each frame is read)",
    )
    replay.set_defaults(func=cmd_replay)

    check = sub.add_parser("check", parents=[common], help="validate a config file")
    add_config_argument(check)
    check.add_argument(
        "--probe", action="store_true", help="also open every camera (live ones too) and say what it sends"
    )
    check.set_defaults(func=cmd_check)

    preview = sub.add_parser(
        "preview", parents=[common], help="a frame of each camera with its zones, lines and a coordinate grid drawn"
    )
    add_config_argument(preview)
    preview.add_argument("--camera", action="append", help="only this camera (repeat for more; default: all)")
    preview.add_argument(
        "--at", type=not_negative_float, default=0.0, metavar="SECONDS", help="media time of a file's frame (0)"
    )
    preview.add_argument("--out", default="preview", help="folder for the <camera>.jpg images (./preview)")
    preview.add_argument(
        "--detect", action="store_true", help="also draw what the config's detector finds in the frame"
    )
    preview.set_defaults(func=cmd_preview)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """The config file of ``run`` and ``check``: ``run.py run site.yaml``, or ``--config site.yaml``
    as ``stage``, ``replay`` and ``bench`` take it (``resolve_config`` picks the one given)."""
    parser.add_argument("config", nargs="?", help="YAML config file")
    parser.add_argument("--config", dest="config_option", metavar="CONFIG", help="the same, given as an option")
    parser.set_defaults(config_parser=parser)


def resolve_config(args: argparse.Namespace) -> None:
    """``args.config`` from the positional file or ``--config``; one of them, not two different files."""
    parser: argparse.ArgumentParser | None = getattr(args, "config_parser", None)
    if parser is None:
        return
    given = [path for path in (args.config, args.config_option) if path]
    if not given:
        parser.error("a config file is needed: " + parser.prog + " CONFIG (or --config CONFIG)")
    if len(set(given)) > 1:
        parser.error(f"two config files given ({given[0]} and --config {given[1]}): give one")
    args.config = given[0]


def add_setup_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """keys, models: what a deployment needs before it runs."""
    keys = sub.add_parser("keys", parents=[common], help="CURVE keys for stages talking over tcp")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    generate = keys_sub.add_parser("generate", parents=[common], help="write a key pair NAME.key / NAME.key_secret")
    generate.add_argument("--out", required=True, help="folder for the key files")
    generate.add_argument("--name", default="vigil", help="file name stem (server, client, a host name, ...)")
    generate.add_argument("--force", action="store_true", help="replace an existing pair")
    generate.add_argument("--if-missing", action="store_true", help="do nothing when the pair already exists")
    generate.set_defaults(func=cmd_keys_generate)

    models = sub.add_parser("models", parents=[common], help="the model catalogue")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", parents=[common], help="list catalogue models")
    listing.set_defaults(func=cmd_models_list)
    fetch = models_sub.add_parser("fetch", parents=[common], help="download a catalogue model into the cache")
    fetch.add_argument("name", help="catalogue name, e.g. yolov3-tiny-coco")
    fetch.set_defaults(func=cmd_models_fetch)


def add_demo_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """receiver, demo: trying vigil on the shipped clip."""
    receiver = sub.add_parser("receiver", parents=[common], help="a local webhook receiver that prints alerts")
    receiver.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    receiver.add_argument(
        "--port", type=port_number, default=8765, help="port to listen on (configs/demo.yaml uses 8765)"
    )
    receiver.add_argument(
        "--secret-env",
        default=DEMO_SECRET_ENV,
        help=f"environment variable holding the HMAC key to verify signatures with (default {DEMO_SECRET_ENV})",
    )
    receiver.add_argument("--out", default="demo-output", help="folder for the received alerts and snapshots")
    receiver.add_argument("--tls-cert", help="PEM certificate (chain) to serve HTTPS with; needs --tls-key")
    receiver.add_argument("--tls-key", help="PEM private key of --tls-cert")
    receiver.set_defaults(func=cmd_receiver)

    demo = sub.add_parser("demo", parents=[common], help="replay the shipped demo clip to a local webhook receiver")
    demo.add_argument("--mode", choices=["fast", "realtime"], default="fast", help="replay mode")
    demo.add_argument("--out", default="demo-output", help="folder for the received alerts and snapshots")
    demo.set_defaults(func=cmd_demo)


def add_bench_command(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    bench = sub.add_parser(
        "bench",
        parents=[common],
        help="the pipeline against its standalone parts (and a per-camera predict loop), with the goals as ratios",
    )
    bench.add_argument("--clip", default=str(ROOT / "media" / "demo.mp4"), help="video file")
    bench.add_argument("--config", default=DEMO_CONFIG, help="settings to use")
    bench.add_argument("--cameras", type=at_least(1), default=4, help="cameras for the realtime and baseline runs")
    bench.add_argument(
        "--fps", type=positive_float, help="analysis frames/s per camera in the realtime run (default: config's)"
    )
    bench.add_argument("--detect-replicas", type=at_least(1), default=1, help="detect processes in the realtime run")
    bench.add_argument(
        "--transcribe-replicas", type=at_least(1), default=1, help="transcribe processes in the realtime run"
    )
    bench.add_argument(
        "--baseline-replicas",
        type=at_least(1),
        default=2,
        help="detect processes in vigil's ultralytics run against the predict loops (one thread each on 2 cores)",
    )
    bench.add_argument("--repeat", type=at_least(1), default=3, help="runs of each standalone measurement (median)")
    bench.add_argument(
        "--backends",
        nargs="+",
        default=["opencv"],
        choices=["opencv", "ultralytics"],
        help="detectors to time alone (opencv always: the goals are judged on it)",
    )
    bench.add_argument("--baseline", action="store_true", help="also run one ultralytics predict loop per camera")
    bench.add_argument(
        "--pairs",
        type=at_least(1),
        default=5,
        help="alternated runs of each comparison (detect alone and the fast pipeline; the predict loops and "
        "vigil), medians compared",
    )
    bench.add_argument(
        "--max-steal",
        type=float,
        default=5.0,
        help="measure a timed run again when the host gave more than this %% of the CPU to other guests "
        "(steal in /proc/stat; a negative value: never)",
    )
    bench.add_argument("--steal-retries", type=at_least(0), default=2, help="most repeats of one noisy run")
    bench.add_argument(
        "--sections",
        nargs="+",
        default=["fast", "realtime"],
        choices=["fast", "realtime"],
        help="pipeline runs to make",
    )
    bench.add_argument("--json", help="also write the results to this JSON file")
    bench.add_argument("--plot", help="also plot throughput and latency over time into this PNG")
    bench.set_defaults(func=cmd_bench)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    resolve_config(args)
    os.environ.setdefault(DEMO_SECRET_ENV, DEMO_SECRET)  # configs/demo.yaml signs with it
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    configure_logging("supervisor", level)
    args.log_level = level
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
