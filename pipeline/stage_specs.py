"""The stage instances a config asks for (one decoder per camera, every other stage and its
replicas) as ``StageSpec``s, and the files of this host that some of them share."""

from __future__ import annotations

import dataclasses

from pipeline.compute_lock import uses_compute_lock
from pipeline.config import VigilConfig
from pipeline.stage import StageSpec
from pipeline.stage_settings import stage_nice, stage_scheduler
from pipeline.transport import Endpoints


def _spec_for(
    config: VigilConfig,
    name: str,
    endpoints: Endpoints,
    run_id: str,
    camera: str | None = None,
    replica: int | None = None,
) -> StageSpec:
    settings = getattr(config.stages, name)
    cpus = settings.cpus
    suffix = camera if camera is not None else (str(replica) if replica is not None else None)
    return StageSpec(
        name=name,
        instance=f"{name}:{suffix}" if suffix is not None else name,
        target=f"stages.{name}:run",
        device=settings.device,
        threads=settings.threads,
        cpus=tuple(cpus) if cpus else None,
        endpoints=endpoints,
        camera=camera,
        run_id=run_id,
        nice=stage_nice(settings),
        scheduler=stage_scheduler(name, settings, config.runtime.mode),
        replica=replica or 0,
    )


def _replicated(config: VigilConfig, name: str, endpoints: Endpoints, run_id: str) -> list[StageSpec]:
    """One spec per replica (instances ``NAME:0``, ``NAME:1``, ...; plain ``NAME`` when there is one)."""
    replicas = replica_count(config, name)
    if replicas == 1:
        return [_spec_for(config, name, endpoints, run_id)]
    return [_spec_for(config, name, endpoints, run_id, replica=k) for k in range(replicas)]


def replica_count(config: VigilConfig, name: str) -> int:
    return int(getattr(getattr(config.stages, name), "replicas", 1))


def build_specs(config: VigilConfig, endpoints: Endpoints, run_id: str = "run") -> list[StageSpec]:
    """One decoder per camera, then every other stage (its replicas), sinks first."""
    audio_wanted = any(camera.audio for camera in config.cameras.values())
    specs = [_spec_for(config, name, endpoints, run_id) for name in ("alert", "fuse")]
    specs += _replicated(config, "detect", endpoints, run_id)
    if audio_wanted:
        specs += _replicated(config, "transcribe", endpoints, run_id)
    specs += [_spec_for(config, "decode", endpoints, run_id, camera_id) for camera_id in config.cameras]
    return specs


STAGE_NAMES = ("decode", "detect", "transcribe", "fuse", "alert")


def select_specs(config: VigilConfig, endpoints: Endpoints, names: list[str], run_id: str = "run") -> list[StageSpec]:
    """The specs of the named stages only (``decode`` is every camera's decoder, ``decode:CAMERA``
    one of them, ``detect:K`` one replica); raises ValueError naming what is unknown."""
    every = build_specs(config, endpoints, run_id)
    if "transcribe" in names and not any(spec.name == "transcribe" for spec in every):
        every += _replicated(config, "transcribe", endpoints, run_id)
    instances = {spec.instance for spec in every}
    unknown = [name for name in names if name not in STAGE_NAMES and name not in instances]
    if unknown:
        extra = [spec.instance for spec in every if spec.instance not in STAGE_NAMES]
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}: use {', '.join([*STAGE_NAMES, *extra])}")
    return [spec for spec in every if spec.name in names or spec.instance in names]


def with_host_files(specs: list[StageSpec], config: VigilConfig, start_file: str, lock_file: str) -> list[StageSpec]:
    """``specs`` with this host's shared files: decoders start with the rest (their imports overlap
    the model loading) but open their camera only once ``start_file`` exists, when every other stage
    here is ready (``runtime.cameras_wait_s``) and, where the alert sink runs (it ends the run), keep
    their connections open at the end of a file until stopped; detect and transcribe take turns through
    ``lock_file`` when ``runtime.compute_lock`` says so."""
    hold = config.runtime.cameras_wait_s > 0 and any(spec.name != "decode" for spec in specs)
    sink_here = any(spec.name == "alert" for spec in specs)
    lock = uses_compute_lock(config)

    def prepared(spec: StageSpec) -> StageSpec:
        if spec.name == "decode":
            return dataclasses.replace(spec, start_file=start_file if hold else spec.start_file, hold_at_end=sink_here)
        if lock and spec.name in ("detect", "transcribe"):
            return dataclasses.replace(spec, compute_lock=lock_file)
        return spec

    return [prepared(spec) for spec in specs]
