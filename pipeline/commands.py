"""The command implementations behind ``run.py``; each returns the process exit code."""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from pipeline import catalogue
from pipeline.config import (
    ConfigError,
    RecordConfig,
    RuntimeConfig,
    VigilConfig,
    WebhookConfig,
    load_config,
    locate,
    redact,
    resolve_recording_times,
)
from pipeline.preflight import (
    damaged_stores,
    local_stages,
    prestart_errors,
    prestart_warnings,
    probe_cameras,
    probe_destinations,
    probe_video,
    report_prestart_errors,
    stores_in_use,
    where,
)
from pipeline.progress import ProgressDisplay, format_summary
from pipeline.receiver import Received, WebhookReceiver
from pipeline.recording_time import RecordingTimeError, recording_start
from pipeline.schedule import SceneClock, armed_notes
from pipeline.supervisor import RunSummary, Supervisor

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEMO_CLIP = ROOT / "media" / "demo.mp4"
DEMO_CONFIG = ROOT / "configs" / "demo.yaml"
EXIT_USAGE = 2
DEMO_SECRET_ENV = "VIGIL_DEMO_SECRET"
DEMO_SECRET = "vigil-demo-secret"  # the demo's signing key when VIGIL_DEMO_SECRET is not set


def error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def load_or_report(path: str) -> VigilConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return None


def replay_config(
    base: VigilConfig, file: str, mode: str, webhook: str | None, recorded_at: datetime | Literal["auto"] | None = None
) -> VigilConfig:
    """The base config's first camera (zones, lines, keywords) pointed at ``file``, recorded at
    ``recorded_at`` (a base camera's own recording time belongs to its own file, not to this one;
    'auto': read from the file, ConfigError when it does not say), and not recorded again (a file is
    its own recording)."""
    camera_id, camera = next(iter(base.cameras.items()))
    replayed = {"source": str(Path(file).resolve()), "recorded_at": recorded_at, "record": None}
    cameras = {camera_id: camera.model_copy(update=replayed)}
    alerts = base.alerts
    if webhook:
        alerts = alerts.model_copy(
            update={"webhooks": [WebhookConfig(url=webhook, secret_env=_first_secret_env(base))]}
        )
    runtime = base.runtime.model_copy(update={"mode": mode})
    return resolve_recording_times(base.model_copy(update={"cameras": cameras, "alerts": alerts, "runtime": runtime}))


def _first_secret_env(config: VigilConfig) -> str | None:
    return next((w.secret_env for w in config.alerts.webhooks if w.secret_env), None)


def supervise(config: VigilConfig, log_level: int) -> RunSummary:
    progress = ProgressDisplay()
    supervisor = Supervisor(config, on_tick=progress, log_level=log_level)
    try:
        return supervisor.run()
    finally:
        progress.finish()


def cmd_run(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    if args.mode:
        config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"mode": args.mode})})
    if report_prestart_errors(config, args.config):
        return EXIT_USAGE
    summary = supervise(config, args.log_level)
    print(format_summary(summary))
    return summary.exit_code


def cmd_stage(args: argparse.Namespace) -> int:
    """Run only the named stages on this host (the rest run elsewhere, per the config's network)."""
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    overrides: dict[str, object] = {}
    if args.metrics_address is not None:
        overrides["metrics_address"] = args.metrics_address or None
    if args.mode:
        overrides["mode"] = args.mode
    try:  # validated like the config itself
        runtime = RuntimeConfig.model_validate({**config.runtime.model_dump(), **overrides})
    except ValidationError as exc:
        return error("; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors()))
    config = config.model_copy(update={"runtime": runtime})
    problem = stage_problem(config, args.names)
    if problem:
        return error(problem)
    if report_prestart_errors(config, args.config, local_stages(config, args.names)):
        return EXIT_USAGE
    progress = ProgressDisplay()
    supervisor = Supervisor(config, on_tick=progress, log_level=args.log_level, only=args.names)
    try:
        summary = supervisor.run()
    finally:
        progress.finish()
    print(format_summary(summary))
    return summary.exit_code


def stage_problem(config: VigilConfig, names: list[str]) -> str | None:
    """Why the named stages cannot start on this host (unknown names, keys this host lacks), or None:
    a bad deployment is refused before any process starts."""
    from pipeline.network import DOWNSTREAM
    from pipeline.security import CurveKeys, KeyFileError
    from pipeline.stage_specs import select_specs
    from pipeline.transport import Endpoints

    endpoints = Endpoints.for_network(config.network, "/nonexistent", "/nonexistent")
    try:
        specs = select_specs(config, endpoints, names)
    except ValueError as exc:
        return str(exc)
    local = {spec.name for spec in specs}
    unreachable = sorted(
        {
            receiver
            for sender, receivers in DOWNSTREAM.items()
            for receiver in receivers
            if (sender in local) != (receiver in local)
            and config.network.endpoint(receiver) is None
            and config.runtime.ipc_dir is None
        }
    )
    if unreachable:
        listed = ", ".join(unreachable)
        return (
            f"{listed} would be reached over ipc in a temporary folder that the other processes cannot know: "
            f"set runtime.ipc_dir (stages in several processes on this host) or network.{unreachable[0]} "
            "(stages on other hosts)"
        )
    binds, connects = endpoints.tcp_roles(local)
    curve = config.network.curve
    if curve is None or not (binds or connects):
        return None
    try:
        keys = CurveKeys.load(curve, binds=binds, connects=connects)
    except KeyFileError as exc:
        return str(exc)
    missing = keys.missing_for(binds=binds, connects=connects)
    return f"network.curve lacks {'; '.join(missing)}" if missing else None


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from pipeline.security import generate_keys

    out = Path(args.out)
    public, secret = out / f"{args.name}.key", out / f"{args.name}.key_secret"
    if args.if_missing and public.exists() and secret.exists():
        print(f"keys: {public} and {secret} already exist; kept")
        return 0
    try:
        public, secret = generate_keys(out, args.name, overwrite=args.force)
    except (FileExistsError, OSError) as exc:
        return error(str(exc))
    print(f"keys: public {public} (give it to peers), secret {secret} (mode 0600; keep it on this host)")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    problem = probe_video(args.file)
    if problem:
        return error(problem)
    base = load_or_report(args.config)
    if base is None:
        return EXIT_USAGE
    recorded_at = args.recorded_at
    if recorded_at == "auto":
        try:
            recorded_at = recording_start(args.file)
        except RecordingTimeError as exc:
            return error(f"--recorded-at auto: {exc}: give the time, for example --recorded-at '2026-11-28 21:30:00'")
    config = replay_config(base, args.file, args.mode, args.webhook, recorded_at)
    if report_prestart_errors(config, args.config):
        return EXIT_USAGE
    summary = supervise(config, args.log_level)
    print(format_summary(summary))
    return summary.exit_code


def recording_note(camera_id: str, record: RecordConfig) -> str:
    """``recorded into /srv/rec/door (60 s segments, kept 24 h, at least 2 GB left free; 35.1 GB free now)``."""
    from stages.alerting.durable import free_space
    from stages.recording import camera_folder

    folder = camera_folder(record, camera_id)
    return (
        f"recorded into {folder} ({record.segment_s:g} s segments, kept {record.keep_hours:g} h, at least "
        f"{record.min_free_gb:g} GB left free; {free_space(folder)} now)"
    )


def cmd_check(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    probes = probe_cameras(config) if args.probe else {}
    problems = [
        f"{locate(args.config, ('cameras', cid, 'source'))}: cameras.{cid}.source: {reason}"
        for cid, cam in config.cameras.items()
        if (reason := probes[cid][1] if args.probe else ("://" not in cam.source and probe_video(cam.source)))
    ]
    problems += prestart_errors(config, args.config)
    for field, shown, problem in probe_destinations(config) if args.probe else []:
        if problem is None:
            print(f"  {shown}: {'accepts the login' if shown.startswith('mqtt') else 'accepts connections'}")
        else:
            problems.append(f"{where(args.config, field)}: {shown}: {problem}")
    for cid, (description, _) in probes.items():
        if description is not None:
            deaf = config.cameras[cid].audio and description.endswith("no audio")
            print(f"  {cid}: {redact(config.cameras[cid].source)}: {description}{' (nothing to hear)' if deaf else ''}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return EXIT_USAGE
    for cid, camera in config.cameras.items():
        rules = [("the camera", camera.armed)] if camera.armed else []
        rules += [(f"zone '{name}'", zone.armed) for name, zone in camera.zones.items() if zone.armed]
        rules += [(f"line '{name}'", line.armed) for name, line in camera.lines.items() if line.armed]
        clock = SceneClock.of(config.runtime.timezone, camera.recording_started)
        for note in armed_notes(rules, clock, time.time()):
            print(f"  {cid}: {note}")
        if camera.record is not None:
            print(f"  {cid}: {recording_note(cid, camera.record)}")
    for warning in prestart_warnings(config, args.config) + damaged_stores(config, args.config):
        print(f"warning: {warning}", file=sys.stderr)
    for taken in stores_in_use(config, args.config):  # a site checked while it runs: fine, but say so
        print(f"note: {taken}: a run of this config now would be refused")
    print(f"{args.config}: OK ({len(config.cameras)} camera(s), mode {config.runtime.mode})")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    print(catalogue.format_table(catalogue.list_models()))
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    try:
        path = catalogue.fetch(args.name)
    except catalogue.CatalogueError as exc:
        return error(str(exc))
    print(f"{args.name}: {path}")
    return 0


def print_alert(received: Received, out: Path, number: int) -> None:
    """Demo receiver callback: one line per alert, snapshot and JSON written to ``out``."""
    payload = received.payload
    snapshot = payload.get("snapshot", {})
    jpeg = base64.b64decode(snapshot.get("data_base64", ""))
    stem = f"{number:03d}-{payload['camera']}-{payload['event'].replace('.', '-')}"
    (out / f"{stem}.jpg").write_bytes(jpeg)
    record = {**payload, "snapshot": {k: v for k, v in snapshot.items() if k != "data_base64"}}
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2))
    media = payload["media_time"]
    reasons = "; ".join(payload.get("reasons", [])) or "-"
    mark = "signature ok" if received.signature_valid else "SIGNATURE INVALID"
    print(
        f"[webhook] {payload['event']:<13} camera={payload['camera']} t={media['at']:.1f}s "
        f"score={payload['score']:.2f} ({mark}): {reasons} -> {out / stem}.jpg",
        flush=True,
    )


def printing_receiver(
    secret: str, out: Path, port: int = 0, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> WebhookReceiver:
    """A receiver that prints each alert and saves it, numbered in arrival order, under ``out``."""
    numbers = itertools.count(1)
    return WebhookReceiver(
        secret, host=host, port=port, on_alert=lambda received: print_alert(received, out, next(numbers)), tls=tls
    )


def server_tls(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The receiver's HTTPS context from ``--tls-cert`` / ``--tls-key`` (None without them); raises
    ValueError saying what is wrong with them."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load --tls-cert {cert} with --tls-key {key}: {exc.strerror or exc}") from None
    return context


def cmd_receiver(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    secret = os.environ.get(args.secret_env)
    if not secret:
        return error(f"environment variable {args.secret_env} (the key to verify signatures with) is not set")
    try:
        tls = server_tls(args.tls_cert, args.tls_key)
    except ValueError as exc:
        return error(str(exc))
    try:
        receiver = printing_receiver(secret, out, port=args.port, host=args.host, tls=tls)
    except OSError as exc:
        return error(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with receiver:
        print(f"receiver: listening at {receiver.url} (Ctrl-C to stop); snapshots go to {out}/", flush=True)
        while not stop.wait(0.5):
            pass
    print(f"receiver: stopped after {len(receiver.deliveries)} alert(s)", flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    base = load_or_report(str(DEMO_CONFIG))
    if base is None:
        return EXIT_USAGE
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    secret_env = _first_secret_env(base) or DEMO_SECRET_ENV
    secret = os.environ.get(secret_env) or DEMO_SECRET
    os.environ[secret_env] = secret  # the stage processes read the key from the environment
    with printing_receiver(secret, out) as receiver:
        print(f"demo: replaying {DEMO_CLIP.name} ({args.mode}); webhook receiver at {receiver.url}", flush=True)
        config = replay_config(base, str(DEMO_CLIP), args.mode, None)
        webhook = WebhookConfig(url=receiver.url, secret_env=secret_env)
        config = config.model_copy(
            update={
                "alerts": config.alerts.model_copy(
                    update={
                        "webhooks": [webhook],
                        "log_path": str(out / "alerts.jsonl"),
                        "outbox_path": str(out / "state" / "alerts.sqlite"),
                        "pending_path": str(out / "state" / "fuse-pending.sqlite"),
                    }
                )
            }
        )
        quiet = args.log_level if args.log_level == logging.DEBUG else max(args.log_level, logging.WARNING)
        summary = supervise(config, quiet)
        deliveries = receiver.deliveries
    print(format_summary(summary))
    valid = sum(d.signature_valid for d in deliveries)
    print(f"demo: the receiver got {len(deliveries)} alert(s), {valid} with a valid signature; see {out}/")
    return summary.exit_code


def cmd_bench(args: argparse.Namespace) -> int:
    from bench.harness import run_suite

    return run_suite(args)
