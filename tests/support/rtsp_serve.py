"""A GStreamer RTSP server for the tests: serves a file's H.264 (and AAC) tracks without re-encoding.

Run with Debian's ``/usr/bin/python3`` (python3-gi, gir1.2-gst-rtsp-server-1.0), not the venv::

    rtsp_serve.py FILE PORT [--mount /cam] [--mounts N] [--container mp4|ts] [--no-audio]

It listens on 127.0.0.1:PORT (retrying the bind for a few seconds, so a restart right after a kill
gets the same port) and prints ``ready`` once it does, then one ``client`` line per RTSP connection.

``--mounts N`` serves the file at N mount points (N cameras): the first is ``MOUNT`` itself, the
others ``MOUNT1`` ... ``MOUNT{N-1}`` (``/cam``, ``/cam1``, ``/cam2``). Every client gets a media of
its own that plays the file from its start. (A shared media would not do: FFmpeg's PLAY asks for
``Range: npt=0.000-``, so each new client would seek it back to the start under the other clients.)

When the environment sets ``VIGIL_TEST_RTSP_USER`` and ``VIGIL_TEST_RTSP_PASSWORD`` every mount
requires RTSP basic authentication with them; anything else gets ``401 Unauthorized``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

USER_ENV = "VIGIL_TEST_RTSP_USER"
PASSWORD_ENV = "VIGIL_TEST_RTSP_PASSWORD"
ROLE = "viewer"
BIND_RETRY_S = 5.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="the MP4 or MPEG-TS file to serve (H.264 video, optional AAC audio)")
    parser.add_argument("port", type=int)
    parser.add_argument("--mount", default="/cam", help="the first mount point; the others get 1, 2 ... appended")
    parser.add_argument("--mounts", type=int, default=1, help="how many mount points serve the file")
    parser.add_argument("--container", choices=("mp4", "ts"), help="default: from the file's suffix (.ts: ts)")
    parser.add_argument("--no-audio", action="store_true", help="serve the video track only")
    return parser.parse_args()


def mount_path(mount: str, index: int) -> str:
    """The path of mount ``index``: ``mount`` for 0, ``mount`` + index for the others."""
    return mount if index == 0 else f"{mount}{index}"


def launch_line(path: str, container: str, audio: bool) -> str:
    """The media factory's pipeline: demux, parse and payload the H.264 (pay0) and AAC (pay1) tracks."""
    location = path.replace("\\", "\\\\").replace('"', '\\"')
    if container == "mp4":
        demux, video, audio_pad = "qtdemux name=d", "d.video_0", "d.audio_0"
    else:  # tsdemux names its pads by PID, so link by caps instead
        demux, video, audio_pad = "tsdemux name=d", "d. ! video/x-h264", "d. ! audio/mpeg"
    line = f'filesrc location="{location}" ! {demux} {video} ! queue ! h264parse ! rtph264pay name=pay0 pt=96'
    if audio:
        line += f" {audio_pad} ! queue ! aacparse ! rtpmp4gpay name=pay1 pt=97"
    return f"( {line} )"


def basic_auth(user: str, password: str) -> GstRtspServer.RTSPAuth:
    """An RTSPAuth that lets ``user``/``password`` (basic) in with a role allowed to open every mount."""
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
    auth = GstRtspServer.RTSPAuth()
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    return auth


def media_factory(launch: str, authenticated: bool) -> GstRtspServer.RTSPMediaFactory:
    """One mount's factory; with authentication only the ``ROLE`` role may open and build its media."""
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(False)
    if authenticated:
        permissions = f"{ROLE}, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
        factory.add_role_from_structure(Gst.Structure.new_from_string(permissions))
    return factory


def on_client_connected(_server: GstRtspServer.RTSPServer, _client: GstRtspServer.RTSPClient) -> None:
    """Tell the test one more RTSP connection came in."""
    print("client", flush=True)


def attach(server: GstRtspServer.RTSPServer, port: int) -> None:
    """Start listening, retrying for ``BIND_RETRY_S`` while the port is still taken; exit if it stays so."""
    deadline = time.monotonic() + BIND_RETRY_S
    while server.attach(None) == 0:
        if time.monotonic() > deadline:
            sys.exit(f"cannot listen on 127.0.0.1:{port}")
        time.sleep(0.1)


def main() -> None:
    args = parse_args()
    container = args.container or ("ts" if args.file.lower().endswith((".ts", ".m2ts")) else "mp4")
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    auth = basic_auth(user, password) if user is not None and password is not None else None
    if auth is not None:
        server.set_auth(auth)
    launch = launch_line(args.file, container, audio=not args.no_audio)
    for index in range(args.mounts):
        server.get_mount_points().add_factory(mount_path(args.mount, index), media_factory(launch, auth is not None))
    server.connect("client-connected", on_client_connected)
    attach(server, args.port)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
