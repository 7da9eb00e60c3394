"""What a config needs of this host, judged before anything starts: its models, where its alert files
go, its video files (and, with ``check --probe``, its live cameras). ``run``, ``replay``, ``stage``
and ``check`` refuse what no stage could ever use, as ``FILE:LINE: field: problem``."""

from __future__ import annotations

import sys

from pipeline.config import CameraConfig, VigilConfig, locate


def prestart_errors(config: VigilConfig, path: str, stages: set[str] | None = None) -> list[str]:
    """``PATH:LINE: field: problem`` for what the stages that will run here (``stages``; default:
    the config's whole pipeline) could never use: a model no backend loads, an alert file that
    cannot be made where the config puts it."""
    from stages.alerting.durable import writable_problem
    from stages.model_names import model_problems

    if stages is None:
        stages = {"detect", "fuse", "alert", *(["transcribe"] if any(c.audio for c in config.cameras.values()) else [])}
    problems = model_problems(config, stages)
    files = {
        "alerts.outbox_path": config.alerts.outbox_path if "alert" in stages else None,
        "alerts.log_path": config.alerts.log_path if "alert" in stages else None,
        "alerts.pending_path": config.alerts.pending_path if "fuse" in stages else None,
    }
    problems += [(field, problem) for field, file in files.items() if file and (problem := writable_problem(file))]
    return [f"{locate(path, tuple(field.split('.')))}: {field}: {problem}" for field, problem in problems]


def report_prestart_errors(config: VigilConfig, path: str, stages: set[str] | None = None) -> bool:
    """Print the problems ``prestart_errors`` finds; True when there were any."""
    problems = prestart_errors(config, path, stages)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
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


def probe_cameras(config: VigilConfig) -> dict[str, tuple[str | None, str | None]]:
    """Every camera's source opened as its decoder would (files and live cameras, side by side):
    per camera, what it holds or why it cannot be opened."""
    from concurrent.futures import ThreadPoolExecutor

    from stages.media import MediaError, probe_source

    decode = config.stages.decode

    def probe(camera: CameraConfig) -> tuple[str | None, str | None]:
        try:
            return probe_source(
                camera.source,
                timeout_s=decode.open_timeout_s,
                stall_s=decode.stall_s,
                transport=camera.rtsp_transport,
                probe_s=decode.probe_s,
            ), None
        except MediaError as exc:
            return None, str(exc)

    with ThreadPoolExecutor(max_workers=min(8, len(config.cameras))) as pool:
        results = pool.map(probe, config.cameras.values())
        return dict(zip(config.cameras, results, strict=True))
