"""A real ComfyUI server with this pack installed: start it, talk to it over HTTP and websocket, stop it.

Used by the integration tests only. Needs `COMFYUI_DIR` (a ComfyUI checkout) and `COMFYUI_PYTHON` (an
interpreter with ComfyUI's and the pack's requirements); the dev environment needs nothing beyond the
standard library (the websocket client below is a minimal RFC 6455 client).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

PACK_ROOT = Path(__file__).resolve().parents[2]
PACK_FOLDER_NAME = "ComfyUI-Text2Video"  # a user-like folder name, not the Python package name
STARTUP_TIMEOUT = 240.0
PROMPT_TIMEOUT = 180.0
HTTP_TIMEOUT = 60.0
LOG_EXCERPT_CHARS = 6000
_WAKE_UP_IMAGE, _WAKE_UP_PREVIEW = "free-wake-up-image", "free-wake-up-preview"
"""Node ids of `ComfyServer.free`'s wake-up prompt (core nodes), apart from any test prompt's ids."""


def comfyui_paths() -> tuple[Path, Path] | str:
    """`(COMFYUI_DIR, COMFYUI_PYTHON)`, or why the integration tests cannot run here."""
    directory, python = os.environ.get("COMFYUI_DIR"), os.environ.get("COMFYUI_PYTHON")
    if not directory or not python:
        return ("needs a real ComfyUI: set COMFYUI_DIR (a ComfyUI checkout) and COMFYUI_PYTHON (its interpreter, "
                "with the pack's requirements installed)")
    if not (Path(directory) / "main.py").is_file():
        return f"COMFYUI_DIR={directory} has no main.py"
    if not os.access(python, os.X_OK):
        return f"COMFYUI_PYTHON={python} is not an executable"
    return Path(directory), Path(python)


def pack_files(root: Path = PACK_ROOT) -> list[Path]:
    """The files a clean clone would have: tracked plus untracked-but-not-ignored ones (relative paths)."""
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode()
    return [Path(name) for name in listed.split("\0") if name and (root / name).is_file()]


def install_pack(custom_nodes: Path) -> Path:
    """Copy the pack as a clean clone into `custom_nodes/ComfyUI-Text2Video`."""
    target = custom_nodes / PACK_FOLDER_NAME
    for relative in pack_files():
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACK_ROOT / relative, destination)
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebSocket:
    """Just enough of a websocket client for ComfyUI's `/ws`: text and binary frames, pings, close."""

    _ACCEPT_MAGIC = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, port: int, path: str, timeout: float = HTTP_TIMEOUT):
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self._sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                           .encode())
        self._buffer = b""
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += self._recv_some()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        expected = base64.b64encode(hashlib.sha1((key + self._ACCEPT_MAGIC).encode()).digest())
        if not head.startswith(b"HTTP/1.1 101") or expected not in head:
            raise ConnectionError(f"websocket handshake refused: {head.decode(errors='replace')}")

    def _recv_some(self) -> bytes:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("websocket closed by the server")
        return chunk

    def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._buffer += self._recv_some()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack(">BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, size)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self._sock.sendall(header + mask + masked)

    def receive(self, timeout: float) -> str | bytes:
        """The next text (str) or binary (bytes) message; `socket.timeout` after `timeout` seconds."""
        self._sock.settimeout(max(timeout, 0.01))
        message, message_opcode = b"", None
        while True:
            first, second = self._read(2)
            opcode, size = first & 0x0F, second & 0x7F
            if size == 126:
                size = struct.unpack(">H", self._read(2))[0]
            elif size == 127:
                size = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(size)
            if mask:
                payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the server")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            message += payload
            message_opcode = message_opcode if opcode == 0x0 else opcode
            if first & 0x80:
                return message.decode() if message_opcode == 0x1 else message

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self._sock.close()


@dataclasses.dataclass
class PromptRun:
    """What one queued prompt did: its JSON websocket messages and its `/history` entry."""

    prompt_id: str
    messages: list[dict]
    history: dict

    def of_type(self, message_type: str) -> list[dict]:
        return [message["data"] for message in self.messages if message["type"] == message_type]

    @property
    def status(self) -> str:
        return self.history.get("status", {}).get("status_str", "")

    @property
    def outputs(self) -> dict:
        return self.history.get("outputs", {})

    def error(self) -> str:
        """The execution error (node and message), for assertion messages."""
        errors = self.of_type("execution_error")
        if not errors:
            return f"status {self.status!r}, no execution_error"
        error = errors[0]
        return f"{error['node_type']} (node {error['node_id']}): {error['exception_message']}"


class HTTPFailure(Exception):
    def __init__(self, status: int, body):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class ComfyServer:
    """One ComfyUI process on a free loopback port, with a temporary base folder (models, input, output)."""

    def __init__(self, comfyui_dir: Path, python: Path, base: Path):
        self.comfyui_dir, self.python, self.base = comfyui_dir, python, base
        self.port = free_port()
        self.log_path = base / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def models_dir(self) -> Path:
        return self.base / "models"

    def start(self) -> None:
        command = [str(self.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--disable-auto-launch", "--disable-api-nodes", "--base-directory", str(self.base),
                   "--database-url", "sqlite:///:memory:"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.comfyui_dir, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats", timeout=2)
                return
            except (OSError, HTTPFailure):
                time.sleep(0.25)
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = LOG_EXCERPT_CHARS) -> str:
        return self.log()[-chars:]

    def pack_import_failure(self) -> str | None:
        """The log excerpt around the pack's import failure, if ComfyUI could not import it."""
        log = self.log()
        for marker in ("Cannot import", "IMPORT FAILED"):
            at = log.find(marker)
            while at != -1:
                line_end = log.find("\n", at)
                if PACK_FOLDER_NAME in log[at:line_end if line_end != -1 else None]:
                    start = log.rfind("Traceback", 0, at)
                    return log[max(start if start != -1 else at - LOG_EXCERPT_CHARS // 2, 0):at + 2000]
                at = log.find(marker, at + 1)
        return None

    def rss_bytes(self) -> int:
        """The server process's resident memory."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    # ------------------------------------------------------------------ HTTP

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                 timeout: float = HTTP_TIMEOUT):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method=method,
                                         headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                payload = json.loads(text)
            except ValueError:
                payload = text
            raise HTTPFailure(error.code, payload) from None
        return json.loads(text) if text.strip() else None

    def get(self, path: str, timeout: float = HTTP_TIMEOUT):
        return self._request("GET", path, timeout=timeout)

    def post(self, path: str, payload: dict | None = None):
        return self._request("POST", path, json.dumps(payload or {}).encode(), {"Content-Type": "application/json"})

    def upload(self, path: Path, kind: str = "input") -> dict:
        """`POST /upload/image` (every upload widget uses it, videos too)."""
        boundary = uuid.uuid4().hex
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + path.read_bytes() + b"\r\n",
                 f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\n{kind}\r\n'.encode(),
                 f"--{boundary}--\r\n".encode()]
        return self._request("POST", "/upload/image", b"".join(parts),
                             {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def object_info(self, node_type: str | None = None) -> dict:
        if node_type is None:
            return self.get("/object_info")
        return self.get(f"/object_info/{urllib.parse.quote(node_type)}").get(node_type, {})

    # ------------------------------------------------------------------ prompts

    def queue(self, prompt: dict, client_id: str | None = None, targets: list[str] | None = None) -> str:
        """`POST /prompt`; the prompt id. Raises `HTTPFailure` (status 400 and node_errors) when invalid.

        `targets`: run only these output nodes (`partial_execution_targets`); the rest of the prompt still
        decides what stays in ComfyUI's execution cache.
        """
        body = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
        if targets is not None:
            body["partial_execution_targets"] = targets
        return self.post("/prompt", body)["prompt_id"]

    def run(self, prompt: dict, on_message: Callable[[dict], None] | None = None,
            timeout: float = PROMPT_TIMEOUT, targets: list[str] | None = None) -> PromptRun:
        """Queue `prompt` and follow it on the websocket until it finishes (success, error or interrupt)."""
        client_id = uuid.uuid4().hex
        socket_ = WebSocket(self.port, f"/ws?clientId={client_id}")
        try:
            prompt_id = self.queue(prompt, client_id, targets)
            messages = []
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s; messages: "
                                       f"{[m['type'] for m in messages]}\n{self.log_tail()}")
                try:
                    received = socket_.receive(remaining)
                except TimeoutError:
                    continue  # reported with the messages and the server log above
                if isinstance(received, bytes):  # preview images
                    continue
                message = json.loads(received)
                messages.append(message)
                if on_message is not None:
                    on_message(message)
                data = message.get("data", {})
                if (message["type"] == "executing" and data.get("node") is None
                        and data.get("prompt_id") == prompt_id):
                    break
        finally:
            socket_.close()
        history = self.get(f"/history/{prompt_id}").get(prompt_id, {})
        return PromptRun(prompt_id, messages, history)

    def free(self, cached_prompt: dict | None = None) -> None:
        """`POST /free` (unload models, free memory), and make sure ComfyUI's worker acts on it now.

        `/free` only sets flags and notifies the worker's condition variable (`PromptQueue.set_flag`); the
        worker reads the flags once per loop, after a prompt or a `q.get` wake-up (main.py `prompt_worker`). A
        notification that arrives while the worker is not waiting, e.g. during the `gc.collect()` it runs
        right after a prompt, is lost: the worker then sleeps in `q.get(timeout=1000)` with the flags pending,
        for up to 1000 s. Queuing a prompt always wakes it (`put` notifies, and `get` looks at the queue before
        waiting), and it reads the flags right after that prompt, before it takes the next one. So the free is
        followed by a wake-up prompt: `cached_prompt` (the last prompt run, whose outputs the caller wants to
        stay in ComfyUI's execution cache until the free drops them) plus a tiny image preview, of which only
        the preview runs (`partial_execution_targets`). The cache keeps the entries of every node in the
        prompt, so the wake-up evicts nothing and loads nothing; whatever is released, `/free` released.

        On return the wake-up prompt has finished; the worker runs the free next (if it has not already), before
        any prompt queued afterwards.
        """
        self.post("/free", {"unload_models": True, "free_memory": True})
        wake_up = {**(cached_prompt or {}),
                   _WAKE_UP_IMAGE: {"class_type": "EmptyImage",
                                    "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                   _WAKE_UP_PREVIEW: {"class_type": "PreviewImage", "inputs": {"images": [_WAKE_UP_IMAGE, 0]}}}
        run = self.run(wake_up, targets=[_WAKE_UP_PREVIEW])
        if run.status != "success":
            raise RuntimeError(f"the wake-up prompt after /free failed: {run.error()}")

    def wait_idle(self, timeout: float = PROMPT_TIMEOUT) -> None:
        """Wait until nothing is running or pending."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queue = self.get("/queue")
            if not queue["queue_running"] and not queue["queue_pending"]:
                return
            time.sleep(0.2)
        raise TimeoutError("the queue did not empty")
