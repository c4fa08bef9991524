"""The demo page driven in a real headless Chromium (Debian's `chromium`, through Playwright).

Starts the app in this process on a free 127.0.0.1 port with the random tiny model, uploads a photo, runs panoptic,
referring (after a missing-prompt mistake), interactive with a click, with a dragged box and with a painted stroke,
and checks what a person would see: the result image with its legend, the readable error, the clicked point, the
dragged box and the stroke at the right original-image pixels in the downloaded JSON, and that neither the browser
nor the server contacted anything but 127.0.0.1. Saves full-page screenshots (drag.png, demo.png in the test's tmp
dir).

Not skipped when the browser is missing: it fails and says how to install it (`.ci/install-browser`).
"""

import contextlib
import re
import socket
import time
import urllib.parse
from pathlib import Path

import pytest
import skimage.data
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
RUN_TIMEOUT_MS = 60_000  # one tiny-model request on a loaded 2-core machine takes up to ~15 s


def _require_browser_stack():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/install-browser (installs Debian's chromium) to run the demo's "
                    "browser test.", pytrace=False)
    try:
        import gradio  # noqa: F401
        import playwright.sync_api  # noqa: F401
    except ImportError as error:
        pytest.fail(f"The demo's browser test needs Gradio and Playwright ({error}): pip install -e '.[demo,test]' "
                    "(never `playwright install`: the test uses /usr/bin/chromium).", pytrace=False)


class OutboundConnections:
    """Records every socket connection and name lookup this process makes to something other than loopback."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[str] = []
        original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex
        original_getaddrinfo = socket.getaddrinfo

        def note(address) -> None:
            if isinstance(address, tuple) and address and str(address[0]) not in LOOPBACK:
                self.attempts.append(f"connect {address}")

        def connect(sock, address):
            note(address)
            return original_connect(sock, address)

        def connect_ex(sock, address):
            note(address)
            return original_connect_ex(sock, address)

        def getaddrinfo(host, *args, **kwargs):
            if host not in LOOPBACK and host not in (None, "", b""):
                self.attempts.append(f"lookup {host!r}")
            return original_getaddrinfo(host, *args, **kwargs)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving_demo(loaded, monkeypatch: pytest.MonkeyPatch):
    """The demo on http://127.0.0.1:PORT/, and the recorder of the server process's own outbound connections."""
    outbound = OutboundConnections(monkeypatch)
    from xsam_hf.demo.app import build_app, launch

    app = build_app(loaded)
    port = _free_port()
    launch(app, "127.0.0.1", port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/", outbound
    finally:
        app.close()


def _download_href(page) -> str | None:
    link = page.locator("#download a")
    return link.first.get_attribute("href") if link.count() else None


def _run_and_read_json(page) -> dict:
    """Press Run, wait for a new downloadable JSON, fetch it as the person downloading it would."""
    before = _download_href(page)
    page.locator("#run").click()
    page.wait_for_function(
        "(before) => { const a = document.querySelector('#download a'); return a !== null && a.href !== before; }",
        arg=before, timeout=RUN_TIMEOUT_MS,
    )
    response = page.request.get(_download_href(page))
    assert response.ok, response.status
    return response.json()


def _result_image_size(page) -> tuple[int, int]:
    overlay = page.locator("#overlay img")
    overlay.wait_for(state="visible")
    page.wait_for_function("() => { const i = document.querySelector('#overlay img'); return i && i.complete "
                           "&& i.naturalWidth > 0; }")
    return tuple(overlay.evaluate("image => [image.naturalWidth, image.naturalHeight]"))


def _legend_labels(page) -> list[str]:
    return [item.inner_text().strip() for item in page.locator("#legend li").all()]


def test_every_path_in_a_real_browser(random_tiny, monkeypatch, tmp_path):
    _require_browser_stack()  # in the test, not a fixture: a missing browser is a FAILED test, not a setup error
    from playwright.sync_api import expect, sync_playwright

    photo = Image.fromarray(skimage.data.coffee())  # 600 x 400
    photo_path = tmp_path / "coffee.png"
    photo.save(photo_path)
    screenshot_path = tmp_path / "demo.png"

    with serving_demo(random_tiny, monkeypatch) as (url, server_outbound), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            page.on("websocket", lambda websocket: requested.append(websocket.url))
            page.set_default_timeout(30_000)
            # expect() has its own 5 s default; a first page load on a loaded 2-core machine can take longer
            expect.set_options(timeout=30_000)
            page.goto(url)
            expect(page.locator("#random-weights-notice")).to_contain_text("RANDOM weights")

            page.locator("#input-image input[type=file]").set_input_files(str(photo_path))
            page.locator("#input-image img").wait_for(state="visible")

            # Panoptic (the default task), threshold 0 so random weights still give segments to list.
            page.locator("#classes textarea, #classes input").first.fill("cup, saucer, table")
            page.locator("#stuff textarea, #stuff input").first.fill("table")
            threshold_box = page.locator("#threshold input[type=number]")
            threshold_box.fill("0")
            threshold_box.press("Enter")
            panoptic = _run_and_read_json(page)
            assert panoptic["task"] == "panoptic" and panoptic["image_size"] == [400, 600]
            assert panoptic["request"]["classes"] == ["cup", "saucer", "table"]
            assert panoptic["segments"], "threshold 0 must leave at least one segment"
            width, height = _result_image_size(page)
            assert width == 600 and height > 400  # the overlay plus its legend strip underneath
            labels = _legend_labels(page)
            assert len(labels) == len(panoptic["segments"])
            assert all(label.split()[0] in {"cup", "saucer", "table"} for label in labels), labels
            expect(page.locator("#status")).to_contain_text("Done: panoptic")

            # Referring: first the mistake (no expression) shows a readable message, not a traceback.
            page.get_by_label("Referring", exact=True).check()
            prompt_box = page.locator("#prompt textarea")
            prompt_box.wait_for(state="visible")
            page.locator("#run").click()
            expect(page.locator("#status")).to_contain_text("Cannot run: The referring task needs prompt")
            assert "Traceback" not in page.content()
            prompt_box.fill("the cup")
            referring = _run_and_read_json(page)
            assert referring["request"]["prompt"] == "the cup"
            assert [segment["label"] for segment in referring["segments"]] == ["the cup"]
            assert _legend_labels(page) and _legend_labels(page)[0].startswith("the cup")

            # Interactive: one click at a known on-screen position, mapped to original-image pixels.
            page.get_by_label("Interactive", exact=True).check()
            page.locator("#click-mode").wait_for(state="visible")
            shown = page.locator("#input-image img")
            box = shown.bounding_box()
            natural_width, natural_height = shown.evaluate("image => [image.naturalWidth, image.naturalHeight]")
            assert (natural_width, natural_height) == (600, 400)
            # The image is fitted into its box keeping its aspect ratio (contain), centred.
            scale = min(box["width"] / natural_width, box["height"] / natural_height)
            left = box["x"] + (box["width"] - natural_width * scale) / 2
            top = box["y"] + (box["height"] - natural_height * scale) / 2
            click_x, click_y = int(left + 0.72 * natural_width * scale), int(top + 0.31 * natural_height * scale)
            page.mouse.click(click_x, click_y)
            expected = ((click_x - left) / scale, (click_y - top) / scale)
            expect(page.locator("#clicks-summary")).to_contain_text("point (")
            interactive = _run_and_read_json(page)
            (point,) = interactive["request"]["points"]
            assert abs(point[0] - expected[0]) <= 1.0 and abs(point[1] - expected[1]) <= 1.0, (point, expected)
            assert interactive["request"]["prompts_on"] == "image"
            assert f"point ({point[0]:.0f}, {point[1]:.0f})" in page.locator("#clicks-summary").inner_text()
            width, height = _result_image_size(page)
            assert width == 600 and height >= 400

            # Interactive with a dragged box: press, move, release across a known region of the shown image; the box
            # lands in original-image pixels, and the drag adds no point (its trailing click is not a select).
            page.locator("#clear-prompts").click()
            expect(page.locator("#clicks-summary")).to_contain_text("No clicked prompts yet")
            box = shown.bounding_box()  # re-measured: the marked image replaced the shown one
            scale = min(box["width"] / natural_width, box["height"] / natural_height)
            left = box["x"] + (box["width"] - natural_width * scale) / 2
            top = box["y"] + (box["height"] - natural_height * scale) / 2
            start = (left + 0.20 * natural_width * scale, top + 0.25 * natural_height * scale)
            end = (left + 0.65 * natural_width * scale, top + 0.80 * natural_height * scale)
            page.mouse.move(*start)
            page.mouse.down()
            page.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=4)
            page.mouse.move(*end, steps=4)
            page.mouse.up()
            expected_box = [(start[0] - left) / scale, (start[1] - top) / scale, (end[0] - left) / scale,
                            (end[1] - top) / scale]
            expect(page.locator("#clicks-summary")).to_contain_text("box (")
            assert "point (" not in page.locator("#clicks-summary").inner_text()
            dragged = _run_and_read_json(page)
            assert dragged["request"]["points"] == [], dragged["request"]
            (dragged_box,) = dragged["request"]["boxes"]
            assert all(abs(got - want) <= 1.5 for got, want in zip(dragged_box, expected_box)), (dragged_box,
                                                                                                expected_box)
            page.screenshot(path=str(tmp_path / "drag.png"), full_page=True)
            # The two-click box still works beside the drag: Box mode, a click on each opposite corner.
            page.get_by_label("Box (two clicks: opposite corners)").check()
            # The second corner 50 ms after the first, as a quick hand does, while the first is still being handled
            # (its marker re-rendering): it must not be dropped.
            page.mouse.click(*end)
            page.wait_for_timeout(50)
            page.mouse.click(*start)
            expect(page.locator("#clicks-summary li")).to_have_count(2)  # the dragged box and the clicked one
            expect(page.locator("#clicks-summary")).not_to_contain_text("opposite corner")
            lines = page.locator("#clicks-summary li").all_inner_texts()
            dragged_shown, clicked_shown = ([float(n) for n in re.findall(r"-?\d+", line)] for line in lines)
            # The same region both ways (Gradio rounds a click to whole pixels: within 1 px).
            assert len(clicked_shown) == 4, lines
            assert all(abs(a - b) <= 1 for a, b in zip(dragged_shown, clicked_shown)), lines

            # "Clear visual prompts" right after a click clears that click too, even when the server is slow to
            # draw the click's marker (made slow here): the click must not land after the clear.
            import xsam_hf.demo.app as demo_app

            draw_now = demo_app.draw_click_markers

            def draw_slowly(*args, **kwargs):
                time.sleep(1.0)
                return draw_now(*args, **kwargs)

            monkeypatch.setattr(demo_app, "draw_click_markers", draw_slowly)
            page.get_by_label("Point", exact=True).check()
            page.mouse.click(*start)
            page.wait_for_timeout(150)  # a quick hand
            page.locator("#clear-prompts").click()
            page.wait_for_timeout(2000)  # the slow click has been handled by now, before or after the clear
            expect(page.locator("#clicks-summary")).to_contain_text("No clicked prompts yet")
            monkeypatch.setattr(demo_app, "draw_click_markers", draw_now)

            # Interactive with a painted stroke instead: the brush layer comes back as one scribble on the image.
            page.get_by_text("Paint scribbles or masks").click()
            canvas = page.locator("#painting canvas").first
            canvas.wait_for(state="visible")
            page.wait_for_timeout(500)  # the editor lays its background image out after becoming visible
            area = canvas.bounding_box()
            centre_x, centre_y = area["x"] + area["width"] / 2, area["y"] + area["height"] / 2
            page.mouse.move(centre_x - 60, centre_y - 10, steps=8)  # hover in first, as a hand would
            page.mouse.down()
            for step in range(1, 13):
                page.mouse.move(centre_x - 60 + 10 * step, centre_y - 10 + 2 * step)
            page.mouse.up()
            painted = _run_and_read_json(page)
            assert painted["request"]["points"] == [] and len(painted["request"]["scribbles"]) == 1
            xs, ys = zip(*painted["request"]["scribbles"][0])
            # The editor shows the whole image centred at some zoom z: the stroke, centred 2 css px below the canvas
            # centre, has its centre line about the image centre (300, 200 + 2 / z); its ends lose the brush radius.
            middle_x, middle_y = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
            assert abs(middle_x - 300) <= 8 and abs(middle_y - 203) <= 8, (middle_x, middle_y)
            assert max(xs) - min(xs) > 100, (min(xs), max(xs))

            page.screenshot(path=str(screenshot_path), full_page=True)
        finally:
            browser.close()

    off_machine = [
        address for address in requested
        if urllib.parse.urlsplit(address).scheme in ("http", "https", "ws", "wss")
        and urllib.parse.urlsplit(address).hostname not in LOOPBACK
    ]
    assert requested and not off_machine, f"the page requested outside 127.0.0.1: {off_machine}"
    assert not server_outbound.attempts, f"the demo server reached out: {server_outbound.attempts}"
    assert screenshot_path.stat().st_size > 10_000
    print(f"screenshot: {screenshot_path}")
