"""``run.py alerts list|show|redeliver|clip``: look into the alert sink's outbox and its dead letters,
and cut an alert's footage out of its camera's recording."""

from __future__ import annotations

import argparse
import functools
import json
import sqlite3
import sys
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, load_config
from pipeline.schedule import time_zone
from stages.alerting.durable import StoreOpenError, StoreWriteError
from stages.alerting.salvage import is_damaged
from stages.alerting.store import AlertRow, AlertStore, DeliveryRow

EXIT_USAGE = 2
EXIT_STORE = 1

Command = Callable[[argparse.Namespace], int]


def reporting_store_errors(command: Command) -> Command:
    """An outbox that cannot be read or written (damaged, its disk full) is one line and exit 1, not
    a traceback."""

    @functools.wraps(command)
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (sqlite3.Error, StoreOpenError, StoreWriteError) as exc:
            path = args.outbox or "the outbox"
            if is_damaged(exc):
                print(
                    f"error: {path} is damaged ({exc}); the alert stage sets it aside at its next start and "
                    "carries what it can still read into a fresh outbox",
                    file=sys.stderr,
                )
            else:
                print(f"error: {path}: {exc}", file=sys.stderr)
            return EXIT_STORE

    return wrapped


def open_outbox(args: argparse.Namespace) -> AlertStore | None:
    """The outbox named by ``--outbox``, else the one the config's ``alerts.outbox_path`` names; its
    times are shown in the config's ``runtime.timezone`` then (``args.zone``), else in the host's."""
    path = args.outbox
    args.zone = time_zone(None)
    if path is None:
        try:
            config = load_config(args.config)
            path, args.zone = config.alerts.outbox_path, time_zone(config.runtime.timezone)
        except ConfigError as exc:
            for problem in exc.problems:
                print(f"error: {problem}", file=sys.stderr)
            return None
    if not Path(path).exists():
        print(f"error: no outbox at {path} (no alert has been raised with this config yet)", file=sys.stderr)
        return None
    args.outbox = path  # for the messages of reporting_store_errors
    return AlertStore(path)


def one_alert(args: argparse.Namespace) -> tuple[AlertStore, AlertRow] | None:
    """The outbox and the one alert ``args.id`` (or a unique prefix of it) names; None (and why, on
    stderr) when there is no outbox or no single such alert."""
    store = open_outbox(args)
    if store is None:
        return None
    row = store.alert(args.id)
    if row is None:
        print(f"error: no single alert matches {args.id!r}", file=sys.stderr)
        return None
    return store, row


def when(seconds: float | None, zone: tzinfo | None) -> str:
    """``2026-11-28 22:00:05 CET``: a Unix time in ``zone`` (None: the host's)."""
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def delivery_text(delivery: DeliveryRow, zone: tzinfo | None) -> str:
    tries = f"{delivery.attempts} attempt{'s' * (delivery.attempts != 1)}"
    if delivery.state == "delivered":
        return f"{delivery.webhook_url}: delivered ({tries})"
    if delivery.state == "dead":
        return f"{delivery.webhook_url}: DEAD ({delivery.last_error})"
    text = f"{delivery.webhook_url}: pending ({tries}"
    if delivery.last_error:
        text += f", last: {delivery.last_error}"
    return text + f", next at {when(delivery.next_attempt, zone)})"


@reporting_store_errors
def cmd_alerts_list(args: argparse.Namespace) -> int:
    store = open_outbox(args)
    if store is None:
        return EXIT_USAGE
    if args.dead:
        letters = store.dead_letters()
        print(
            f"{len(letters)} dead letter(s)"
            + (": redeliver with run.py alerts redeliver --all-dead" if letters else "")
        )
        for alert_id, camera, url, attempts, dead_at, reason in letters:
            print(
                f"  {alert_id}  {camera:<12} {url}  {attempts} attempts, dead at {when(dead_at, args.zone)}: {reason}"
            )
        return 0
    rows = store.alerts(limit=args.limit, camera=args.camera)
    if args.pending:
        rows = [row for row in rows if any(d.state == "pending" for d in row.deliveries)]
    stamps = [when(row.stored_at, args.zone) for row in reversed(rows)]
    width = max(map(len, stamps), default=len("stored"))
    print(f"{'stored':<{width}}  {'camera':<12} {'event':<14} {'id':<36}  deliveries")
    for stamp, row in zip(stamps, reversed(rows), strict=True):
        deliveries = "; ".join(delivery_text(d, args.zone) for d in row.deliveries) or "no webhooks"
        print(f"{stamp}  {row.camera:<12} {row.event:<14} {row.id}  {deliveries}")
    pending = store.pending()
    print(f"{len(rows)} alert(s) shown; {pending} delivery(ies) pending; {len(store.dead_letters())} dead letter(s)")
    return 0


@reporting_store_errors
def cmd_alerts_show(args: argparse.Namespace) -> int:
    found = one_alert(args)
    if found is None:
        return EXIT_USAGE
    store, row = found
    print(json.dumps(summary_of(row, args.zone), indent=2))
    if args.snapshot:
        jpeg = store.snapshot(row.id) or b""
        Path(args.snapshot).write_bytes(jpeg)
        print(f"snapshot ({len(jpeg)} bytes) written to {args.snapshot}")
    return 0


def summary_of(row: AlertRow, zone: tzinfo | None) -> dict[str, object]:
    return {
        "id": row.id,
        "stored_at": when(row.stored_at, zone),
        "deliveries": [delivery_text(d, zone) for d in row.deliveries],
        "snapshot_bytes": row.snapshot_bytes,
        "payload": row.payload,
    }


@reporting_store_errors
def cmd_alerts_redeliver(args: argparse.Namespace) -> int:
    if (args.id is None) == (not args.all_dead):
        print("error: give one alert id, or --all-dead", file=sys.stderr)
        return EXIT_USAGE
    store = open_outbox(args)
    if store is None:
        return EXIT_USAGE
    alert_id = None
    if args.id is not None:
        row = store.alert(args.id)
        if row is None:
            print(f"error: no single alert matches {args.id!r}", file=sys.stderr)
            return EXIT_USAGE
        alert_id = row.id
    count = store.redeliver(alert_id)
    print(f"{count} delivery(ies) queued again; a running vigil sends them within a second, else the next start")
    return 0


def incident_span(payload: dict[str, Any]) -> tuple[float, float]:
    """Wall-clock ``(start, at)`` of an alert's incident: from its first frame to this alert's frame
    (an ``alert.closed`` spans the whole incident)."""
    at = float(payload["capture_wall_time"])
    media = payload.get("media_time") or {}
    lead = float(media.get("at", 0.0)) - float(media.get("incident_start", media.get("at", 0.0)))
    return at - max(0.0, lead), at


@reporting_store_errors
def cmd_alerts_clip(args: argparse.Namespace) -> int:
    from stages.clips import ClipError, export_clip

    found = one_alert(args)
    if found is None:
        return EXIT_USAGE
    row = found[1]
    config = load_config(args.config)
    camera = config.cameras.get(row.camera)
    if camera is None or camera.record is None:
        print(
            f"error: camera {row.camera} is not recorded in {args.config} (cameras.{row.camera}.record)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    start, at = incident_span(row.payload)
    out = Path(args.out or f"{row.camera}-{row.id[:8]}.mp4")
    try:
        clip = export_clip(camera.record, row.camera, start - args.before, at + args.after, out)
    except ClipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE
    print(
        f"{clip.path}: {clip.duration_s:.1f} s of camera {row.camera} from {when(clip.start, args.zone)} "
        f"({row.payload.get('event')} at {when(at, args.zone)}, from {clip.segments} segment(s))"
    )
    return 0


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, default_config: str) -> None:
    alerts = sub.add_parser("alerts", parents=[common], help="look into the alert outbox and the dead letters")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True)
    source = argparse.ArgumentParser(add_help=False)
    source.add_argument("--config", default=default_config, help="config whose alerts.outbox_path to open")
    source.add_argument("--outbox", help="the outbox SQLite file (instead of the config's)")
    listing = alerts_sub.add_parser("list", parents=[common, source], help="recent alerts and their deliveries")
    listing.add_argument("--limit", type=int, default=50, help="newest N alerts")
    listing.add_argument("--camera", help="only this camera's alerts")
    listing.add_argument("--pending", action="store_true", help="only alerts not yet delivered everywhere")
    listing.add_argument("--dead", action="store_true", help="the dead letters instead")
    listing.set_defaults(func=cmd_alerts_list)
    show = alerts_sub.add_parser("show", parents=[common, source], help="one alert: payload and deliveries")
    show.add_argument("id", help="alert id (or a unique prefix)")
    show.add_argument("--snapshot", help="write the alert's JPEG snapshot to this file")
    show.set_defaults(func=cmd_alerts_show)
    redeliver = alerts_sub.add_parser("redeliver", parents=[common, source], help="send alerts again")
    redeliver.add_argument("id", nargs="?", help="alert id (or a unique prefix): sent again to every webhook")
    redeliver.add_argument("--all-dead", action="store_true", help="queue every dead letter again")
    redeliver.set_defaults(func=cmd_alerts_redeliver)
    clip = alerts_sub.add_parser(
        "clip", parents=[common, source], help="an alert's footage from its camera's recording, as one MP4"
    )
    clip.add_argument("id", help="alert id (or a unique prefix)")
    clip.add_argument("--out", help="the MP4 to write (default CAMERA-ID.mp4 here)")
    clip.add_argument("--before", type=float, default=10.0, help="seconds before the incident began (default 10)")
    clip.add_argument("--after", type=float, default=10.0, help="seconds after the alert (default 10)")
    clip.set_defaults(func=cmd_alerts_clip)
