"""A picture of an order's workflow in the Temporal UI, taken by headless Chromium (Debian's
`chromium`), for the README and for a test that checks the UI shows what we claim.

Chromium's one-shot `--screenshot` fires before the UI (a single-page app fetching the
workflow, then decoding its payloads through the codec server) has drawn anything, so this
drives Chromium over its DevTools protocol instead: open the page, wait until its text shows
every expected string, then take the picture and the rendered DOM.

    python -m oms_tools.devstack.screenshot <order_id> docs/

saves docs/temporal-ui-order.png (the timeline) and docs/temporal-ui-summary.png (the summary
and details), reading the dev stack's settings (OMS_* variables) for its UI and Temporal.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from oms_platform.settings import Settings

CHROMIUM_NAMES = ("chromium", "chromium-browser")
# Wide enough for the UI's header on one row; tall enough for a lifecycle's timeline.
WINDOW = (1440, 1500)
# How long a page may take to show what is expected (the UI polls, then decodes payloads).
PAGE_SECONDS = 60.0
# How long Chromium may take to open its DevTools port.
START_SECONDS = 30.0


# The text a reader sees, frames included: the UI renders summaries and details (Markdown)
# inside frames of their own.
PAGE_TEXT = """
[document.body ? document.body.innerText : '',
 ...Array.from(document.querySelectorAll('iframe')).map(frame => {
   try { return frame.contentDocument.body.innerText; } catch (e) { return frame.srcdoc || ''; }
 })].join('\\n')
"""


def chromium_binary() -> str | None:
    """Path of an installed Chromium, or None."""
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def workflow_url(ui: str, workflow_id: str, run_id: str, namespace: str = "default") -> str:
    """The Temporal UI's page of one workflow run (its event history)."""
    return (
        f"{ui.rstrip('/')}/namespaces/{quote(namespace, safe='')}/workflows/"
        f"{quote(workflow_id, safe='')}/{quote(run_id, safe='')}/history"
    )


@dataclass
class Page:
    """What the browser showed: the text a reader sees and the rendered DOM."""

    text: str
    dom: str


class ChromiumError(RuntimeError):
    """Chromium did not start, or the page never showed what was expected."""


async def capture(
    url: str, png: Path, expect: Sequence[str] = (), *, window: tuple[int, int] = WINDOW
) -> Page:
    """Open `url` in headless Chromium, wait (up to PAGE_SECONDS) until the page's text
    contains every string in `expect`, save a PNG of the window to `png` and return the
    page's text and DOM."""
    binary = chromium_binary()
    if binary is None:
        raise ChromiumError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="oms-chromium-") as profile:
        async with _browser(binary, Path(profile), window) as devtools:
            await devtools.call("Page.enable")
            await devtools.call("Page.navigate", url=url)
            shown = [""]
            try:
                async with asyncio.timeout(PAGE_SECONDS):
                    await _wait_for_text(devtools, expect, shown)
            except TimeoutError:
                missing = [want for want in expect if want not in shown[0]]
                raise ChromiumError(
                    f"the page never showed {missing}; it showed:\n{shown[0][:2000]}"
                ) from None
            # Let what is still arriving (decoded payloads, fonts) settle before the picture.
            await asyncio.sleep(1.5)
            text = await devtools.evaluate(PAGE_TEXT)
            dom = await devtools.evaluate("document.documentElement.outerHTML")
            shot = await devtools.call("Page.captureScreenshot", format="png")
    await asyncio.to_thread(_write, png, base64.b64decode(shot["data"]))
    return Page(text=text, dom=dom)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _wait_for_text(devtools: _DevTools, expect: Sequence[str], shown: list[str]) -> None:
    """Until the page's text has every string of `expect`; `shown[0]` is its latest text."""
    while True:
        shown[0] = await devtools.evaluate(PAGE_TEXT)
        if all(want in shown[0] for want in expect):
            return
        await asyncio.sleep(0.5)


class _DevTools:
    """One page's DevTools protocol session over a websocket."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        await self._socket.send_json({"id": message_id, "method": method, "params": params})
        while True:  # events arrive between answers; only this call's answer counts
            message = await self._socket.receive_json()
            if message.get("id") != message_id:
                continue
            if "error" in message:
                raise ChromiumError(f"{method}: {message['error']}")
            result: dict[str, Any] = message.get("result", {})
            return result

    async def evaluate(self, expression: str) -> str:
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return str(answer.get("result", {}).get("value", ""))


@contextlib.asynccontextmanager
async def _browser(binary: str, profile: Path, window: tuple[int, int]) -> AsyncIterator[_DevTools]:
    """Headless Chromium on a DevTools port of its choosing, and a session on its page."""
    args = [
        binary,
        "--headless",
        # Containers and CI run as root, where Chromium's sandbox cannot start.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        f"--window-size={window[0]},{window[1]}",
        "about:blank",
    ]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        async with asyncio.timeout(START_SECONDS):
            port = await _devtools_port(profile, process)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
                targets = await answer.json(content_type=None)
            page = next(t for t in targets if t.get("type") == "page")
            async with session.ws_connect(
                page["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024
            ) as socket:
                yield _DevTools(socket)
    except TimeoutError:
        raise ChromiumError("chromium opened no DevTools port") from None
    finally:
        if process.returncode is None:
            # Its renderers and helpers share the session it was started in: end them all.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


async def _devtools_port(profile: Path, process: asyncio.subprocess.Process) -> int:
    """The port Chromium chose, from the file it writes into its profile once listening."""
    marker = profile / "DevToolsActivePort"
    while True:
        if process.returncode is not None:
            raise ChromiumError(f"chromium exited with {process.returncode}")
        try:
            first = (await asyncio.to_thread(marker.read_text)).split("\n")[0].strip()
        except FileNotFoundError:
            first = ""
        if first:
            return int(first)
        await asyncio.sleep(0.1)


@dataclass
class View:
    """One tab of an order's workflow page, what it must show before the picture, its file."""

    tab: str
    expect: list[str]
    png: str


def order_views(summary: str) -> list[View]:
    """The pictures the README shows: the event history (each step, a local activity, with
    its summary; the timeline tab shows local activities by name only) and the user metadata
    tab (the start's summary and details)."""
    return [
        View("history", ["Local Activity", "authorize_payment", " and capture it"], ORDER_PNG),
        View("user-metadata", [summary, "Paid by"], SUMMARY_PNG),
    ]


ORDER_PNG = "temporal-ui-order.png"
SUMMARY_PNG = "temporal-ui-summary.png"


async def order_pages(settings: Settings, order_id: str, out: Path) -> dict[str, Page]:
    """Screenshot `order_id`'s workflow in the running dev stack's UI into `out`, one PNG per
    view; returns each view's page by tab."""
    from oms_platform import temporal  # the client needs the codec: imported only here

    client = await temporal.connect(settings)
    try:
        described = await client.get_workflow_handle(f"order:{order_id}").describe()
        summary = await described.static_summary() or ""
    finally:
        await temporal.close(client)
    ui = f"http://127.0.0.1:{settings.embedded_temporal_ui_port}"
    history = workflow_url(ui, described.id, described.run_id or "", settings.temporal_namespace)
    pages = {}
    for view in order_views(summary):
        url = history.removesuffix("/history") + f"/{view.tab}"
        # The workflow id (the page's title) and what the view is for must both be showing.
        expect = [described.id, *view.expect]
        pages[view.tab] = await capture(url, out / view.png, expect)
    return pages


def main(argv: Sequence[str] | None = None) -> int:
    """Screenshot an order's workflow pages in the running dev stack's Temporal UI."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("order_id")
    parser.add_argument("out", type=Path, nargs="?", default=Path("docs"))
    options = parser.parse_args(argv)
    pages = asyncio.run(order_pages(Settings.from_env(), options.order_id, options.out))
    for tab, page in pages.items():
        print(json.dumps({"tab": tab, "shows": page.text[-300:].strip()}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
