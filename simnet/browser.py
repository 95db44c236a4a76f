"""Load a page in headless Chromium and report what a reader would meet: script errors, broken
images, and a screenshot. Used by the report's browser test and by hand::

    python -m simnet.browser simnet-out/report.html --screenshot first-screen.png

Chromium is driven over the DevTools protocol (its WebSocket, ``trio-websocket``): the browser
prints its DevTools address on stderr once it listens, the page is opened in a new target, and
the check waits for the page's ``load`` event — no fixed sleeps. Everything the page logs as an
error (uncaught exceptions, ``console.error``, failed loads) is collected while it loads.
``find_chromium()`` is ``None`` when no Chromium is installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from p2pgrid.errors import P2PGridError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
START_TIMEOUT_S = 60.0      # a safety net for a browser that never starts, not a measurement
LOAD_TIMEOUT_S = 120.0
PROFILE_REMOVE_TRIES = 50
PROFILE_REMOVE_PAUSE_S = 0.1
BROKEN_IMAGES_JS = ("JSON.stringify(Array.from(document.images).filter(function (i) {"
                    " return !i.complete || i.naturalWidth === 0; }).map(function (i) { return i.alt || i.src.slice(0, 80); }))")


class BrowserError(P2PGridError):
    """Chromium could not be started or did not answer as the DevTools protocol says."""


@dataclass
class PageCheck:
    errors: list[str] = field(default_factory=list)          # script errors, console errors, failed loads
    broken_images: list[str] = field(default_factory=list)   # alt text (or src) of images that did not decode
    images: int = 0
    screenshot: bytes = b""
    evaluated: list[Any] = field(default_factory=list)      # results of the extra expressions, in order


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


class _DevTools:
    """One WebSocket to the browser; commands on one page session (flattened target protocol)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.session = ""
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> dict[str, Any]:
        message_id = next(self.ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        await self.ws.send_message(json.dumps(message))
        while True:
            reply = json.loads(await self.ws.get_message())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    async def wait_for(self, method: str) -> dict[str, Any]:
        for event in self.events:
            if event["method"] == method:
                return event
        while True:
            event = json.loads(await self.ws.get_message())
            if "method" in event:
                self.events.append(event)
                if event["method"] == method:
                    return event


def _error_of(event: dict[str, Any]) -> str | None:
    method, params = event["method"], event.get("params", {})
    if method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        return f"uncaught: {details.get('exception', {}).get('description') or details.get('text')}"
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return "console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
    if method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        return f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip()
    return None


async def check_page(page: Path, *, chromium: str, width: int = 1366, height: int = 900,
                     evaluate: tuple[str, ...] = ()) -> PageCheck:
    """Open ``page`` (a local file) in headless ``chromium`` at ``width``×``height``, wait for its
    load event, then collect errors, broken images, the results of ``evaluate`` (JavaScript
    expressions whose value is returned) and a screenshot of the first screen."""
    profile = tempfile.mkdtemp(prefix="p2pgrid-chromium-")
    try:
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}",
                   f"--window-size={width},{height}", "--remote-debugging-port=0", "about:blank"]
        async with trio.open_nursery() as nursery:
            process = await nursery.start(partial(trio.run_process, command, check=False,
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            stderr = _Stderr()
            nursery.start_soon(stderr.drain, process.stderr)
            try:
                with trio.fail_after(START_TIMEOUT_S):
                    await stderr.listening.wait()
                if not stderr.address:
                    raise BrowserError(f"chromium exited before listening: {stderr.text[-500:]}")
                with trio.fail_after(LOAD_TIMEOUT_S):
                    return await _check(stderr.address, page.resolve().as_uri(), width, height, evaluate)
            except trio.TooSlowError:
                raise BrowserError(f"chromium did not answer within the safety limit ({command[0]})") from None
            finally:
                nursery.cancel_scope.cancel()    # stops chromium if Browser.close did not
    finally:
        with trio.CancelScope(shield=True):        # bounded: PROFILE_REMOVE_TRIES × PROFILE_REMOVE_PAUSE_S
            await _remove_profile(Path(profile))


async def _remove_profile(path: Path) -> None:
    """Chromium's helper processes can still write into the profile for a moment after the
    browser is stopped ("directory not empty" from a plain rmtree, seen in CI): try again until
    they are gone, bounded; whatever is left then is left (a temporary directory)."""
    for _ in range(PROFILE_REMOVE_TRIES):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            await trio.sleep(PROFILE_REMOVE_PAUSE_S)
    shutil.rmtree(path, ignore_errors=True)


class _Stderr:
    """Reads chromium's stderr to the end (a full pipe would block the browser) and notes the
    DevTools address it prints once it accepts connections."""

    def __init__(self) -> None:
        self.text = ""
        self.address = ""
        self.listening = trio.Event()

    async def drain(self, stream: Any) -> None:
        async for chunk in stream:
            self.text += chunk.decode(errors="replace")
            match = re.search(r"DevTools listening on (ws://\S+)", self.text)
            if match and not self.address:
                self.address = match.group(1)
                self.listening.set()
        self.listening.set()     # exited without listening: the caller reports the stderr


async def _check(address: str, url: str, width: int, height: int, evaluate: tuple[str, ...]) -> PageCheck:
    async with open_websocket_url(address, max_message_size=64 * 1024 * 1024) as ws:
        tools = _DevTools(ws)
        target = await tools.call("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = await tools.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                    session=False)
        tools.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            await tools.call(f"{domain}.enable")
        await tools.call("Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        await tools.call("Page.navigate", {"url": url})
        await tools.wait_for("Page.loadEventFired")
        result = PageCheck()
        broken = await tools.call("Runtime.evaluate", {"expression": BROKEN_IMAGES_JS, "returnByValue": True})
        result.broken_images = json.loads(broken["result"]["value"])
        count = await tools.call("Runtime.evaluate", {"expression": "document.images.length", "returnByValue": True})
        result.images = count["result"]["value"]
        for expression in evaluate:
            value = await tools.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
            if "exceptionDetails" in value:
                result.errors.append(f"evaluating {expression[:60]}: {value['exceptionDetails'].get('text')}")
            result.evaluated.append(value.get("result", {}).get("value"))
        shot = await tools.call("Page.captureScreenshot", {"format": "png"})
        result.screenshot = base64.b64decode(shot["data"])
        result.errors += [e for e in map(_error_of, tools.events) if e]
        try:
            await tools.call("Browser.close", session=False)
        except (BrowserError, ConnectionClosed):
            pass    # the browser may drop the socket before it answers: it is closing either way
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simnet.browser", description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path, help="write the first screen here (PNG)")
    parser.add_argument("--width", type=int, default=1366)
    parser.add_argument("--height", type=int, default=900)
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("no chromium on the PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    check = trio.run(lambda: check_page(args.page, chromium=chromium, width=args.width, height=args.height))
    if args.screenshot:
        args.screenshot.write_bytes(check.screenshot)
    print(f"{check.images} images, {len(check.broken_images)} broken, {len(check.errors)} errors")
    for line in check.broken_images + check.errors:
        print(f"  {line}")
    return 0 if not check.errors and not check.broken_images else 1


if __name__ == "__main__":
    sys.exit(main())
