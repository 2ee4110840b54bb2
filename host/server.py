"""`stable-audio-toolkit serve`: ComfyUI's HTTP and websocket API on our host, for the official frontend.

The frontend (PyPI `comfyui-frontend-package`) is served from its `static` folder; the API
answers as ComfyUI's server.py, app/user_manager.py, app/app_settings.py and api_server/ do for
the requests the frontend makes. Prompts are validated when posted (400 with `node_errors`),
queued, and run one at a time on a worker thread by our Executor, whose cache lives as long as
the server. Every route is also served under `/api`, as ComfyUI does.

Security: every file name from a request is resolved inside its folder (no '..', absolute
paths, NUL or symlinks out); POSTs and websockets whose Origin differs from the Host are
refused; with a token every request must carry it (Authorization: Bearer, ?token= or the
cookie set by the first ?token= request).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import mimetypes
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from aiohttp import WSMsgType, web

from stable_audio_core.atomic_files import write_bytes
from stable_audio_core.errors import OutputFileError

from .executor import Executor, NodeExecutionError, WorkflowInvalid
from .jobs import STATUSES, Job, JobQueue, select_jobs
from .pack import load_pack
from .runtime import Folders, HostRuntime, Interrupted
from .workflow import is_ui_format, read_workflow, WorkflowFileError

TOKEN_COOKIE = "stable_audio_token"
MODEL_KINDS = ("checkpoints", "text_encoders", "vae", "embeddings")
FILE_TYPES = ("input", "output", "temp")
# Served as downloads, never rendered: a file in the output folder must not run script in the page.
UNSAFE_TYPES = {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}
SETTINGS_FILE = "comfy.settings.json"


class FrontendMissing(Exception):
    """The comfyui-frontend-package (the `ui` extra) is not installed."""


def frontend_root() -> Path:
    """The installed frontend's `static` folder, as ComfyUI finds it."""
    try:
        import comfyui_frontend_package
    except ImportError:
        raise FrontendMissing("the browser UI needs the frontend package: pip install -e '.[ui]' "
                              "(or pip install comfyui-frontend-package)") from None
    return Path(comfyui_frontend_package.__file__).parent / "static"


def frontend_version(root: Path | None) -> str | None:
    """The version of the frontend in `root` (a package's static folder), from its dist-info."""
    if root is None:
        return None
    for info in sorted(Path(root).resolve().parent.parent.glob("comfyui_frontend_package-*.dist-info")):
        return info.name.removeprefix("comfyui_frontend_package-").removesuffix(".dist-info")
    return None


@dataclass
class ServerFolders:
    models: Path
    input: Path
    output: Path
    user: Path
    temp: Path | None = None  # None: a fresh folder under the system's temp folder


def inside(folder: Path, *parts: str) -> Path | None:
    """`folder/parts...`, resolved, or None when a part is absolute, holds '..' or NUL, or the
    resolved path (symlinks followed) leaves `folder`."""
    base = folder.resolve()
    pieces = []
    for part in parts:
        if not part:
            continue
        if "\x00" in part or part.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", part):
            return None
        split = [p for p in re.split(r"[\\/]+", part) if p not in ("", ".")]
        if ".." in split:
            return None
        pieces += split
    path = base.joinpath(*pieces).resolve()
    return path if path == base or base in path.parents else None


def clean_filename(name: str) -> str:
    """An uploaded file's name reduced to its last component and safe characters ('' if none)."""
    name = re.split(r"[\\/]", name.replace("\x00", ""))[-1]
    name = re.sub(r"[^\w\-. ()\[\]]+", "_", name).strip(" .")
    return name[:200]


def _file_info(path: Path, root: Path) -> dict:
    stat = path.stat()
    return {"path": path.relative_to(root).as_posix(), "size": stat.st_size,
            "modified": stat.st_mtime, "created": stat.st_ctime}


def _same_origin(request: web.Request) -> bool:
    """Does the Origin header (when present) name the Host the request was sent to?"""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    host = request.headers.get("Host", "").lower()
    parsed = urlsplit(origin.lower())
    return bool(parsed.netloc) and (parsed.netloc == host or (
        # A browser may leave out the default port on one side.
        parsed.port is None and parsed.hostname == urlsplit("//" + host).hostname
        and urlsplit("//" + host).port in (None, 80, 443)))


class ServerRuntime(HostRuntime):
    """The host runtime with progress reported to the server instead of a terminal bar."""

    def __init__(self, folders: Folders, device: str, on_progress):
        super().__init__(folders, device=device, show_progress=False)
        self.on_progress = on_progress

    def progress(self, done: int, total: int) -> None:
        self.on_progress(self.current_node, done, total)

    def begin(self) -> None:
        """A new job starts: forget an interrupt that arrived after the last one ended."""
        self._interrupt.clear()
        self.progress_log.clear()


class PromptServer:
    """The app (`self.app`), the queue and the worker thread that runs it."""

    def __init__(self, folders: ServerFolders, *, web_root: Path | None = None, token: str | None = None,
                 device: str = "auto", pack_folder: str | Path | None = None, max_upload_mb: float = 100):
        from .pack import default_pack_folder

        self.folders = folders
        self.temp = folders.temp or Path(tempfile.mkdtemp(prefix="stable-audio-serve-"))
        for folder in (folders.input, folders.output, folders.user, self.temp):
            Path(folder).mkdir(parents=True, exist_ok=True)
        self.user_root = Path(folders.user) / "default"
        self.user_root.mkdir(exist_ok=True)
        self.pack_folder = Path(pack_folder or default_pack_folder()).resolve()
        self.pack = load_pack(self.pack_folder)
        self.runtime = ServerRuntime(Folders(models=Path(folders.models), input=Path(folders.input),
                                             output=Path(folders.output)), device, self._progress)
        set_host = getattr(self.pack.module, "set_host", None)
        if set_host is not None:
            set_host(self.runtime)
        self.executor = Executor(self.pack.classes, self.runtime, self.pack.display_names)
        self.web_root = Path(web_root) if web_root else None
        self.token = token
        self.max_upload = int(max_upload_mb * 1024 * 1024)
        self.queue = JobQueue(on_change=self._queue_changed)
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._messages: asyncio.Queue | None = None
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._job: dict | None = None  # the running job's client, node states and messages
        web_dir = getattr(self.pack.module, "WEB_DIRECTORY", None)
        self.pack_web = (self.pack_folder / web_dir).resolve() if web_dir else None
        self.pack_name = self.pack_folder.name
        self.app = self._build_app()

    # --- messages to the browsers -----------------------------------------------------------------
    def _send_threadsafe(self, event: str, data: dict, sid: str | None = None) -> None:
        if self.loop is not None and self._messages is not None:
            self.loop.call_soon_threadsafe(self._messages.put_nowait, (event, data, sid))

    async def send(self, event: str, data: dict, sid: str | None = None) -> None:
        """To one client, or to all when `sid` is None."""
        message = {"type": event, "data": data}
        targets = list(self.sockets.values()) if sid is None else [self.sockets[sid]] if sid in self.sockets else []
        for ws in targets:
            try:
                await ws.send_json(message)
            except (ConnectionError, RuntimeError):
                pass  # the client went away; its handler removes it

    async def _publish(self) -> None:
        while True:
            event, data, sid = await self._messages.get()
            await self.send(event, data, sid)

    def queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    def _queue_changed(self) -> None:
        self._send_threadsafe("status", {"status": self.queue_info()})

    # --- the worker -------------------------------------------------------------------------------
    def _emit(self, event: str, data: dict, record: bool = False, broadcast: bool = False) -> None:
        """ComfyUI's routing: to the client that queued the prompt; recorded messages (the job's
        status) only when it named one unless `broadcast`, the others to all when it did not."""
        job = self._job
        sid = job["client_id"]
        if record:
            data = {**data, "timestamp": int(time.time() * 1000)}
            job["messages"].append([event, data])
            if sid is None and not broadcast:
                return
        self._send_threadsafe(event, data, sid)

    def _progress_state(self) -> None:
        job = self._job
        nodes = {node_id: {"value": value, "max": total, "state": state, "node_id": node_id,
                           "prompt_id": job["prompt_id"], "display_node_id": node_id,
                           "parent_node_id": None, "real_node_id": node_id}
                 for node_id, (value, total, state) in job["states"].items()}
        self._emit("progress_state", {"prompt_id": job["prompt_id"], "nodes": nodes})

    def _progress(self, node_id: str | None, done: int, total: int) -> None:
        job = self._job
        if job is None or node_id is None:
            return
        job["states"][node_id] = (done, total, "running")
        self._emit("progress", {"value": done, "max": total, "prompt_id": job["prompt_id"], "node": node_id})
        self._progress_state()

    def run_job(self, job: Job) -> None:
        """Run one queued job, sending ComfyUI's execution messages, and record it in the history."""
        extra = job.extra_data
        self._job = state = {"prompt_id": job.prompt_id, "client_id": extra.get("client_id") or None,
                             "states": {}, "messages": [], "node": None}
        self.runtime.begin()
        outputs, meta, executed = {}, {}, []

        def on_node(node_id: str, class_type: str, index: int, total: int) -> None:
            self.runtime.throw_if_interrupted()  # between nodes too, as ComfyUI checks
            state["node"] = node_id
            state["states"][node_id] = (0, 1, "running")
            self._emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": job.prompt_id})
            self._progress_state()

        def on_executed(node_id: str, ui: dict | None) -> None:
            executed.append(node_id)
            if ui:
                outputs[node_id] = ui
                meta[node_id] = {"node_id": node_id, "display_node": node_id, "parent_node": None,
                                 "real_node_id": node_id}
                if state["client_id"] is not None:
                    self._emit("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                            "prompt_id": job.prompt_id})
            value, total, _ = state["states"].get(node_id, (1, 1, ""))
            state["states"][node_id] = (max(value, total), total, "finished")
            self._progress_state()

        self._emit("execution_start", {"prompt_id": job.prompt_id}, record=True)
        success, outcome = False, None
        try:
            workflow = (extra.get("extra_pnginfo") or {}).get("workflow")
            self._emit("execution_cached", {"nodes": self.executor.cached_nodes(job.prompt),
                                            "prompt_id": job.prompt_id}, record=True)
            self.executor.run(job.prompt, workflow, on_node=on_node, on_executed=on_executed)
            success = True
            outcome = ("execution_success", {"prompt_id": job.prompt_id}, False)
        except Interrupted:
            node = state["node"] or ""
            outcome = ("execution_interrupted", {
                "prompt_id": job.prompt_id, "node_id": node,
                "node_type": (job.prompt.get(node) or {}).get("class_type", ""), "executed": executed}, True)
        except Exception as exc:  # a failing node must never stop the server
            outcome = ("execution_error", self._error_message(job, state["node"], exc, executed), False)
        finally:
            # The history holds the job before its last message goes out, so a client that reads
            # /history on that message finds it.
            event, data, broadcast = outcome or ("execution_error", {"prompt_id": job.prompt_id}, False)
            timestamped = {**data, "timestamp": int(time.time() * 1000)}
            state["messages"].append([event, timestamped])
            self.queue.finish(job, outputs, meta, {"status_str": "success" if success else "error",
                                                   "completed": success, "messages": state["messages"]})
            if state["client_id"] is not None or broadcast:
                self._send_threadsafe(event, timestamped, state["client_id"])
            if state["client_id"] is not None:
                self._emit("executing", {"node": None, "prompt_id": job.prompt_id})
            self._job = None

    def _error_message(self, job: Job, node: str | None, exc: Exception, executed: list) -> dict:
        original = exc.original if isinstance(exc, NodeExecutionError) else exc
        if isinstance(exc, NodeExecutionError):
            node = exc.node_id
        elif isinstance(exc, WorkflowInvalid):
            node = next(iter(exc.report.node_errors), node)
        node = node or next(iter(job.prompt), "")
        inputs = {name: [repr(value)[:200]] for name, value in (job.prompt.get(node) or {}).get("inputs", {}).items()
                  if not isinstance(value, list)}
        return {"prompt_id": job.prompt_id, "node_id": node,
                "node_type": (job.prompt.get(node) or {}).get("class_type", ""), "executed": executed,
                "exception_message": str(original), "exception_type": type(original).__name__,
                "traceback": traceback.format_tb(original.__traceback__), "current_inputs": inputs,
                "current_outputs": list(executed)}

    def _work(self) -> None:
        while not self._stop.is_set():
            job = self.queue.take(timeout=0.2)
            if job is not None:
                self.run_job(job)

    async def _startup(self, app: web.Application) -> None:
        self.loop = asyncio.get_running_loop()
        self._messages = asyncio.Queue()
        self._publisher = asyncio.ensure_future(self._publish())
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="stable-audio-worker", daemon=True)
        self._worker.start()

    async def _cleanup(self, app: web.Application) -> None:
        self._stop.set()
        self.runtime.interrupt()
        if self._worker is not None:
            await self.loop.run_in_executor(None, self._worker.join)
        self._publisher.cancel()
        for ws in list(self.sockets.values()):
            await ws.close()
        if self.folders.temp is None:  # the folder this server made for itself
            shutil.rmtree(self.temp, ignore_errors=True)

    # --- middlewares ------------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if self.token is not None:
            given = (request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                     or request.query.get("token") or request.cookies.get(TOKEN_COOKIE, ""))
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return web.Response(status=401, text="this server needs its access token: open it with ?token=...")
        unsafe = request.method not in ("GET", "HEAD", "OPTIONS") or request.path in ("/ws", "/api/ws")
        if unsafe and not _same_origin(request):
            return web.Response(status=403, text="cross-origin request refused")
        if request.method == "OPTIONS":
            return web.Response()
        response = await handler(request)
        if self.token is not None and "token" in request.query and not isinstance(response, web.WebSocketResponse):
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="Strict")
        return response

    # --- files -----------------------------------------------------------------------------------
    def _type_folder(self, kind: str | None) -> Path | None:
        return {"input": Path(self.folders.input), "output": Path(self.folders.output),
                "temp": self.temp}.get(kind or "input")

    def _typed_file(self, kind: str, subfolder: str, filename: str) -> Path | None:
        folder = self._type_folder(kind)
        return inside(folder, subfolder, filename) if folder is not None else None

    def _user_path(self, name: str | None) -> Path | None:
        """A path inside the user's folder from a (possibly URL-encoded) request name."""
        if name is None:
            return self.user_root.resolve()
        if "%" in name:
            name = unquote(name)
        return inside(self.user_root, name)

    def _model_files(self, kind: str) -> list[str]:
        names = set()
        for folder in self.runtime.folder_paths(kind):
            if Path(folder).is_dir():
                names.update(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*")
                             if p.is_file() and not p.name.startswith("."))
        return sorted(names)

    def _templates(self) -> list[str]:
        folder = self.pack_folder / "workflows"
        names = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                if is_ui_format(read_workflow(path)):  # the frontend opens UI files; API ones are for scripts
                    names.append(path.stem)
            except WorkflowFileError:
                continue
        return names

    # --- routes ---------------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_upload, middlewares=[self._guard])
        routes = web.RouteTableDef()
        self._add_api_routes(routes)
        app.add_routes([web.route(r.method, "/api" + r.path, r.handler) for r in routes])
        app.add_routes(routes)
        internal = web.Application()
        internal.add_routes(self._internal_routes())
        app.add_subapp("/internal", internal)
        if self.pack_web is not None and self.pack_web.is_dir():
            app.add_routes([web.static(f"/extensions/{self.pack_name}", self.pack_web)])
        docs = self._embedded_docs()
        if docs is not None:
            app.add_routes([web.static("/docs", docs)])
        if self.web_root is not None:
            app.router.add_get("/", self._index)
            app.add_routes([web.static("/", self.web_root)])
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    @staticmethod
    def _embedded_docs() -> Path | None:
        try:
            import comfyui_embedded_docs
        except ImportError:
            return None
        folder = Path(comfyui_embedded_docs.__file__).parent / "docs"
        return folder if folder.is_dir() else None

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(self.web_root / "index.html",
                                headers={"Cache-Control": "no-cache", "Pragma": "no-cache", "Expires": "0"})

    def _node_info(self, name: str) -> dict:
        cls = self.pack.classes[name]
        spec = cls.INPUT_TYPES()
        info = {"input": spec, "input_order": {k: list(v.keys()) for k, v in spec.items()},
                "output": cls.RETURN_TYPES,
                "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
                "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), "name": name,
                "display_name": self.pack.display_names.get(name, name),
                "description": getattr(cls, "DESCRIPTION", ""),
                "python_module": f"custom_nodes.{self.pack_name}",
                "category": getattr(cls, "CATEGORY", "sd"),
                "output_node": getattr(cls, "OUTPUT_NODE", False) is True}
        if hasattr(cls, "OUTPUT_TOOLTIPS"):
            info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
        if getattr(cls, "DEPRECATED", False):
            info["deprecated"] = True
        if getattr(cls, "EXPERIMENTAL", False):
            info["experimental"] = True
        return info

    def _add_api_routes(self, routes: web.RouteTableDef) -> None:
        server = self

        @routes.get("/ws")
        async def websocket(request: web.Request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            sid = request.query.get("clientId") or uuid.uuid4().hex
            server.sockets[sid] = ws
            try:
                await server.send("status", {"status": server.queue_info(), "sid": sid}, sid)
                job = server._job
                if job is not None and job["client_id"] == sid and job["node"] is not None:
                    await server.send("executing", {"node": job["node"]}, sid)
                first = True
                async for message in ws:
                    if message.type != WSMsgType.TEXT:
                        continue
                    try:
                        data = json.loads(message.data)
                    except json.JSONDecodeError:
                        continue
                    if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                        await server.send("feature_flags", server.features(), sid)
                    first = False
            finally:
                if server.sockets.get(sid) is ws:
                    del server.sockets[sid]
            return ws

        @routes.get("/embeddings")
        async def embeddings(request):
            return web.json_response([os.path.splitext(n)[0] for n in server._model_files("embeddings")])

        @routes.get("/models")
        async def model_kinds(request):
            return web.json_response(list(MODEL_KINDS))

        @routes.get("/models/{folder}")
        async def models(request):
            kind = request.match_info["folder"]
            if kind not in MODEL_KINDS:
                return web.Response(status=404)
            return web.json_response(server._model_files(kind))

        @routes.get("/experiment/models")
        async def experiment_models(request):
            return web.json_response([{"name": kind, "folders": [str(p) for p in server.runtime.folder_paths(kind)]}
                                      for kind in MODEL_KINDS])

        @routes.get("/experiment/models/{folder}")
        async def experiment_model_files(request):
            kind = request.match_info["folder"]
            if kind not in MODEL_KINDS:
                return web.Response(status=404)
            found = []
            for index, folder in enumerate(server.runtime.folder_paths(kind)):
                for name in server._model_files(kind):
                    path = Path(folder) / name
                    if path.is_file():
                        stat = path.stat()
                        found.append({"name": name, "pathIndex": index, "modified": stat.st_mtime,
                                      "created": stat.st_ctime, "size": stat.st_size})
            return web.json_response(found)

        @routes.get("/extensions")
        async def extensions(request):
            found = []
            if server.web_root is not None:
                found += ["/" + p.relative_to(server.web_root).as_posix()
                          for p in sorted((server.web_root / "extensions").rglob("*.js"))]
            if server.pack_web is not None and server.pack_web.is_dir():
                found += [f"/extensions/{server.pack_name}/" + p.relative_to(server.pack_web).as_posix()
                          for p in sorted(server.pack_web.rglob("*.js"))]
            return web.json_response(found)

        @routes.post("/upload/image")
        async def upload(request):
            post = await request.post()
            file = post.get("image")
            if file is None or not hasattr(file, "file"):
                return web.Response(status=400, text="no file in the 'image' field")
            kind = post.get("type") or "input"
            folder = server._type_folder(kind)
            filename = clean_filename(file.filename or "")
            subfolder = post.get("subfolder", "") or ""
            target = inside(folder, subfolder, filename) if folder is not None and filename else None
            if target is None or target == folder.resolve():
                return web.Response(status=400, text="invalid file name, type or subfolder")
            data = file.file.read()
            if post.get("overwrite") not in ("true", "1"):
                stem, suffix = os.path.splitext(filename)
                count = 1
                while target.exists() and target.read_bytes() != data:
                    filename = f"{stem} ({count}){suffix}"
                    target = target.with_name(filename)
                    count += 1
            if not target.exists() or target.read_bytes() != data:
                write_bytes(target, data)
            return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

        @routes.get("/view")
        async def view(request):
            filename = request.query.get("filename")
            if not filename:
                return web.Response(status=404)
            kind = request.query.get("type", "output")
            annotated = re.match(r"^(.*) \[(input|output|temp)\]$", filename)
            if annotated:
                filename, kind = annotated.groups()
            if kind not in FILE_TYPES:
                return web.Response(status=400)
            path = server._typed_file(kind, request.query.get("subfolder", ""), filename)
            if path is None:
                return web.Response(status=403)
            if not path.is_file():
                return web.Response(status=404)
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if content_type in UNSAFE_TYPES:
                content_type = "application/octet-stream"
            return web.FileResponse(path, headers={"Content-Disposition": f'filename="{path.name}"',
                                                   "Content-Type": content_type})

        @routes.get("/system_stats")
        async def system_stats(request):
            return web.json_response(server.system_stats())

        @routes.get("/features")
        async def features(request):
            return web.json_response(server.features())

        @routes.get("/prompt")
        async def prompt_info(request):
            return web.json_response(server.queue_info())

        @routes.get("/object_info")
        async def object_info(request):
            return web.json_response({name: server._node_info(name) for name in server.pack.classes})

        @routes.get("/object_info/{node_class}")
        async def object_info_node(request):
            name = request.match_info["node_class"]
            return web.json_response({name: server._node_info(name)} if name in server.pack.classes else {})

        @routes.post("/prompt")
        async def post_prompt(request):
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                body = None
            if not isinstance(body, dict) or "prompt" not in body:
                error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                         "extra_info": {}}
                return web.json_response({"error": error, "node_errors": {}}, status=400)
            number = float(body["number"]) if "number" in body else server.queue.next_number(bool(body.get("front")))
            prompt = body["prompt"]
            report = server.executor.validate(prompt)
            if not report.ok:
                error = report.error or {
                    "type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                    "details": "\n".join(f"{e['message']}: {e['details']}" for entry in report.node_errors.values()
                                         for e in entry["errors"]), "extra_info": {}}
                return web.json_response({"error": error, "node_errors": report.node_errors}, status=400)
            prompt_id = str(body.get("prompt_id") or uuid.uuid4())
            extra = dict(body.get("extra_data") or {})
            if "client_id" in body:
                extra["client_id"] = body["client_id"]
            extra.pop("api_key_comfy_org", None)  # secrets are never stored in the queue or history
            extra.pop("auth_token_comfy_org", None)
            extra["create_time"] = int(time.time() * 1000)
            server.queue.put(Job(number, prompt_id, prompt, extra, list(report.outputs)))
            return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": {}})

        @routes.get("/queue")
        async def get_queue(request):
            running, pending = server.queue.snapshot()
            return web.json_response({"queue_running": running, "queue_pending": pending})

        @routes.post("/queue")
        async def post_queue(request):
            body = await _json_body(request)
            if body.get("clear"):
                server.queue.clear()
            server.queue.delete(body.get("delete") or [])
            return web.Response(status=200)

        @routes.post("/interrupt")
        async def interrupt(request):
            body = await _json_body(request)
            running = server.queue.running
            if running is not None and body.get("prompt_id") in (None, running.prompt_id):
                server.runtime.interrupt()
            return web.Response(status=200)

        @routes.post("/free")
        async def free(request):
            return web.Response(status=200)

        @routes.get("/history")
        async def history(request):
            try:
                max_items = int(request.query["max_items"]) if "max_items" in request.query else None
                offset = int(request.query.get("offset", -1))
            except ValueError:
                return web.Response(status=400)
            return web.json_response(server.queue.get_history(max_items=max_items, offset=offset))

        @routes.get("/history/{prompt_id}")
        async def history_item(request):
            return web.json_response(server.queue.get_history(request.match_info["prompt_id"]))

        @routes.post("/history")
        async def post_history(request):
            body = await _json_body(request)
            server.queue.delete_history(body.get("delete") or [], clear=bool(body.get("clear")))
            return web.Response(status=200)

        @routes.get("/jobs")
        async def jobs(request):
            query = request.query
            statuses = None
            if query.get("status"):
                statuses = [s.strip().lower() for s in query["status"].split(",") if s.strip()]
                invalid = [s for s in statuses if s not in STATUSES]
                if invalid:
                    return web.json_response({"error": f"Invalid status value(s): {', '.join(invalid)}. "
                                                       f"Valid values: {', '.join(STATUSES)}"}, status=400)
            sort_by, sort_order = query.get("sort_by", "created_at").lower(), query.get("sort_order", "desc").lower()
            if sort_by not in ("created_at", "execution_duration"):
                return web.json_response({"error": "sort_by must be 'created_at' or 'execution_duration'"}, status=400)
            if sort_order not in ("asc", "desc"):
                return web.json_response({"error": "sort_order must be 'asc' or 'desc'"}, status=400)
            try:
                limit = int(query["limit"]) if "limit" in query else None
                offset = max(int(query.get("offset", 0)), 0)
            except ValueError:
                return web.json_response({"error": "limit and offset must be integers"}, status=400)
            if limit is not None and limit <= 0:
                return web.json_response({"error": "limit must be a positive integer"}, status=400)
            page, total = select_jobs(server.queue.jobs(), statuses, query.get("workflow_id"), sort_by,
                                      sort_order, limit, offset)
            return web.json_response({"jobs": page, "pagination": {"offset": offset, "limit": limit, "total": total,
                                                                   "has_more": offset + len(page) < total}})

        @routes.get("/jobs/{job_id}")
        async def job(request):
            record = server.queue.job(request.match_info["job_id"])
            if record is None:
                return web.json_response({"error": "Job not found"}, status=404)
            return web.json_response(record)

        def cancel(job_id: str) -> bool:
            running = server.queue.running
            if running is not None and running.prompt_id == job_id:
                server.runtime.interrupt()
                return True
            return server.queue.delete([job_id]) > 0

        @routes.post("/jobs/{job_id}/cancel")
        async def cancel_job(request):
            if not cancel(request.match_info["job_id"]):
                return web.json_response({"error": "Job not found or already finished"}, status=404)
            return web.json_response({"cancelled": [request.match_info["job_id"]]})

        @routes.post("/jobs/cancel")
        async def cancel_jobs(request):
            ids = (await _json_body(request)).get("job_ids") or []
            return web.json_response({"cancelled": [i for i in ids if isinstance(i, str) and cancel(i)]})

        @routes.get("/users")
        async def users(request):
            return web.json_response({"storage": "server", "migrated": server.user_root.exists()})

        @routes.get("/settings")
        async def settings(request):
            return web.json_response(server.settings())

        @routes.get("/settings/{id}")
        async def setting(request):
            return web.json_response(server.settings().get(request.match_info["id"]))

        @routes.post("/settings")
        async def post_settings(request):
            body = await _json_body(request)
            server.save_settings({**server.settings(), **body})
            return web.Response(status=200)

        @routes.post("/settings/{id}")
        async def post_setting(request):
            try:
                value = await request.json()
            except json.JSONDecodeError:
                return web.Response(status=400)
            server.save_settings({**server.settings(), request.match_info["id"]: value})
            return web.Response(status=200)

        @routes.get("/userdata")
        async def list_userdata(request):
            directory = request.query.get("dir", "")
            if not directory:
                return web.Response(status=400, text="Directory not provided")
            path = server._user_path(directory)
            if path is None:
                return web.Response(status=403, text="Invalid directory")
            if not path.is_dir():
                return web.Response(status=404, text="Directory not found")
            recurse = request.query.get("recurse", "").lower() == "true"
            full_info = request.query.get("full_info", "").lower() == "true"
            split = request.query.get("split", "").lower() == "true"
            found = []
            for file in sorted(path.rglob("*") if recurse else path.glob("*")):
                if not file.is_file() or inside(path, file.relative_to(path).as_posix()) is None:
                    continue  # a symlink out of the folder is not listed
                relative = file.relative_to(path).as_posix()
                found.append(_file_info(file, path) if full_info else
                             [relative, *relative.split("/")] if split else relative)
            return web.json_response(found)

        @routes.get("/v2/userdata")
        async def list_userdata_v2(request):
            requested = request.query.get("path", "")
            target = server._user_path(requested or None)
            if target is None:
                return web.Response(status=400, text="Invalid path requested")
            if not target.exists():
                return web.Response(status=404, text="Requested path not found")
            if not target.is_dir():
                return web.Response(status=400, text="Requested path is not a directory")
            root = server.user_root.resolve()
            found = []
            for entry in target.rglob("*"):
                if inside(root, entry.relative_to(root).as_posix()) is None:
                    continue
                record = {"name": entry.name, "path": entry.relative_to(root).as_posix(),
                          "type": "directory" if entry.is_dir() else "file"}
                if entry.is_file():
                    stat = entry.stat()
                    record.update(size=stat.st_size, modified=stat.st_mtime)
                found.append(record)
            found.sort(key=lambda r: (r["type"] != "directory", r["name"].lower()))
            return web.json_response(found)

        def userdata_path(request, param: str = "file") -> Path | web.Response:
            name = request.match_info.get(param)
            if not name:
                return web.Response(status=400)
            path = server._user_path(name)
            if path is None or path == server.user_root.resolve():
                return web.Response(status=403)
            return path

        @routes.get("/userdata/{file}")
        async def get_userdata(request):
            path = userdata_path(request)
            if isinstance(path, web.Response):
                return path
            if not path.is_file():
                return web.Response(status=404)
            return web.FileResponse(path)

        @routes.post("/userdata/{file}")
        async def post_userdata(request):
            path = userdata_path(request)
            if isinstance(path, web.Response):
                return path
            if request.query.get("overwrite", "true") == "false" and path.exists():
                return web.Response(status=409, text="File already exists")
            try:
                write_bytes(path, await request.read())
            except OutputFileError:
                return web.Response(status=400, reason="Invalid filename")
            root = server.user_root.resolve()
            return web.json_response(_file_info(path, root) if request.query.get("full_info", "false").lower() == "true"
                                     else path.relative_to(root).as_posix())

        @routes.delete("/userdata/{file}")
        async def delete_userdata(request):
            path = userdata_path(request)
            if isinstance(path, web.Response):
                return path
            if not path.is_file():
                return web.Response(status=404)
            path.unlink()
            return web.Response(status=204)

        @routes.post("/userdata/{file}/move/{dest}")
        async def move_userdata(request):
            source, dest = userdata_path(request), userdata_path(request, "dest")
            for path in (source, dest):
                if isinstance(path, web.Response):
                    return path
            if not source.is_file():
                return web.Response(status=404)
            if request.query.get("overwrite", "true") == "false" and dest.exists():
                return web.Response(status=409, text="File already exists")
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, dest)
            root = server.user_root.resolve()
            return web.json_response(_file_info(dest, root) if request.query.get("full_info", "false").lower() == "true"
                                     else dest.relative_to(root).as_posix())

        @routes.get("/workflow_templates")
        async def workflow_templates(request):
            names = server._templates()
            return web.json_response({server.pack_name: names} if names else {})

        @routes.get("/workflow_templates/{pack}/{name}")
        async def workflow_template(request):
            stem, _, suffix = request.match_info["name"].rpartition(".")
            path = server.pack_folder / "workflows" / f"{stem}.{suffix}"
            if (request.match_info["pack"] != server.pack_name or stem not in server._templates()
                    or suffix not in ("json", "jpg", "webp") or not path.is_file()):
                return web.Response(status=404)
            return web.FileResponse(path)  # the workflow, or its thumbnail in the Templates browser

        @routes.get("/templates/{name}")
        async def core_templates(request):
            # ComfyUI serves its core templates from another package; here there are none, said in JSON.
            name = request.match_info["name"]
            if name == "index_logo.json":
                return web.json_response({})
            if re.fullmatch(r"index(\.[\w-]+)?\.json", name):
                return web.json_response([])
            return web.Response(status=404)

        @routes.get("/i18n")
        async def i18n(request):
            return web.json_response({})

        @routes.get("/global_subgraphs")
        async def global_subgraphs(request):
            return web.json_response({})

    def _internal_routes(self) -> web.RouteTableDef:
        routes = web.RouteTableDef()
        server = self

        @routes.get("/logs")
        async def logs(request):
            return web.json_response("")

        @routes.get("/logs/raw")
        async def raw_logs(request):
            return web.json_response({"entries": [], "size": {"cols": 80, "rows": 24}})

        @routes.patch("/logs/subscribe")
        async def subscribe(request):
            return web.Response(status=200)

        @routes.get("/folder_paths")
        async def folder_paths(request):
            found = {kind: [str(p) for p in server.runtime.folder_paths(kind)] for kind in MODEL_KINDS}
            found.update({"input": [str(server.folders.input)], "output": [str(server.folders.output)]})
            return web.json_response(found)

        @routes.get("/files/{directory_type}")
        async def files(request):
            folder = server._type_folder(request.match_info["directory_type"])
            if request.match_info["directory_type"] not in FILE_TYPES or folder is None:
                return web.json_response({"error": "Invalid directory type"}, status=400)
            entries = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
                             key=lambda p: -p.stat().st_mtime)
            return web.json_response([p.name for p in entries])

        return routes

    # --- answers shared by routes -----------------------------------------------------------------
    def features(self) -> dict:
        return {"supports_preview_metadata": False, "max_upload_size": self.max_upload}

    def settings(self) -> dict:
        path = self.user_root / SETTINGS_FILE
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            return {}

    def save_settings(self, settings: dict) -> None:
        write_bytes(self.user_root / SETTINGS_FILE, json.dumps(settings, indent=4).encode())

    def system_stats(self) -> dict:
        import torch
        device = self.runtime.default_device()
        total = free = 0
        try:
            pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
            total, free = pages * size, os.sysconf("SC_AVPHYS_PAGES") * size
        except (ValueError, OSError, AttributeError):
            pass
        vram_total = vram_free = 0
        if device.startswith("cuda") and torch.cuda.is_available():
            free_bytes, total_bytes = torch.cuda.mem_get_info()
            vram_total, vram_free = total_bytes, free_bytes
        from importlib.metadata import version
        return {"system": {"os": sys.platform, "ram_total": total, "ram_free": free,
                           "comfyui_version": f"stable-audio-toolkit {version('stable-audio-toolkit')}",
                           "required_frontend_version": frontend_version(self.web_root) or "",
                           "installed_templates_version": None, "required_templates_version": None,
                           "python_version": sys.version, "pytorch_version": torch.__version__,
                           "embedded_python": False, "argv": sys.argv},
                "devices": [{"name": platform.processor() or device if device == "cpu" else device,
                             "type": device.split(":")[0], "index": None, "vram_total": vram_total,
                             "vram_free": vram_free, "torch_vram_total": vram_total,
                             "torch_vram_free": vram_free}]}


async def _json_body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def is_loopback(host: str) -> bool:
    import ipaddress
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(folders: ServerFolders, listen: str = "127.0.0.1", port: int = 8188, token: str | None = None,
          device: str = "auto", max_upload_mb: float = 100) -> None:
    """Run the server until interrupted (Ctrl+C)."""
    server = PromptServer(folders, web_root=frontend_root(), token=token, device=device,
                          max_upload_mb=max_upload_mb)
    if not is_loopback(listen):
        print(f"warning: listening on {listen}: anyone who can reach this machine can run workflows and "
              f"read the output folder" + ("" if token else "; pass --token SECRET to require an access token"),
              file=sys.stderr)
    shown = f"[{listen}]" if ":" in listen else listen
    query = f"/?token={token}" if token else ""
    print(f"frontend {frontend_version(server.web_root)}; open http://{shown}:{port}{query}", file=sys.stderr)
    web.run_app(server.app, host=listen, port=port, access_log=None, print=None)
