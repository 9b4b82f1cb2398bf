"""The control socket: how `mountfs status` and `mountfs umount` talk to a running daemon.

One Unix socket per mount point, under the runtime dir, named by a hash of the mount point's
real path. One JSON request line in, one JSON reply line out.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio

MAX_MESSAGE = 1 << 20
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def runtime_dir() -> str:
    override = os.environ.get("MOUNTFS_RUNTIME_DIR")
    if override:
        return override
    if os.geteuid() == 0:
        return "/run/mountfs"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(xdg, "mountfs") if xdg else f"/tmp/mountfs-{os.geteuid()}"


def mount_id(mountpoint: str) -> str:
    # abspath, not realpath: resolving a path inside a hung mount would hang the caller too.
    return hashlib.sha1(os.path.abspath(mountpoint).encode()).hexdigest()[:16]


def socket_path(mountpoint: str) -> str:
    return os.path.join(runtime_dir(), mount_id(mountpoint) + ".sock")


def list_sockets() -> list[str]:
    directory = runtime_dir()
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [os.path.join(directory, n) for n in names if n.endswith(".sock")]


async def serve(path: str, handler: Handler, *, replied: Callable[[], None] | None = None,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Answer requests on `path` until cancelled; `replied()` is called once the answer to each
    request given to `handler` is sent (or could not be), so a daemon can wait for its last
    answers before it exits."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by a daemon that was killed
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(16)
    listener = trio.SocketListener(sock)

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            buffer = b""
            while b"\n" not in buffer and len(buffer) < MAX_MESSAGE:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                buffer += chunk
            handled = False
            try:
                try:
                    request = json.loads(buffer.split(b"\n", 1)[0])
                    handled = True
                    reply = await handler(request)
                except Exception as exc:  # a bad request must not stop the daemon
                    reply = {"ok": False, "error": str(exc)}
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(json.dumps(reply).encode() + b"\n")
            finally:
                if handled and replied is not None:
                    replied()

    try:
        task_status.started()
        await trio.serve_listeners(answer, [listener])
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class NotRunning(Exception):
    """No daemon answers on this socket."""


def request(path: str, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
    """Send one request to the daemon behind `path` (blocking; for the CLI)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                raise NotRunning(path) from exc
            raise
        sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
        buffer = b""
        while not buffer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
    if not buffer:
        raise NotRunning(path)
    reply: dict[str, Any] = json.loads(buffer)
    return reply
