"""A headless Chromium driven through chromedriver's W3C WebDriver HTTP API (no Python dependency).

Debian's packages ``chromium`` and ``chromium-driver`` provide the browser and the driver
(``.ci/run`` installs them when they are missing). :func:`unavailable` says why they cannot be
used here, or returns None. :class:`Chromium` starts chromedriver on a free local port, opens one
browser session with a fresh profile folder, and offers what the book's checks need: open a page,
run a script in it, and save a full-page screenshot (the DevTools command
``Page.captureScreenshot``, through chromedriver's ``goog/cdp/execute``).
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

#: Flags for a headless browser on a CI machine: no sandbox (root in a container), no GPU, and
#: no network traffic of its own (updates, sync, QUIC probes).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,900"]
#: The browser itself (Debian's ``/usr/bin/chromium`` is a shell wrapper around it).
BROWSERS = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome")


def browser_binary() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name) if "/" not in name else (name if Path(name).is_file() else None)
        if found:
            return found
    return None


def unavailable() -> str | None:
    """Why headless Chromium cannot be used here (None when it can)."""
    missing = [what for what, found in (("chromium", browser_binary()), ("chromedriver", shutil.which("chromedriver")))
               if not found]
    if missing:
        return (f"{' and '.join(missing)} not found: install Debian's chromium and chromium-driver "
                "(apt-get install chromium chromium-driver; .ci/run does it when run as root)")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriverError(RuntimeError):
    """chromedriver answered a command with an error."""


class Chromium:
    """One headless browser session: ``with Chromium(profile_dir) as browser: browser.open(url)``."""

    def __init__(self, profile_dir: Path, timeout: float = 60.0):
        self.profile_dir, self.timeout = Path(profile_dir), timeout
        self.port = _free_port()
        self.driver_log = self.profile_dir.parent / f"{self.profile_dir.name}-chromedriver.log"
        self.process: subprocess.Popen | None = None
        self.session: str | None = None

    # --- the WebDriver protocol ----------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as err:
            answer = json.loads(err.read() or b"{}")
            value = answer.get("value", {})
            raise WebDriverError(f"{method} {path}: {value.get('error')}: {value.get('message', '')[:500]}") from None
        return answer.get("value")

    def _session_call(self, method: str, path: str, body: dict | None = None, timeout: float | None = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body, timeout)

    def __enter__(self) -> "Chromium":
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(["chromedriver", f"--port={self.port}", f"--log-path={self.driver_log}"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._call("GET", "/status", timeout=2).get("ready"):
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.__exit__()
                raise WebDriverError(f"chromedriver did not start (log: {self.driver_log})")
            time.sleep(0.2)
        options = {"binary": browser_binary(), "args": [*FLAGS, f"--user-data-dir={self.profile_dir}"]}
        capabilities = {"browserName": "chrome", "goog:chromeOptions": options,
                        "goog:loggingPrefs": {"browser": "ALL"}, "pageLoadStrategy": "normal"}
        try:
            self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})["sessionId"]
            self._session_call("POST", "/timeouts", {"pageLoad": int(self.timeout * 1000),
                                                     "script": int(self.timeout * 1000)})
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.session is not None:
            try:
                self._call("DELETE", f"/session/{self.session}", timeout=20)
            except (WebDriverError, OSError):
                pass
            self.session = None
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    # --- what the checks use -------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Navigate to ``url`` and wait for the page to load (its ``load`` event)."""
        self._session_call("POST", "/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body) in the page and return its value."""
        return self._session_call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def run_async(self, script: str, *args: Any) -> Any:
        """Run ``script``; it returns by calling its last argument (``arguments[arguments.length - 1]``)."""
        return self._session_call("POST", "/execute/async", {"script": script, "args": list(args)})

    def console(self) -> list[dict]:
        """The browser console's entries since the last call (``level``, ``message``)."""
        return self._session_call("POST", "/se/log", {"type": "browser"})

    def _cdp(self, command: str, params: dict) -> Any:
        """A DevTools protocol command, through chromedriver."""
        return self._session_call("POST", "/goog/cdp/execute", {"cmd": command, "params": params})

    def screenshot(self, path: Path, max_height: int = 30000) -> Path:
        """Save the whole page (not only the window; at most ``max_height`` pixels) as a PNG.

        The viewport is made as tall as the page for the capture, then restored: capturing
        "beyond the viewport" instead sometimes renders a page laid out for the previous one.
        """
        width, height = self.run("return [window.innerWidth, Math.max(document.documentElement.scrollHeight, "
                                 "document.body ? document.body.scrollHeight : 0)];")
        self._cdp("Emulation.setDeviceMetricsOverride", {"width": width, "height": max(1, min(height, max_height)),
                                                         "deviceScaleFactor": 1, "mobile": False})
        try:
            self.run_async("const done = arguments[arguments.length - 1];"
                           "requestAnimationFrame(() => requestAnimationFrame(() => done(null)));")
            shot = self._cdp("Page.captureScreenshot", {"format": "png"})
        finally:
            self._cdp("Emulation.clearDeviceMetricsOverride", {})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
