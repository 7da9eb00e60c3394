"""Configuration models (pydantic v2) and YAML loading with line numbers and ``${ENV}`` interpolation.

Every model forbids unknown keys and describes every field; ``load_config`` reports each validation
error as ``FILE:LINE: FIELD.PATH: message`` so a user can find the mistake in their YAML.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from pipeline.alert_settings import AlertsConfig as AlertsConfig
from pipeline.alert_settings import HomeAssistantConfig as HomeAssistantConfig
from pipeline.alert_settings import MqttConfig as MqttConfig
from pipeline.alert_settings import WebhookConfig as WebhookConfig
from pipeline.network import CURVE_PATHS, NetworkConfig
from pipeline.record_settings import RecordConfig as RecordConfig
from pipeline.scene_settings import MIN_AXIS_SHARE as MIN_AXIS_SHARE
from pipeline.scene_settings import ArmedWindows
from pipeline.scene_settings import LineConfig as LineConfig
from pipeline.scene_settings import MaskConfig as MaskConfig
from pipeline.scene_settings import ObjectFilter as ObjectFilter
from pipeline.scene_settings import ZoneConfig as ZoneConfig
from pipeline.schedule import time_zone
from pipeline.sources import LIVE_SCHEMES as LIVE_SCHEMES
from pipeline.sources import is_live as is_live
from pipeline.sources import redact as redact
from pipeline.sources import url_problem as url_problem
from pipeline.stage_settings import DEVICE_PATTERN as DEVICE_PATTERN
from pipeline.stage_settings import DecodeConfig as DecodeConfig
from pipeline.stage_settings import DetectConfig as DetectConfig
from pipeline.stage_settings import FuseConfig as FuseConfig
from pipeline.stage_settings import SignalWeights as SignalWeights
from pipeline.stage_settings import StageConfig as StageConfig
from pipeline.stage_settings import StagesConfig as StagesConfig
from pipeline.stage_settings import TranscribeConfig as TranscribeConfig
from pipeline.stage_settings import default_threads as default_threads
from pipeline.stage_settings import usable_cores as usable_cores
from pipeline.strict import ConfigError as ConfigError
from pipeline.strict import StrictModel, on_off

ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class AnalysisConfig(StrictModel):
    fps: float = Field(5.0, gt=0, le=60, description="Frames per second sampled from the camera for analysis.")
    width: int = Field(
        640, ge=64, le=3840, description="Width in pixels of analysed frames; height keeps the aspect ratio."
    )


class CameraConfig(StrictModel):
    source: str = Field(description="Video file path or rtsp:// URL; ${ENV_VAR} is replaced from the environment.")
    rtsp_transport: Literal["tcp", "udp"] = Field(
        "tcp", description="RTSP transport: 'tcp' (interleaved, works through firewalls and NAT) or 'udp'."
    )
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig, description="Analysis sampling.")
    audio: bool = Field(True, description="Decode and analyse the audio track when there is one.")
    zones: dict[str, ZoneConfig] = Field(default_factory=dict, description="Named intrusion zones.")
    lines: dict[str, LineConfig] = Field(default_factory=dict, description="Named tripwires (line crossing).")
    masks: dict[str, MaskConfig] = Field(
        default_factory=dict,
        description="Named areas whose objects are ignored by every zone, line, crowd count and snapshot.",
    )
    objects: dict[str, ObjectFilter] = Field(
        default_factory=dict,
        description="Per class, the confidence and box size a detection needs to count (others are ignored).",
    )
    keywords: list[str] = Field(
        default_factory=list, description="Spoken words or phrases that raise the keyword signal."
    )
    count_threshold: dict[str, int] = Field(
        default_factory=dict,
        description="Per class, the number of simultaneous objects at or above which the crowd signal fires.",
    )
    loudness_spike_db: float = Field(
        20.0, gt=0, description="Loudness above the running audio baseline (dB) that counts as a spike."
    )
    armed: ArmedWindows = Field(
        default_factory=list,
        description="When the camera raises any signal (zones, lines, keywords, loudness, crowding), as windows "
        "'[DAYS ]HH:MM-HH:MM' in runtime.timezone ('22:00-06:00', 'mon-fri 18:00-07:30'); a zone's or line's own "
        "armed hours narrow it further. Outside them nothing on the camera alerts (dwell is still timed, "
        "crossings counted). Empty: always.",
    )
    record: RecordConfig | None = Field(
        None,
        description="Keep the live camera's stream on disk in segments (see cameras.<id>.record); null: not "
        "recorded. Not for files (a file is its own recording).",
    )
    recorded_at: datetime | Literal["auto"] | None = Field(
        None,
        description="For a recorded file: the clock time of its start (media time 0), as "
        "'2026-11-28 21:30:00' (in runtime.timezone) or with an offset ('2026-11-28T21:30:00+01:00'), so that "
        "armed schedules judge the footage by when it was recorded and alerts carry that time; 'auto': read "
        "from the file (a vigil segment's name, else its creation_time; refused before start when it has "
        "neither). Left out: the time each frame is read. Not for live cameras.",
    )

    @field_validator("source")
    @classmethod
    def _well_formed_url(cls, source: str) -> str:
        problem = url_problem(source)
        if problem:
            raise ValueError(f"malformed URL {redact(source)!r}: {problem}")
        return source

    @field_validator("recorded_at", mode="before")
    @classmethod
    def _time_or_auto(cls, value: Any) -> Any:
        """One clear message for a string that is neither (not one per member of the union)."""
        if isinstance(value, str) and value != "auto":
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is neither a date and time ('2026-11-28 21:30:00', '2026-11-28T21:30:00+01:00') "
                    "nor auto (read from the file)"
                ) from None
        return value

    @property
    def recording_started(self) -> datetime | None:
        """``recorded_at`` once resolved (``load_config`` and ``replay_config`` read 'auto' from the file)."""
        if self.recorded_at == "auto":
            raise RuntimeError(f"recorded_at: auto of {self.source} was never read from the file")
        return self.recorded_at

    @model_validator(mode="after")
    def _recorded_files_only(self) -> CameraConfig:
        if self.recorded_at is not None and is_live(self.source):
            raise ValueError("recorded_at is for recorded files: a live camera's frames are timed by the clock")
        if self.record is not None and not is_live(self.source):
            raise ValueError("record is for live cameras: a file is its own recording")
        return self


class RuntimeConfig(StrictModel):
    mode: Literal["live", "fast", "realtime"] = Field(
        "live",
        description="live: cameras (drop oldest when behind); fast: replay losslessly as fast as possible; "
        "realtime: replay paced like a camera.",
    )
    ipc_dir: str | None = Field(None, description="Folder for ipc:// sockets (a fresh temporary one when unset).")
    max_restarts: int = Field(5, ge=0, description="Restarts of a crashed stage before it has failed for good.")
    heartbeat_timeout_s: float = Field(30.0, gt=0, description="A stage silent this long is restarted.")
    stop_timeout_s: float = Field(8.0, gt=0, description="Seconds a stage gets to stop before it is killed.")
    compute_lock: Annotated[Literal["auto", "on", "off"], BeforeValidator(on_off)] = Field(
        "auto",
        description="detect and transcribe take turns running their models, each run with every core: on a "
        "small machine a model run sharing cores with the other stage's threads takes 2-3 times as long. "
        "auto: when both run on this host's CPU, one process each, with more threads together than cores.",
    )
    cameras_wait_s: float = Field(
        120.0,
        ge=0,
        description="The cameras start once every other stage on this host has loaded its models (reported "
        "ready), so no frame waits on a model still loading; after this many seconds they start anyway. "
        "0: at once.",
    )
    timezone: str | None = Field(
        None,
        description="IANA time zone ('Europe/Berlin') of armed schedules, recorded_at without an offset and "
        "the alerts' local_time. Left out: this host's (containers: usually UTC).",
    )
    metrics_address: str | None = Field(
        "127.0.0.1:9108",
        description="host:port where the supervisor serves Prometheus /metrics and /healthz (port 0: any free "
        "port; null: off). Use 0.0.0.0:9108 to let a Prometheus on another host scrape it.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_time_zone(cls, name: str | None) -> str | None:
        time_zone(name)  # a ValueError with the nearest known names
        return name

    @field_validator("metrics_address")
    @classmethod
    def _host_and_port(cls, address: str | None) -> str | None:
        if address is not None and not re.match(r"^[\w.\-]*:\d{1,5}$", address):
            raise ValueError(f"metrics_address must be host:port (for example 127.0.0.1:9108), got {address!r}")
        return address


class VigilConfig(StrictModel):
    cameras: dict[str, CameraConfig] = Field(description="Cameras by id (letters, digits, '-' and '_').")
    stages: StagesConfig = Field(
        default_factory=lambda: StagesConfig.model_validate({}), description="Per-stage settings."
    )
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="Where alerts go.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Process and replay settings.")
    network: NetworkConfig = Field(
        default_factory=NetworkConfig,
        description="Where each stage listens when stages run on several hosts, and the CURVE keys for tcp.",
    )

    @field_validator("cameras")
    @classmethod
    def _camera_ids(cls, cameras: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        if not cameras:
            raise ValueError("at least one camera is needed")
        for camera_id in cameras:
            if not re.match(r"^[A-Za-z0-9_-]{1,64}$", camera_id):
                raise ValueError(f"camera id {camera_id!r} may only hold letters, digits, '-' and '_'")
        return cameras

    @model_validator(mode="after")
    def _timeouts_fit_the_heartbeat(self) -> VigilConfig:
        """A decoder waiting on a camera stops beating; it must give up before the supervisor
        takes it for hung (half the heartbeat timeout) and kills it."""
        if not any("://" in camera.source for camera in self.cameras.values()):
            return self  # files open at once and never stall
        decode, limit = self.stages.decode, self.runtime.heartbeat_timeout_s / 2
        for name in ("open_timeout_s", "stall_s"):
            if getattr(decode, name) >= limit:
                raise ValueError(
                    f"stages.decode.{name} ({getattr(decode, name):g} s) must be below half of "
                    f"runtime.heartbeat_timeout_s ({limit:g} s); raise heartbeat_timeout_s too"
                )
        return self


def interpolate_env(value: Any, environ: dict[str, str], missing: list[str]) -> Any:
    """Replace ``${NAME}`` in every string of a YAML tree; unknown names are collected in ``missing``."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                missing.append(name)
                return ""
            return environ[name]

        return ENV_PATTERN.sub(substitute, value)
    if isinstance(value, dict):
        return {key: interpolate_env(item, environ, missing) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate_env(item, environ, missing) for item in value]
    return value


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (the deepest existing ancestor when the key is missing)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            key = next((k for k, _ in node.value if k.value == part), None)
            if match is None:
                return line
            line = (key.start_mark.line if key is not None else match.start_mark.line) + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def locate(path: str | Path, loc: tuple[int | str, ...]) -> str:
    """``PATH:LINE`` of the setting at ``loc`` in the YAML file at ``path`` (of its nearest written
    ancestor when the setting was left to its default); ``PATH`` when the file cannot be read."""
    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return str(path)
    line = _line_of(root, loc)
    return f"{path}:{line}" if line is not None else str(path)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def parse_config(text: str, path: str = "<config>", environ: dict[str, str] | None = None) -> VigilConfig:
    """Validate YAML text; raise ConfigError whose lines read ``PATH:LINE: FIELD: message``."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise ConfigError([f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: the top level must be a mapping with a 'cameras' key"])
    missing: list[str] = []
    data = interpolate_env(data, dict(os.environ) if environ is None else environ, missing)
    if missing:
        names = ", ".join(sorted(set(missing)))
        raise ConfigError([f"{path}: environment variable(s) not set: {names}"])
    try:
        return VigilConfig.model_validate(data, context={"environ": environ if environ is not None else os.environ})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
            line = _line_of(root, loc)
            where = f"{path}:{line}" if line is not None else path
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key (not a vigil setting)"
            problems.append(f"{where}: {_format_loc(loc) or '<root>'}: {message}")
        raise ConfigError(problems) from None


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> VigilConfig:
    """Read and validate a YAML config file; relative file sources resolve against the file's folder."""
    config_path = Path(path)
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{config_path}: cannot read config: {exc.strerror or exc}"]) from None
    config = parse_config(text, str(config_path), environ)
    return resolve_recording_times(resolve_sources(config, config_path.parent), config_path)


def resolve_recording_times(config: VigilConfig, config_path: str | Path | None = None) -> VigilConfig:
    """Each ``recorded_at: auto`` read from its (absolute) file; ConfigError naming the setting's line
    when the file does not say when it was recorded."""
    from pipeline.recording_time import RecordingTimeError, recording_start

    cameras = dict(config.cameras)
    problems = []
    for camera_id, camera in config.cameras.items():
        if camera.recorded_at != "auto":
            continue
        try:
            cameras[camera_id] = camera.model_copy(update={"recorded_at": recording_start(camera.source)})
        except RecordingTimeError as exc:
            where = locate(config_path, ("cameras", camera_id, "recorded_at")) if config_path else "replay"
            problems.append(
                f"{where}: cameras.{camera_id}.recorded_at: auto: {exc}: give the time, for example "
                "recorded_at: '2026-11-28 21:30:00'"
            )
    if problems:
        raise ConfigError(problems)
    return config.model_copy(update={"cameras": cameras})


def resolve_sources(config: VigilConfig, base: Path) -> VigilConfig:
    """Make relative file sources, alert file paths and model files absolute against ``base`` (the
    config file's folder); URLs, and model names with no file of that name there, are left alone."""

    def absolute(path: str) -> str:
        return path if Path(path).is_absolute() else str((base / path).resolve())

    cameras = {}
    for camera_id, camera in config.cameras.items():
        source = camera.source if "://" in camera.source else absolute(camera.source)
        update: dict[str, object] = {"source": source}
        if camera.record is not None:
            update["record"] = camera.record.model_copy(update={"folder": absolute(camera.record.folder)})
        cameras[camera_id] = camera.model_copy(update=update)
    webhooks = [
        hook.model_copy(update={"ca_file": absolute(hook.ca_file)}) if hook.ca_file else hook
        for hook in config.alerts.webhooks
    ]
    brokers = [
        broker.model_copy(update={"ca_file": absolute(broker.ca_file)}) if broker.ca_file else broker
        for broker in config.alerts.mqtt
    ]
    alerts = config.alerts.model_copy(
        update={
            "mqtt": brokers,
            "log_path": absolute(config.alerts.log_path) if config.alerts.log_path else None,
            "outbox_path": absolute(config.alerts.outbox_path),
            "pending_path": absolute(config.alerts.pending_path),
            "webhooks": webhooks,
        }
    )
    stages = config.stages
    for name in ("detect", "transcribe"):  # a model file beside the config (a name stays a name)
        settings = getattr(stages, name)
        beside = base / settings.model
        if settings.model and not Path(settings.model).is_absolute() and beside.exists():
            stages = stages.model_copy(update={name: settings.model_copy(update={"model": str(beside.resolve())})})
    curve = config.network.curve
    network = config.network
    if curve is not None:
        paths = {name: absolute(value) for name in CURVE_PATHS if (value := getattr(curve, name))}
        network = network.model_copy(update={"curve": curve.model_copy(update=paths)})
    return config.model_copy(update={"cameras": cameras, "alerts": alerts, "network": network, "stages": stages})
