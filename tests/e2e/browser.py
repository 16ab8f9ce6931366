"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol: open a page and
report what a person would notice — console errors, uncaught exceptions, failed requests, each
<audio>'s decoded duration and each <img>'s decoded size."""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

from websockets.sync.client import connect

# Resolves once every <audio> has metadata (or failed) and every <img> decoded (or failed).
PAGE_CHECK_JS = """
(async () => {
  const audio = await Promise.all([...document.querySelectorAll('audio')].map(a => new Promise(resolve => {
    const done = () => resolve({src: a.currentSrc || a.src, duration: a.duration, error: a.error ? a.error.code : null});
    if (a.readyState >= 1 || a.error) return done();
    a.addEventListener('loadedmetadata', done, {once: true});
    a.addEventListener('error', done, {once: true});
    setTimeout(done, 20000);
  })));
  const images = await Promise.all([...document.images].map(i =>
    i.decode().then(() => ({src: i.src, width: i.naturalWidth}), () => ({src: i.src, width: 0}))));
  return JSON.stringify({audio, images, title: document.title});
})()
"""


@dataclass
class PageReport:
    title: str
    audio: list[dict]
    images: list[dict]
    console_errors: list[str] = field(default_factory=list)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _Session:
    def __init__(self, ws_url: str):
        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def call(self, method: str, timeout_s: float = 60, **params) -> dict:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.time())))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)
        raise TimeoutError(f"DevTools call {method} got no answer in {timeout_s} s")

    def navigate(self, url: str, deadline: float) -> None:
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        self.call("Page.navigate", url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.time() > deadline:
                raise TimeoutError(f"{url} did not finish loading")
            self.drain(0.2)

    def evaluate(self, expression: str, timeout_s: float = 60):
        """The value of a JavaScript expression (a promise is awaited); a thrown error raises."""
        res = self.call("Runtime.evaluate", timeout_s=timeout_s, expression=expression, awaitPromise=True,
                        returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"page script failed: {res['exceptionDetails'].get('exception', {}).get('description')}")
        return res["result"].get("value")

    def errors(self) -> list[str]:
        return _errors(self.events)

    def drain(self, seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            try:
                self.events.append(json.loads(self.ws.recv(timeout=max(0.05, end - time.time()))))
            except TimeoutError:
                break


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            out.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"{p['entry']['source']}: {p['entry']['text']} {p['entry'].get('url', '')}".strip())
    return out


@contextlib.contextmanager
def open_page(url: str, timeout_s: float = 90, downloads: str | None = None) -> Iterator["_Session"]:
    """A fresh headless Chromium on `url`, loaded; `downloads`: the folder a download lands in."""
    exe = chromium_path()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (make setup installs Debian's chromium)")
    profile = tempfile.mkdtemp(prefix="chromium-")
    proc = subprocess.Popen([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-dev-shm-usage", "--mute-audio", "--remote-debugging-port=0",
                             "--remote-debugging-address=127.0.0.1", "--window-size=1400,1000",
                             f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + timeout_s
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"chromium did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        s = _Session(page["webSocketDebuggerUrl"])
        for domain in ("Runtime", "Log", "Page"):
            s.call(f"{domain}.enable")
        if downloads:
            s.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=downloads, eventsEnabled=True)
        s.navigate(url, deadline)
        yield s
        s.ws.close()
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def check_page(url: str, timeout_s: float = 90) -> PageReport:
    """Load `url` in a fresh headless Chromium and wait for its media; raise if Chromium is missing."""
    with open_page(url, timeout_s) as s:
        found = json.loads(s.evaluate(PAGE_CHECK_JS, timeout_s))
        s.drain(0.5)  # late console messages
        return PageReport(found["title"], found["audio"], found["images"], _errors(s.events))
