"""One ComfyUI server, local or remote, through its own HTTP and websocket API: /object_info,
/upload/image (takes videos too), /prompt with a client_id, the websocket's events, /history,
/view. The standard library only."""

import base64
import json
import os
import queue
import socket
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from .errors import FAILED, RunError, ServerGone

HISTORY_POLL = 2.0  # seconds between /history checks while the websocket is quiet


def http(url, data=None, timeout=30, body=None, content_type=None):
    """(status, parsed JSON body or text) of a GET, or of a POST when data (JSON) or body (bytes) is
    given. Connection failures raise OSError (urllib.error.URLError is one)."""
    if data is not None:
        body, content_type = json.dumps(data).encode(), "application/json"
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


def multipart(fields, file_field, filename, content):
    """(body, content type) of a multipart/form-data POST with text fields and one file."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class WebSocket:
    """A minimal client of ComfyUI's /ws (text frames only, no extensions): enough to follow events."""

    def __init__(self, url, client_id, timeout=10):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "https":
            raise OSError("https servers: the websocket needs TLS, which this runner does not do")
        host, port = parsed.hostname, parsed.port or 80
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        path = (parsed.path.rstrip("/") or "") + f"/ws?clientId={client_id}"
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {parsed.netloc}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1024)
            if not chunk:
                raise OSError("websocket closed during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise OSError("websocket handshake refused")
        self.buffer = head.split(b"\r\n\r\n", 1)[1]
        self.sock.settimeout(None)

    def read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("websocket closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def messages(self):
        """Yields the text messages as parsed JSON; returns when the server closes the socket."""
        message, kind = b"", None
        while True:
            first, second = self.read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self.read(8))[0]
            mask = self.read(4) if second & 0x80 else None
            payload = self.read(length)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == 8:
                return
            if opcode in (1, 2):
                message, kind = payload, opcode
            elif opcode == 0:
                message += payload
            else:
                continue  # ping / pong
            if first & 0x80 and kind == 1:
                try:
                    yield json.loads(message.decode(errors="replace"))
                except ValueError:
                    pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Events(threading.Thread):
    """Reads a websocket in the background into a queue; ("closed", reason) when it ends."""

    def __init__(self, socket_):
        super().__init__(daemon=True)
        self.socket, self.queue = socket_, queue.Queue()

    def run(self):
        try:
            for event in self.socket.messages():
                self.queue.put(("event", event))
            self.queue.put(("closed", "the server closed the websocket"))
        except (OSError, EOFError, ValueError) as e:
            self.queue.put(("closed", str(e) or type(e).__name__))


class Client:
    """One ComfyUI server at `url` (http://host:port)."""

    def __init__(self, url):
        self.url = url.rstrip("/")
        self._object_info = None
        self._nodes = {}  # class_type -> its /object_info entry, fetched when first asked

    def __str__(self):
        return self.url

    def call(self, path, data=None, timeout=60, **kwargs):
        """http() on this server; a refused or broken connection raises ServerGone."""
        try:
            return http(self.url + path, data, timeout=timeout, **kwargs)
        except (OSError, ConnectionError, ValueError) as e:
            raise ServerGone(self.url, getattr(e, "reason", None) or e) from None

    def answers(self, timeout=2):
        try:
            return http(self.url + "/system_stats", timeout=timeout)[0] == 200
        except (OSError, ValueError):
            return False

    def object_info(self):
        """Every node class the server knows (fetched once)."""
        if self._object_info is None:
            status, info = self.call("/object_info", timeout=120)
            if status != 200 or not isinstance(info, dict):
                raise RunError(f"{self.url}/object_info answered HTTP {status}", FAILED)
            self._object_info = info
        return self._object_info

    def options(self, class_type, name):
        """The choices the server offers for a combo input (e.g. the model files it lists), or None if
        it does not know the node or the input."""
        if class_type not in self._nodes:
            status, info = self.call(f"/object_info/{urllib.parse.quote(class_type)}")
            self._nodes[class_type] = info.get(class_type) if status == 200 and isinstance(info, dict) else None
        info = self._nodes[class_type]
        if not info:
            return None
        spec = {**info["input"].get("required", {}), **info["input"].get("optional", {})}.get(name)
        if not spec:
            return None
        if isinstance(spec[0], list):
            return spec[0]
        return spec[1].get("options", []) if len(spec) > 1 and isinstance(spec[1], dict) else []

    def refresh(self):
        """Forget the node entries read so far (their file lists change when files are added)."""
        self._nodes.clear()

    def upload(self, path, name):
        """Puts a local file in the server's input folder as `name` (overwriting) through /upload/image,
        which stores any file type; returns the name the server gave it."""
        body, content_type = multipart({"type": "input", "overwrite": "true"}, "image", name, Path(path).read_bytes())
        status, answer = self.call("/upload/image", body=body, content_type=content_type, timeout=600)
        if status != 200 or not isinstance(answer, dict):
            raise RunError(f"{self.url} refused the upload of {path} (HTTP {status}): {answer}", FAILED)
        self.refresh()  # the input file lists changed
        return answer["name"] if not answer.get("subfolder") else f"{answer['subfolder']}/{answer['name']}"

    def download(self, item, destination):
        """Writes one output file (a /history item: filename, subfolder, type) through /view."""
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(destination.name + ".part")
        try:
            with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=600) as response, open(partial, "wb") as f:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
        except urllib.error.HTTPError as e:
            raise RunError(f"{self.url}/view {item['filename']}: HTTP {e.code}", FAILED) from None
        except OSError as e:
            raise ServerGone(self.url, e) from None
        partial.replace(destination)

    def queue_prompt(self, graph, client_id):
        """POST /prompt; the prompt id. A refusal (HTTP 400 with node_errors) is a RunError."""
        status, body = self.call("/prompt", {"prompt": graph, "client_id": client_id})
        if status != 200 or not isinstance(body, dict) or "prompt_id" not in body:
            raise RunError(f"{self.url} refused the workflow (HTTP {status}):\n{summarise_refusal(body)}")
        return body["prompt_id"]

    def history(self, prompt_id):
        """The prompt's /history entry once it has finished (completed or error), else None."""
        status, history = self.call(f"/history/{prompt_id}")
        entry = history.get(prompt_id) if status == 200 and isinstance(history, dict) else None
        state = (entry or {}).get("status") or {}
        return entry if state.get("completed") or state.get("status_str") == "error" else None

    def run(self, graph, on_event=None, timeout=6 * 3600, on_queued=None):
        """Queues the graph and follows it to the end: the /history entry. Websocket events go to
        on_event(event) as they come; /history decides the outcome. The server dying on the way (the
        websocket closes and the server no longer answers) raises ServerGone."""
        client_id = uuid.uuid4().hex
        try:
            events = Events(WebSocket(self.url, client_id))
            events.start()
        except OSError:
            events = None  # progress is a nicety; /history is polled below
        try:
            prompt_id = self.queue_prompt(graph, client_id)
            if on_queued:
                on_queued(prompt_id)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                kind, payload = self._next_event(events)
                if kind == "closed":
                    if not self.answers(timeout=5):
                        raise ServerGone(self.url, payload)
                    events = None  # the socket went but the server stays: poll
                elif kind == "event":
                    data = payload.get("data") or {}
                    if on_event and data.get("prompt_id", prompt_id) == prompt_id:
                        on_event(payload)
                    finished = payload.get("type") in ("execution_success", "execution_error",
                                                       "execution_interrupted") \
                        or (payload.get("type") == "executing" and data.get("node") is None)
                    if not finished:
                        continue
                entry = self.history(prompt_id)
                if entry is not None:
                    return entry
            raise RunError(f"the workflow did not finish within {timeout:.0f} s on {self.url}", FAILED)
        finally:
            if events is not None:
                events.socket.close()

    @staticmethod
    def _next_event(events):
        if events is None:
            time.sleep(HISTORY_POLL)
            return "poll", None
        try:
            return events.queue.get(timeout=HISTORY_POLL)
        except queue.Empty:
            return "poll", None


def summarise_refusal(body):
    """The server's reasons for refusing a workflow, one line each."""
    if not isinstance(body, dict):
        return str(body)
    lines = []
    error = body.get("error") or {}
    if isinstance(error, dict) and error.get("message"):
        lines.append(f"{error['message']}{' (' + error['details'] + ')' if error.get('details') else ''}")
    for node_id, data in (body.get("node_errors") or {}).items():
        for e in data.get("errors", []):
            lines.append(f"node {node_id} ({data.get('class_type')}): {e.get('message')}: {e.get('details')}")
    text = "\n".join(lines) or json.dumps(body)
    if "does not exist" in text:
        text += "\n(a node type the server does not know: install the custom node pack that provides it)"
    return text


def failure_detail(entry):
    """What went wrong in a finished /history entry whose status is not success."""
    state = entry.get("status") or {}
    errors = [data for kind, data in state.get("messages", []) if kind == "execution_error"]
    return "; ".join(f"node {e.get('node_id')} ({e.get('node_type')}): {e.get('exception_message', '').strip()}"
                     for e in errors) or json.dumps(state)


def output_items(entry):
    """The output files of a finished /history entry: [{filename, subfolder, type: output}]."""
    items = []
    for outputs in (entry.get("outputs") or {}).values():
        for values in outputs.values():
            for item in values if isinstance(values, list) else []:
                if isinstance(item, dict) and "filename" in item and item.get("type") == "output":
                    items.append(item)
    return items
