"""The HTML report in a real browser: Debian's Chromium, headless, driven over the
DevTools protocol, at a desktop width and a laptop's half-screen width. It must
render, every image must load, the console must stay clean, nothing may overflow
the width; the screenshots go to the test's temporary directory."""
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE_RECORDS = os.path.join(REPO, "report", "example", "records")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
WIDTHS = (1600, 900)   # a slide-sized desktop window; half a laptop screen


def _chromium() -> str:
    """Debian's chromium; installed here when missing and we may (root)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and installing it needs root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq",
                 "--no-install-recommends", "chromium"]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode:
            pytest.skip(f"chromium cannot be installed: {' '.join(cmd)}: "
                        f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    return shutil.which("chromium") or pytest.skip("chromium installed but not on PATH")


class DevTools:
    """The smallest DevTools-protocol client: commands by id, events kept."""

    def __init__(self, ws_url: str):
        import websocket
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e.get("method") == method:
                    return e
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def close(self):
        self.ws.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def report_html():
    """The committed example page: test_report_example proves it is what the code
    writes today from the committed records."""
    example = os.path.dirname(EXAMPLE_RECORDS)
    with open(os.path.join(example, "manifest.json")) as f:
        return os.path.join(example, "report.html"), json.load(f)


@pytest.mark.parametrize("width", WIDTHS)
def test_html_report_renders_in_chromium(report_html, tmp_path, width):
    pytest.importorskip("websocket", reason="websocket-client (test extra) is not installed")
    browser = _chromium()
    html_path, manifest = report_html
    port = _free_port()
    proc = subprocess.Popen([browser, *FLAGS, f"--window-size={width},1000",
                             f"--user-data-dir={tmp_path / 'profile'}",
                             f"--remote-debugging-port={port}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        targets = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    targets = [t for t in json.load(r) if t.get("type") == "page"]
                if targets:
                    break
            except OSError:
                time.sleep(0.2)
        assert targets, "chromium's DevTools endpoint did not come up"
        dt = DevTools(targets[0]["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            dt.call(f"{domain}.enable")
        dt.call("Page.navigate", url="file://" + html_path)
        dt.wait_event("Page.loadEventFired", timeout=60)
        state = dt.call("Runtime.evaluate", returnByValue=True, expression="""({
            title: document.title,
            images: Array.from(document.images).map(i => ({ok: i.complete && i.naturalWidth > 0,
                                                           w: i.naturalWidth, alt: i.alt})),
            tables: document.querySelectorAll('table').length,
            emulated: document.body.innerText.includes('EMULATED'),
            summary: (document.getElementById('summary') || {innerText: ''}).innerText,
            scrollWidth: document.documentElement.scrollWidth,
            innerWidth: window.innerWidth,
            height: document.body.scrollHeight})""")["result"]["value"]
        shot = dt.call("Page.captureScreenshot", format="png")
        import base64
        with open(tmp_path / f"report-{width}.png", "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        errors = [e for e in dt.events
                  if e.get("method") == "Runtime.exceptionThrown"
                  or (e.get("method") == "Runtime.consoleAPICalled"
                      and e["params"].get("type") in ("error", "assert"))
                  or (e.get("method") == "Log.entryAdded"
                      and e["params"]["entry"].get("level") == "error")]
        dt.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert errors == [], errors
    assert state["title"] == manifest["title"]
    assert len(state["images"]) == len(manifest["figures"]) >= 6
    assert all(i["ok"] for i in state["images"]), state["images"]
    assert all(i["w"] >= 1000 for i in state["images"])   # slide-sized, not a thumbnail
    assert state["tables"] == len(manifest["tables"])
    assert state["emulated"] and state["height"] > 2000
    # the summary box is there and says what the host is and which cells are oversubscribed
    assert f"{manifest['cpus']} CPUs" in state["summary"]
    if manifest["oversubscribed_vcpus"]:
        assert "oversubscribed" in state["summary"]
    # wide tables scroll inside the page at most: the page itself never gets wider
    assert state["scrollWidth"] <= state["innerWidth"], state
    assert os.path.getsize(tmp_path / f"report-{width}.png") > 20_000
