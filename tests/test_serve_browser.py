"""`stable-audio-toolkit serve` in a real browser: headless Chromium (Debian's `chromium`) drives the
official ComfyUI frontend over the DevTools protocol against our server.

Runs where Chromium and the frontend package are installed. Other frontend versions are tested
by naming their `static` folders (or the folders they were `pip install --target`ed into) in
STABLE_AUDIO_FRONTENDS, separated by ':'. Screenshots land in test-artifacts/serve-frontend-<version>/.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

aiohttp = pytest.importorskip("aiohttp", reason="the server needs aiohttp (the ui/dev extras)")
from aiohttp import web  # noqa: E402

from stable_audio_host.server import (  # noqa: E402
    FrontendMissing, PromptServer, ServerFolders, frontend_root, frontend_version)
from helpers import ROOT, make_folders, write_clip  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "test-artifacts"
WAIT = 120  # seconds for one run of a tiny model in the browser on a loaded 2-core machine
UI_WORKFLOWS = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))  # API files live in workflows/api/


def _frontends() -> list[tuple[str, Path]]:
    """(version, static folder) of the installed frontend and of those named in STABLE_AUDIO_FRONTENDS."""
    folders = []
    try:
        folders.append(frontend_root())
    except FrontendMissing:
        pass
    for entry in filter(None, os.environ.get("STABLE_AUDIO_FRONTENDS", "").split(":")):
        folder = Path(entry)
        folders.append(folder / "comfyui_frontend_package" / "static"
                       if (folder / "comfyui_frontend_package").is_dir() else folder)
    return [(frontend_version(folder) or folder.as_posix(), folder) for folder in folders]


pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"),
              pytest.mark.skipif(not _frontends(), reason="needs the frontend package (pip install -e '.[ui]')")]

# Widget values that make each shipped workflow run in seconds on the test's tiny models.
TINY_WIDGETS = {
    "StableAudio_LoadCheckpoint": {"ckpt_name": "tiny.safetensors", "config": "tiny.json", "text_encoder": "tiny-t5"},
    "StableAudio_DPMSolverSampler": {"steps": 4},
    "StableAudio_EmptyLatentAudio": {"seconds": 1.0},
    "StableAudio_TimingCondition": {"seconds_total": 0.5},
}

SET_WIDGETS = """(values, sao) => { for (const node of window.app.graph._nodes) {
  const wanted = values[node.type] || {};
  for (const widget of node.widgets || []) {
    if (!(widget.name in wanted)) continue;
    if (!sao && ['StableAudio_LoadCheckpoint', 'StableAudio_EmptyLatentAudio'].includes(node.type)) continue;
    widget.value = wanted[widget.name];
  } } return true; }"""

OPEN_TEMPLATE = """async (name) => {
  const find = () => document.querySelector(`[data-testid="template-workflow-${name}"]`)
    || [...document.querySelectorAll('*')].find(e => e.children.length === 0 && e.textContent.trim() === name);
  if (!find()) await window.app.extensionManager.command.execute('Comfy.BrowseTemplates');
  for (let i = 0; i < 50 && !find(); i++) await new Promise(r => setTimeout(r, 100));
  const card = find();
  if (!card) return 'no card for ' + name;
  card.click();
  for (let i = 0; i < 50 && document.querySelector(`[data-testid="template-workflow-${name}"]`); i++)
    await new Promise(r => setTimeout(r, 100));
  await new Promise(r => setTimeout(r, 500));
  return 'opened';
}"""

DROP_FILE = """async (url, name) => {
  window.app.graph.clear();
  const blob = await (await fetch(url)).blob();
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], name, {type: 'audio/flac'}));
  const target = document.querySelector('#graph-canvas') || document.querySelector('canvas');
  for (const kind of ['dragover', 'drop'])
    target.dispatchEvent(new DragEvent(kind, {dataTransfer: transfer, bubbles: true, cancelable: true}));
  for (let i = 0; i < 50 && !window.app.graph._nodes.length; i++) await new Promise(r => setTimeout(r, 100));
  return window.app.graph._nodes.map(n => n.type);
}"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Page:
    """A page driven over the DevTools protocol: `call(method, **params)`, `js(expression)`."""

    def __init__(self, ws):
        self.ws, self.counter, self.waiting, self.events = ws, 0, {}, []

    async def read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if data.get("id") in self.waiting:
                self.waiting.pop(data["id"]).set_result(data)
            else:
                self.events.append(data)

    async def call(self, method: str, **params):
        self.counter += 1
        answer = asyncio.get_running_loop().create_future()
        self.waiting[self.counter] = answer
        await self.ws.send_json({"id": self.counter, "method": method, "params": params})
        result = await asyncio.wait_for(answer, WAIT)
        if "error" in result:
            raise RuntimeError(f"{method}: {result['error']}")
        return result["result"]

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shot = await self.call("Page.captureScreenshot", format="png",
                               clip={"x": 0, "y": 0, "width": 2200, "height": 1150, "scale": 0.65})
        path.write_bytes(base64.b64decode(shot["data"]))

    def console_errors(self) -> list[str]:
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                errors.append(json.dumps(params["exceptionDetails"])[:500])
            elif method == "Runtime.consoleAPICalled" and params["type"] == "error":
                errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"])[:500])
        return errors


def _serve_in_thread(server: PromptServer, port: int):
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(server.app)
    started = threading.Event()

    def main():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    started.wait(30)
    return lambda: (loop.call_soon_threadsafe(loop.stop), thread.join(30))


@pytest.mark.parametrize("version,static", _frontends(), ids=[v for v, _ in _frontends()])
def test_the_frontend_opens_runs_and_reopens_every_shipped_workflow(version, static, bundled_stand_in, tmp_path):
    data = tmp_path / "data"
    make_folders(data)
    write_clip(data / "input" / "clip.wav", 6.0)  # the clip length the shipped workflows' notes suggest
    server = PromptServer(ServerFolders(data / "models", data / "input", data / "output", data / "user"),
                          web_root=static, device="cpu", pack_folder=ROOT)
    port = _free_port()
    stop = _serve_in_thread(server, port)
    shots = ARTIFACTS / f"serve-frontend-{version}"
    shutil.rmtree(shots, ignore_errors=True)
    profile = tempfile.mkdtemp(prefix="chromium-")
    chromium = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "--window-size=2200,1150", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        asyncio.run(_drive(port, Path(profile), shots))
    finally:
        chromium.terminate()
        chromium.wait(30)
        stop()
        shutil.rmtree(profile, ignore_errors=True)


async def _drive(port: int, profile: Path, shots: Path) -> None:
    active = profile / "DevToolsActivePort"
    for _ in range(300):
        if active.exists() and len(active.read_text().split()) >= 2:
            break
        await asyncio.sleep(0.1)
    devtools = active.read_text().split()[0]
    async with aiohttp.ClientSession() as session:
        targets = await (await session.get(f"http://127.0.0.1:{devtools}/json/list")).json()
        address = next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]
        async with session.ws_connect(address, max_msg_size=0) as ws:
            page = Page(ws)
            reader = asyncio.ensure_future(page.read())
            for domain in ("Runtime", "Page"):
                await page.call(f"{domain}.enable")
            await page.call("Page.navigate", url=f"http://127.0.0.1:{port}/")
            for _ in range(WAIT * 2):
                try:
                    if await page.js("!!(window.app && window.app.graph && window.app.extensionManager)"):
                        break
                except RuntimeError:
                    pass
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)
            await page.screenshot(shots / "loaded.png")
            assert page.console_errors() == [], "the page logged errors while loading"

            for name in UI_WORKFLOWS:
                await _open_run_and_check(page, session, port, name, shots)
            assert page.console_errors() == []
            reader.cancel()


async def _open_run_and_check(page: Page, session, port: int, name: str, shots: Path) -> None:
    expected = sorted(n["type"] for n in json.loads((ROOT / "workflows" / f"{name}.json").read_text())["nodes"])
    assert await page.js(f"({OPEN_TEMPLATE})({json.dumps(name)})") == "opened"
    assert sorted(await page.js("window.app.graph._nodes.map(n => n.type)")) == expected, name

    await page.js(f"({SET_WIDGETS})({json.dumps(TINY_WIDGETS)}, {json.dumps(name.startswith('sao_'))})")
    before = await (await session.get(f"http://127.0.0.1:{port}/api/history")).json()
    await page.js("window.app.queuePrompt(0, 1)")
    for _ in range(WAIT * 2):
        history = await (await session.get(f"http://127.0.0.1:{port}/api/history")).json()
        new = [entry for key, entry in history.items() if key not in before]
        if new and new[0]["status"] is not None:
            break
        await asyncio.sleep(0.5)
    entry = new[0]
    assert entry["status"]["status_str"] == "success", (name, entry["status"]["messages"][-1][1].get("exception_message"))
    (audio,) = [item for ui in entry["outputs"].values() for item in ui.get("audio", [])]
    view = f"/api/view?filename={audio['filename']}&type=output&subfolder={audio['subfolder']}"
    assert (await session.get(f"http://127.0.0.1:{port}{view}")).status == 200

    # The player: the save node's audioUI widget holds an <audio> element playing the new file.
    for _ in range(20):
        player = await page.js("""(() => { const node = window.app.graph._nodes.find(n => n.type === 'StableAudio_SaveAudio');
            const widget = (node.widgets || []).find(w => w.name === 'audioUI');
            return widget && widget.element ? widget.element.tagName + ' ' + widget.element.src : null; })()""")
        if player and audio["filename"] in player:
            break
        await asyncio.sleep(0.25)
    assert player is not None and player.startswith("AUDIO ") and audio["filename"] in player, (name, player)
    await page.js("window.app.canvas.ds.scale = 0.8; window.app.canvas.ds.offset = [80, 60]; window.app.canvas.setDirty(true, true)")
    await asyncio.sleep(0.5)
    await page.screenshot(shots / f"{name}.png")
    thumbnail = await page.call("Page.captureScreenshot", format="jpeg", quality=70,
                                clip={"x": 60, "y": 60, "width": 2100, "height": 1050, "scale": 0.15})
    (shots / f"{name}.jpg").write_bytes(base64.b64decode(thumbnail["data"]))  # the Templates browser's picture

    # The saved FLAC carries its workflow: dropped on an empty canvas, the graph comes back.
    if audio["filename"].endswith(".flac"):
        reopened = await page.js(f"({DROP_FILE})({json.dumps(view)}, {json.dumps(audio['filename'])})")
        assert sorted(reopened) == expected, name
