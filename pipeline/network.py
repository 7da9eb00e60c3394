"""Where each stage listens, across hosts: the ``network`` section of the config.

One config file describes the whole deployment. A stage that receives (detect, transcribe, fuse,
alert) binds its input socket at ``bind`` on the host that runs it; every other host reaches it at
``connect``. Left out, a stage is reached over ``ipc://`` in ``runtime.ipc_dir`` (one host). Over
``tcp://`` the links are encrypted and authenticated with ZeroMQ CURVE; the keys come from files or
the environment (see ``curve``), never from the config itself.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from pipeline.strict import StrictModel

RECEIVING_STAGES = ("detect", "transcribe", "fuse", "alert")
DOWNSTREAM: dict[str, tuple[str, ...]] = {
    "decode": ("detect", "transcribe"),
    "detect": ("fuse",),
    "transcribe": ("fuse",),
    "fuse": ("alert",),
    "alert": (),
}  # who each stage sends to (it connects; they bind)
Z85_KEY = re.compile(r"^[0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
WILDCARD_HOSTS = ("0.0.0.0", "*", "::", "[::]")
CURVE_PATHS = ("server_public_key_file", "server_secret_key_file", "client_secret_key_file", "allowed_clients_dir")


def endpoint_problem(address: str) -> str | None:
    """Why ``address`` is not a usable ZeroMQ endpoint for vigil, or None."""
    scheme, sep, rest = address.partition("://")
    if not sep or scheme not in ("tcp", "ipc"):
        return f"{address!r} is not an endpoint (use tcp://HOST:PORT or ipc:///path/to.sock)"
    if scheme == "ipc":
        return None if rest else f"{address!r} names no socket file"
    host, colon, port = rest.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        return f"{address!r} needs a port between 1 and 65535"
    if not host:
        return f"{address!r} names no host (use tcp://0.0.0.0:PORT to listen on every interface)"
    return None


def is_wildcard(address: str) -> bool:
    host = address.partition("://")[2].rsplit(":", 1)[0]
    return host in WILDCARD_HOSTS


class EndpointConfig(StrictModel):
    bind: str = Field(
        description="Address the stage's input socket binds on the host that runs it: tcp://0.0.0.0:5601 "
        "(every interface), tcp://10.0.0.5:5601, or ipc:///run/vigil/detect.sock."
    )
    connect: str | None = Field(
        None,
        description="Address the other hosts reach this stage at, e.g. tcp://detect-host:5601; "
        "defaults to bind when bind names a host.",
    )

    @field_validator("bind", "connect")
    @classmethod
    def _well_formed(cls, address: str | None) -> str | None:
        if address is not None and (problem := endpoint_problem(address)):
            raise ValueError(problem)
        return address

    @model_validator(mode="after")
    def _reachable(self) -> EndpointConfig:
        if self.connect is None and is_wildcard(self.bind):
            raise ValueError(f"bind {self.bind} listens on every interface; say where peers connect (connect: ...)")
        if self.connect is not None and is_wildcard(self.connect):
            raise ValueError(f"connect {self.connect} is a wildcard; name the host peers reach")
        return self

    @property
    def address(self) -> str:
        """Where peers connect."""
        return self.connect or self.bind


class CurveConfig(StrictModel):
    server_public_key_file: str = Field(
        description="Public key file of the listening stages (NAME.key from `run.py keys generate`); "
        "every host needs it."
    )
    server_secret_key_file: str | None = Field(
        None, description="Secret key file of the listening stages (NAME.key_secret); needed where a stage binds tcp."
    )
    server_secret_key_env: str | None = Field(
        None, description="Environment variable holding that secret key (Z85), instead of the file."
    )
    client_secret_key_file: str | None = Field(
        None, description="This host's client secret key file; needed where a stage connects over tcp."
    )
    client_secret_key_env: str | None = Field(
        None, description="Environment variable holding this host's client secret key (Z85), instead of the file."
    )
    allowed_clients_dir: str | None = Field(
        None, description="Folder of the public key files (*.key) of the clients allowed to connect."
    )
    allowed_clients_env: str | None = Field(
        None, description="Environment variable holding the allowed clients' public keys (Z85, comma-separated)."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, value in data.items():
                if isinstance(value, str) and Z85_KEY.match(value):
                    raise ValueError(
                        f"{name} looks like a key itself; keys belong in files or environment variables, "
                        "never in the config (give the file's path or the variable's name)"
                    )
        return data

    @model_validator(mode="after")
    def _file_or_env(self) -> CurveConfig:
        for role in ("server_secret_key", "client_secret_key"):
            if getattr(self, f"{role}_file") and getattr(self, f"{role}_env"):
                raise ValueError(f"give {role}_file or {role}_env, not both")
        if self.allowed_clients_dir and self.allowed_clients_env:
            raise ValueError("give allowed_clients_dir or allowed_clients_env, not both")
        return self


class NetworkConfig(StrictModel):
    detect: EndpointConfig | None = Field(None, description="Where detect listens (ipc on this host when unset).")
    transcribe: EndpointConfig | None = Field(
        None, description="Where transcribe listens (ipc on this host when unset)."
    )
    fuse: EndpointConfig | None = Field(None, description="Where fuse listens (ipc on this host when unset).")
    alert: EndpointConfig | None = Field(
        None, description="Where the alert sink listens (ipc on this host when unset)."
    )
    curve: CurveConfig | None = Field(None, description="CURVE keys; required when any endpoint is tcp.")
    plaintext_tcp: bool = Field(
        False, description="Allow tcp without CURVE (only on a network you trust completely; never across sites)."
    )
    keepalive_s: float = Field(
        2.0, gt=0, le=60, description="Idle tcp links are probed this often, so a vanished peer is noticed."
    )
    peer_timeout_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description="A tcp link whose data goes unacknowledged this long (link or peer gone) is dropped and "
        "reconnected; frames queued on it are lost (and counted), alerts are resent.",
    )
    reconnect_max_s: float = Field(1.0, gt=0, le=60, description="Longest wait between reconnect attempts on tcp.")

    @model_validator(mode="after")
    def _tcp_is_secured(self) -> NetworkConfig:
        if self.uses_tcp() and self.curve is None and not self.plaintext_tcp:
            raise ValueError(
                "tcp endpoints need network.curve keys (run.py keys generate), "
                "or plaintext_tcp: true on a trusted network"
            )
        if self.peer_timeout_s <= self.keepalive_s:
            raise ValueError("peer_timeout_s must be longer than keepalive_s")
        return self

    def endpoint(self, stage: str) -> EndpointConfig | None:
        value: EndpointConfig | None = getattr(self, stage)
        return value

    def uses_tcp(self) -> bool:
        return any(
            (ep := self.endpoint(stage)) is not None and ep.bind.startswith("tcp://") for stage in RECEIVING_STAGES
        )
