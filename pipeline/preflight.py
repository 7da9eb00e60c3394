"""What a config needs of this host, judged before anything starts: its models, where its alert files
go, its video files (and, with ``check --probe``, its live cameras). ``run``, ``replay``, ``stage``
and ``check`` refuse what no stage could ever use, as ``FILE:LINE: field: problem``."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.config import CameraConfig, ConfigError, MqttConfig, VigilConfig, WebhookConfig, locate

LOW_SPACE_BYTES = 256 * 1024 * 1024  # less room than this where alert files go is warned of


def prestart_errors(config: VigilConfig, path: str, stages: set[str] | None = None) -> list[str]:
    """``PATH:LINE: field: problem`` for what the stages that will run here (``stages``; default:
    the config's whole pipeline) could never use: a model no backend loads, a zone, line or crowd
    threshold of a class the model does not have, an alert file that cannot be made where the config
    puts it."""
    from stages.alerting.durable import not_a_store_problem, writable_problem
    from stages.model_names import model_problems
    from stages.scene_classes import class_problems, names_without_loading

    decoding_here = stages is None or "decode" in stages
    stages = pipeline_stages(config) if stages is None else stages
    problems = model_problems(config, stages)
    if decoding_here:
        problems += record_folder_problems(config)
    if "detect" in stages and not problems and (names := names_without_loading(config.stages.detect)):
        problems += class_problems(config, names, config.stages.detect.model)
    files = alert_files(config, stages)
    problems += [(field, problem) for field, file in files.items() if (problem := writable_problem(file))]
    stores = {field: file for field, file in files.items() if field != "alerts.log_path"}
    problems += [(field, problem) for field, file in stores.items() if (problem := not_a_store_problem(file))]
    if "alert" in stages:
        problems += [
            (f"alerts.webhooks.{i}.ca_file", problem)
            for i, hook in enumerate(config.alerts.webhooks)
            if (problem := ca_file_problem(hook))
        ]
        problems += [
            (f"alerts.mqtt.{i}.ca_file", problem)
            for i, broker in enumerate(config.alerts.mqtt)
            if (problem := ca_file_problem(broker))
        ]
    return [f"{where(path, field)}: {problem}" for field, problem in problems]


def record_folder_problems(config: VigilConfig) -> list[tuple[str, str]]:
    """``cameras.<id>.record.folder`` where the camera's segments could not be written."""
    from stages.alerting.durable import writable_problem

    problems = []
    for camera_id, camera in config.cameras.items():
        if camera.record is None:
            continue
        folder = Path(camera.record.folder) / camera_id
        probe = folder / "segment.mp4"  # nothing is created: the check walks up to what exists
        if problem := writable_problem(probe):
            problems.append((f"cameras.{camera_id}.record.folder", problem.replace(str(probe), str(folder))))
    return problems


def where(path: str, field: str) -> str:
    """``PATH:LINE: field`` for a dotted ``field`` (``alerts.webhooks.0.ca_file`` reads ``[0]``)."""
    loc = tuple(int(part) if part.isdigit() else part for part in field.split("."))
    shown = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(loc))
    return f"{locate(path, loc)}: {shown}"


def stores_in_use(config: VigilConfig, path: str, stages: set[str] | None = None) -> list[str]:
    """``PATH:LINE: field: ...`` for each alert store another vigil process holds (its sink or fuse
    running with the same files): a second one would deliver, or send, every alert again."""
    from stages.alerting.durable import holder_of

    stages = pipeline_stages(config) if stages is None else stages
    stores = {
        "alerts.outbox_path": config.alerts.outbox_path if "alert" in stages else None,
        "alerts.pending_path": config.alerts.pending_path if "fuse" in stages else None,
    }
    return [
        f"{where(path, field)}: {file} is in use by another vigil ({holder})"
        for field, file in stores.items()
        if file and (holder := holder_of(Path(file)))
    ]


def damaged_stores(config: VigilConfig, path: str) -> list[str]:
    """``PATH:LINE: field: ...`` for each existing alert store SQLite finds damaged (read only, the
    whole file: for ``check``, not for every start; the stages look for themselves as they open)."""
    import sqlite3

    from stages.alerting.salvage import findings_or_error, stale_indexes

    found = []
    for field, file in alert_files(config, pipeline_stages(config)).items():
        if field == "alerts.log_path" or not Path(file).is_file():
            continue
        try:
            db = sqlite3.connect(f"{Path(file).resolve().as_uri()}?mode=ro", uri=True)
            try:
                findings = findings_or_error(db)
            finally:
                db.close()
        except sqlite3.Error:
            continue  # not readable as SQLite at all: the other checks say so
        if not findings:
            continue
        damage = "; ".join(findings)
        stale = stale_indexes(findings)
        if stale is not None:
            found.append(
                f"{where(path, field)}: {file}: index(es) {', '.join(stale)} do not match their tables ({damage}); "
                "the stage that owns it rebuilds them as it starts, and no alert is lost"
            )
            continue
        found.append(
            f"{where(path, field)}: {file} is damaged ({damage}); the stage that owns it will set it aside "
            "as it starts and carry what it can still read into a fresh one"
        )
    return found


def ca_file_problem(destination: WebhookConfig | MqttConfig) -> str | None:
    """Why a webhook's or broker's ``ca_file`` cannot be used (missing, or not PEM certificates), or None."""
    from stages.alerting.mqtt import broker_tls
    from stages.webhook import tls_context

    if destination.ca_file is None:
        return None
    if not Path(destination.ca_file).is_file():
        return f"{destination.ca_file}: no such file"
    try:
        if isinstance(destination, MqttConfig):
            broker_tls(destination)
        else:
            tls_context(destination)
    except ConfigError as exc:
        return "; ".join(exc.problems).removeprefix("ca_file ")
    return None


def prestart_warnings(config: VigilConfig, path: str, stages: set[str] | None = None) -> list[str]:
    """``PATH:LINE: field: ...`` for alert files on a disk with less than LOW_SPACE_BYTES left: vigil
    starts, but alerts stop being stored (they wait in fuse) once it is full."""
    from stages.alerting.durable import free_bytes, free_space

    stages = pipeline_stages(config) if stages is None else stages
    warnings = []
    for field, file in alert_files(config, stages).items():
        free = free_bytes(Path(file))
        if free is not None and free < LOW_SPACE_BYTES:
            warnings.append(
                f"{where(path, field)}: the disk where {file} goes has only "
                f"{free_space(Path(file))}; {WHEN_FULL[field]}"
            )
    return warnings


WHEN_FULL = {
    "alerts.outbox_path": "a full disk leaves alerts waiting in fuse, undelivered, until there is room",
    "alerts.pending_path": "a full disk makes fuse hold its alerts in memory (lost if fuse stops before the sink "
    "stores them)",
    "alerts.log_path": "a full disk leaves lines out of the log (the outbox still has the alerts)",
}


def pipeline_stages(config: VigilConfig) -> set[str]:
    """The stages of the config's whole pipeline (transcribe only when a camera has audio)."""
    return {"detect", "fuse", "alert", *(["transcribe"] if any(c.audio for c in config.cameras.values()) else [])}


def alert_files(config: VigilConfig, stages: set[str]) -> dict[str, str]:
    """The alert files the given stages write, by setting."""
    files = {
        "alerts.outbox_path": config.alerts.outbox_path if "alert" in stages else None,
        "alerts.log_path": config.alerts.log_path if "alert" in stages else None,
        "alerts.pending_path": config.alerts.pending_path if "fuse" in stages else None,
    }
    return {field: file for field, file in files.items() if file}


def report_prestart_errors(config: VigilConfig, path: str, stages: set[str] | None = None) -> bool:
    """Print the problems ``prestart_errors`` finds and the stores another vigil holds (and, as
    warnings, ``prestart_warnings``); True when there were problems."""
    problems = prestart_errors(config, path, stages)
    problems += [
        f"{taken}; give this run its own alert files, or stop the other"
        for taken in stores_in_use(config, path, stages)
    ]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        for warning in prestart_warnings(config, path, stages):
            print(f"warning: {warning}", file=sys.stderr)
    return bool(problems)


def probe_video(path: str) -> str | None:
    """None when ``path`` opens as a video file, else the one-line reason."""
    from stages.media import MediaError, open_media

    try:
        with open_media(path, timeout_s=10.0):
            return None
    except MediaError as exc:
        return str(exc)


def local_stages(config: VigilConfig, names: list[str]) -> set[str]:
    """The stages (detect, transcribe, ...) that ``run.py stage NAMES`` runs on this host."""
    from pipeline.stage_specs import select_specs
    from pipeline.transport import Endpoints

    endpoints = Endpoints.for_network(config.network, "/nonexistent", "/nonexistent")
    return {spec.name for spec in select_specs(config, endpoints, names)}


def probe_destinations(config: VigilConfig) -> list[tuple[str, str, str | None]]:
    """Every webhook (a TCP connection to it) and MQTT broker entry (a login with its credentials),
    side by side: ``(field, what it is, why it cannot be used or None)``. Nothing is sent."""
    from concurrent.futures import ThreadPoolExecutor

    from stages.alerting.delivery import sender_for

    entries: list[tuple[str, WebhookConfig | MqttConfig, str | None]] = [
        (f"alerts.webhooks.{i}", hook, None) for i, hook in enumerate(config.alerts.webhooks)
    ]
    entries += [(f"alerts.mqtt.{i}", broker, broker.password()) for i, broker in enumerate(config.alerts.mqtt)]

    def probe(entry: tuple[str, WebhookConfig | MqttConfig, str | None]) -> tuple[str, str, str | None]:
        field, destination, secret = entry
        try:
            sender = sender_for(destination, secret, check=True)  # its own client id: vigil may be running
        except ConfigError as exc:  # a ca_file that is not PEM: prestart_errors names it
            return field, destination.url, "; ".join(exc.problems)
        try:
            return field, f"{sender.kind} {sender.target.shown_url}", sender.probe()
        finally:
            sender.close()

    if not entries:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(entries))) as pool:
        return list(pool.map(probe, entries))


def probe_cameras(config: VigilConfig) -> dict[str, tuple[str | None, str | None]]:
    """Every camera's source opened as its decoder would (files and live cameras, side by side):
    per camera, what it holds or why it cannot be opened."""
    from concurrent.futures import ThreadPoolExecutor

    from stages.media import MediaError, probe_source

    decode = config.stages.decode

    def probe(camera: CameraConfig) -> tuple[str | None, str | None]:
        try:
            return probe_source(camera, decode), None
        except MediaError as exc:
            return None, str(exc)

    with ThreadPoolExecutor(max_workers=min(8, len(config.cameras))) as pool:
        results = pool.map(probe, config.cameras.values())
        return dict(zip(config.cameras, results, strict=True))
