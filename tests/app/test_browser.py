"""End to end in a real browser: start the app on a free local port, drive it with Playwright and
Debian's Chromium: open the preselected example, upload a first frame, drag a box, click a path, set
a scale, preview, generate, and check that a video appears and that the downloaded spec matches the
clicks.

Needs `playwright` (pip; not its browser download) and Chromium at /usr/bin/chromium
(`apt-get install -y chromium`); skipped otherwise. Generation uses the shipped tiny model when it is
there, else a tiny random pipeline built in code. Screenshots of each step go to tmp_path, or to
docs/screenshots/ with MAGICMOTION_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from shared_helpers import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
REPO_EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
W, H = 320, 240
FRAMES = 9


def need_browser():
    try:
        import gradio  # noqa: F401
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("the browser test needs gradio and playwright: pip install 'magicmotion[app]' "
                    "(no `playwright install`: it uses the system's Chromium)")
    if not CHROMIUM.exists():
        pytest.skip(f"the browser test needs Chromium at {CHROMIUM}: apt-get install -y chromium")


def first_frame() -> np.ndarray:
    """A 320x240 frame: a sky-to-grass gradient, a red ball on the left and a grey block on the right."""
    yy, xx = np.mgrid[:H, :W]
    sky = np.array([150, 190, 235], float) * (1 - yy[..., None] / H) + np.array([90, 140, 200], float) * yy[..., None] / H
    grass = np.array([70, 140, 60], float) + 10 * np.sin(xx[..., None] / 7.0)
    image = np.where(yy[..., None] < 150, sky, grass)
    ball = (xx - 80.5) ** 2 + (yy - 130.5) ** 2 <= 28 ** 2
    image[ball] = (215, 40, 35)
    image[150:200, 230:290] = (120, 120, 125)
    return np.clip(image, 0, 255).astype(np.uint8)


def generate_fn_for_test():
    """None (the app's own pipelines) when the shipped tiny model exists; else a tiny random
    MagicMotion Wan pipeline built in code, run through `magicmotion.pipelines.generate`."""
    from magicmotion.errors import ModelError
    from magicmotion.pipelines.generate import generate
    from magicmotion.pipelines.loading import tiny_model_paths

    try:
        tiny_model_paths("box")
        return None
    except ModelError:
        pass
    from magicmotion.models import WanTrajectoryControlNet
    from magicmotion.pipelines import MagicMotionWanPipeline, tiny_wan_components

    components = tiny_wan_components(seed=0)
    pipe = MagicMotionWanPipeline(**components,
                                  controlnet=WanTrajectoryControlNet.from_transformer(components["transformer"]))

    def generate_fn(image, prompt, trajectory, kind, **settings):
        return generate(pipe, image, prompt, trajectory, kind, **settings)

    return generate_fn


def examples_dir(tmp_path: Path) -> Path:
    """The repository's examples/ (what a newcomer sees first), or one made here when it has none."""
    from magicmotion.app.state import find_examples

    if REPO_EXAMPLES.is_dir() and find_examples([REPO_EXAMPLES]):
        return REPO_EXAMPLES
    root = tmp_path / "examples"
    root.mkdir()
    from PIL import Image

    Image.fromarray(first_frame()).save(root / "first_frame.png")
    (root / "prompt.txt").write_text("a red ball rolls to the right\n")
    return root


class Page:
    """The app's page, with the few actions the test needs."""

    def __init__(self, page, shots: Path):
        self.page, self.shots = page, shots

    def shot(self, name: str):
        self.page.screenshot(path=str(self.shots / name), full_page=True)

    def wait_summary(self, text: str, present: bool = True):
        js = "t => document.querySelector('#summary').innerText.includes(t)"
        if not present:
            js = "t => !document.querySelector('#summary').innerText.includes(t)"
        self.page.wait_for_function(js, arg=text, timeout=20_000)

    def errors_shown(self) -> list[str]:
        """The error marks in the page: red 'Error' badges on components, error toasts."""
        return [e.inner_text() for e in self.page.locator(".error").all() if e.is_visible()]

    def expect_message(self, text: str):
        """An error or warning shown in the page (a toast), then closed."""
        toast = self.page.get_by_text(text)
        toast.first.wait_for(timeout=20_000)
        self.page.locator(".toast-close").first.click()

    def click_image(self, x: float, y: float):
        """Click pixel (x, y) of the drawing. The image is centred in its element, scaled to fit it
        (object-fit: contain) or, with scale-down, never enlarged: its place on the screen follows."""
        img = self.page.locator("#canvas img")
        img.scroll_into_view_if_needed()  # a control clicked below it may have scrolled the page
        box = img.bounding_box()
        nw, nh, fit = img.evaluate("e => [e.naturalWidth, e.naturalHeight, getComputedStyle(e).objectFit]")
        scale = max(nw / box["width"], nh / box["height"], 1.0 if fit == "scale-down" else 0.0)
        ox, oy = (box["width"] - nw / scale) / 2, (box["height"] - nh / scale) / 2
        k = nw / W  # the drawing shows the frame enlarged k times
        self.page.mouse.click(box["x"] + ox + x * k / scale, box["y"] + oy + y * k / scale)


def test_draw_and_generate_in_the_browser(tmp_path):
    need_browser()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from magicmotion.app.drawing import DRAWING_KEY, mask_from_box
    from magicmotion.app.state import find_examples
    from magicmotion.app.ui import build_app, launch
    from magicmotion.io import read_video
    from magicmotion.trajectory import from_dict

    shots = DOCS_SCREENSHOTS if os.environ.get("MAGICMOTION_UPDATE_SCREENSHOTS") == "1" else tmp_path / "shots"
    shots.mkdir(parents=True, exist_ok=True)
    image = first_frame()
    Image.fromarray(image).save(tmp_path / "first_frame.png")
    Image.fromarray(np.zeros((40, 5000, 3), np.uint8)).save(tmp_path / "too_wide.png")

    examples_root = examples_dir(tmp_path)
    examples = find_examples([examples_root])
    demo = build_app(generate_fn=generate_fn_for_test(), output_dir=tmp_path / "out", examples_dirs=[examples_root],
                     settings={"num_frames": FRAMES, "num_inference_steps": 2, "width": 32, "height": 32})
    url = launch(demo, port=free_port(), prevent_thread_lock=True, quiet=True)
    assert url.startswith("http://127.0.0.1:")
    corners = [(44, 94), (118, 168)]  # a box around the ball
    path = [(170, 70), (250, 110)]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                viewport={"width": 1280, "height": 900}, accept_downloads=True)
            try:
                page = browser.new_page()
                app = Page(page, shots)
                page.goto(url)
                page.wait_for_selector("#first-frame")

                # the first example is picked already: Use example opens it, with no error anywhere
                first_example, (example_image, _) = next(iter(examples.items()))
                assert page.locator("#example input").input_value() == first_example
                page.click("#use-example")
                eh, ew = np.asarray(Image.open(example_image)).shape[:2]
                app.wait_summary(f"First frame {ew}x{eh}")
                page.wait_for_selector("#canvas img")
                page.wait_for_timeout(500)  # let the statuses settle
                assert app.errors_shown() == []
                app.shot("00-example.png")
                page.reload()
                page.wait_for_selector("#first-frame")

                # bad input first: nothing uploaded, then an oversized image
                page.click("#preview")
                app.expect_message("no first frame: upload an image or pick an example first")
                page.locator("#first-frame input[type=file]").set_input_files(str(tmp_path / "too_wide.png"))
                app.expect_message("5000x40 is too large")
                page.reload()  # a fresh session for the steps shown in the screenshots
                page.wait_for_selector("#first-frame")

                # 1. upload
                page.locator("#first-frame input[type=file]").set_input_files(str(tmp_path / "first_frame.png"))
                app.wait_summary("First frame 320x240")
                app.shot("01-upload.png")

                # 2. a box around the ball (two clicks), named
                app.click_image(*corners[0])
                app.wait_summary("waiting for the second box corner")
                app.click_image(*corners[1])
                app.wait_summary("mask ")
                page.fill("#object-name textarea, #object-name input", "ball")
                page.press("#object-name textarea, #object-name input", "Enter")
                app.wait_summary("object 1 (ball): mask")
                app.shot("02-box.png")

                # 3. a path, with the ball 1.5 times larger at its end
                page.locator("#mode").get_by_text("Path").click()
                app.click_image(*path[0])
                app.wait_summary("1: (")
                app.click_image(*path[1])
                app.wait_summary("2: (")
                page.fill("#scale-value input", "1.5")
                page.click("#set-scale")
                app.wait_summary(" x1.5")
                app.shot("03-path.png")

                # 4. preview
                page.click("#preview")
                page.wait_for_selector("#preview-image img", timeout=20_000)
                app.shot("04-preview.png")

                # 5. generate
                page.fill("#prompt textarea", "a red ball rolls to the right")
                page.click("#generate")
                try:
                    page.wait_for_selector("#video video", timeout=90_000)
                except Exception:
                    app.shot("failed-generate.png")
                    raise AssertionError(f"no video; the page says: {page.locator('.toast-message-text').all_inner_texts()}")
                page.wait_for_selector("#downloads a[download='video.mp4']", timeout=20_000)
                app.shot("05-generated.png")
                src = page.locator("#video video").get_attribute("src")
                assert src and src.split("?")[0].endswith(".mp4")

                downloads = {}
                for name in ("trajectory.json", "video.mp4"):
                    with page.expect_download() as info:
                        page.click(f"#downloads a[download='{name}']")
                    downloads[name] = tmp_path / name
                    info.value.save_as(downloads[name])
            finally:
                browser.close()
    finally:
        demo.close()

    # the spec matches the clicks (a pixel of rounding in the browser's coordinates at most)
    data = json.loads(downloads["trajectory.json"].read_text())
    drawing = data[DRAWING_KEY]
    assert drawing["kind"] == "box" and drawing["timing"] == "arc"
    assert drawing["settings"]["prompt"] == "a red ball rolls to the right"
    (obj,) = drawing["objects"]
    expected_box = [min(corners[0][0], corners[1][0]), min(corners[0][1], corners[1][1]),
                    max(corners[0][0], corners[1][0]), max(corners[0][1], corners[1][1])]
    np.testing.assert_allclose(obj["box"], expected_box, atol=1)  # measured 0.5: the browser's half pixels
    np.testing.assert_allclose(obj["path"], path, atol=1)
    assert obj["scales"] == {"2": 1.5}
    traj = from_dict(data)
    assert (traj.width, traj.height, traj.num_frames) == (W, H, FRAMES)
    assert traj.caption == "a red ball rolls to the right"
    track = traj.object(1)
    assert track.label == "ball"
    np.testing.assert_array_equal(track.mask(0), mask_from_box(image, np.array(obj["box"])))
    last = track.boxes[FRAMES - 1]
    np.testing.assert_allclose([(last[0] + last[2]) / 2, (last[1] + last[3]) / 2], obj["path"][-1])
    first = track.boxes[0]
    np.testing.assert_allclose(last[2] - last[0], 1.5 * (first[2] - first[0]))

    # the video is the one generated
    frames, _ = read_video(downloads["video.mp4"])
    assert frames.shape == (FRAMES, 32, 32, 3)
