"""The monitor page in a real headless Chromium (Debian's `chromium`, driven by Playwright's Python API)
in front of the real server: sign-in, live previews while a job samples, takes playing at the shot's
rate, approve reflected by GetJob, cancel; a wrong token and another user see nothing.

`.ci/run` installs the browser when /usr/bin/chromium is missing; Playwright's own browser downloads are
never used."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from monitor_helpers import submit
from srv_helpers import TOKENS, wait_for

from protos.ttt_studio.v1 import ttt_studio_pb2 as pb
from server.client import TERMINAL, StudioClient

CHROMIUM = os.environ.get("TTT_STUDIO_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 60_000
LANDSCAPE = {"width": 1024, "height": 768}
PORTRAIT = {"width": 768, "height": 1024}
"""A tablet's screen either way round."""
TOUCH_PX = 44
"""The smallest touch target the platform guidelines allow (Apple's 44 pt; Material's 48 dp)."""
RATE_WINDOW_MS = 1500
"""How long the page's players are watched to measure the rate they play at."""

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium)"
)


PAGE_ERRORS: dict = {}
"""Each open page's uncaught script errors and console errors (none are expected)."""


def close(page) -> None:
    """Close the page's context; its script must have raised nothing."""
    errors = PAGE_ERRORS.pop(page)
    page.context.close()
    assert not [e for e in errors if "401" not in e], errors  # a refused sign-in logs its 401 response


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


def open_page(browser, monitor, token: str, viewport: dict[str, int] = LANDSCAPE):
    """A fresh browser context (no cookies) on the monitor, signed in with `token` through the form."""
    context = browser.new_context(viewport=viewport, has_touch=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    PAGE_ERRORS[page] = errors
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(monitor.url)
    page.fill("#token", token)
    page.click("#signin-form button[type=submit]")
    return page


def test_a_wrong_token_sees_nothing(browser, monitor, alice: StudioClient) -> None:
    submit(alice)
    page = open_page(browser, monitor, "ttt.tokmallory.not-a-real-secret")
    page.wait_for_selector("[data-testid=signin-error]:text('sign-in refused')")
    assert page.is_hidden("#app")
    assert page.locator("[data-job]").count() == 0
    assert page.context.cookies() == []
    close(page)


def test_previews_appear_while_sampling_takes_play_and_approval_reaches_get_job(
    browser, monitor, alice: StudioClient
) -> None:
    page = open_page(browser, monitor, TOKENS["alice"])
    page.wait_for_selector("[data-testid=who]:text('alice')")
    job_id = submit(alice, takes=2, steps=8)

    # a preview of this job on the page while the job is still sampling
    page.wait_for_selector(f"#live [data-job='{job_id}'] img[data-testid=preview]")
    assert alice.job(job_id).state not in TERMINAL
    src = page.get_attribute(f"#live [data-job='{job_id}'] img", "src")
    assert src.startswith("data:image/png;base64,")
    assert page.evaluate("(id) => window.monitorStats.firstPreview[id] > 0", job_id)

    # both takes play, in step, at the shot's rate
    assert alice.wait(job_id).state == pb.JOB_STATE_COMPLETED
    page.click(f"#queue [data-job='{job_id}']")
    players = page.locator("#takes canvas[data-testid=player]")
    wait_for(lambda: players.count() == 2, what="two players")
    page.wait_for_function("() => [...document.querySelectorAll('#takes canvas')].every(c => c.dataset.fps)")
    fps = float(players.first.get_attribute("data-fps"))
    assert fps == pytest.approx(alice.info().native_fps_num / alice.info().native_fps_den)
    shown = page.evaluate(
        """(ms) => new Promise((done) => {
            const canvases = [...document.querySelectorAll('#takes canvas')];
            // frames advanced, counted modulo the loop (a slow animation tick may skip frames)
            const advanced = canvases.map(() => 0), last = canvases.map((c) => Number(c.dataset.frame));
            const start = performance.now();
            let together = true;
            function look() {
              canvases.forEach((c, i) => {
                const frame = Number(c.dataset.frame), frames = Number(c.dataset.frames);
                advanced[i] += (frame - last[i] + frames) % frames;
                last[i] = frame;
              });
              together = together && new Set(canvases.map((c) => c.dataset.frame)).size === 1;
              if (performance.now() - start < ms) requestAnimationFrame(look);
              else done({advanced, together, seconds: (performance.now() - start) / 1000,
                         lit: canvases.map((c) => c.getContext('2d').getImageData(0, 0, c.width, c.height)
                                                     .data.some((v, k) => k % 4 !== 3 && v > 0))});
            }
            requestAnimationFrame(look);
        })""",
        RATE_WINDOW_MS,
    )
    for advanced in shown["advanced"]:
        assert advanced == pytest.approx(fps * shown["seconds"], abs=3), shown
    assert shown["together"] and all(shown["lit"]), shown

    # approve the second take on the page; GetJob (the API, another client) agrees
    page.click("#takes [data-take='1'] button[data-testid=approve]")
    page.wait_for_selector("#takes [data-take='1'] [data-testid=approved]:text('approved by alice')")
    job = alice.job(job_id)
    assert job.approved_take == 1 and job.takes[1].approved_by == "alice" and not job.takes[0].approved

    # another user, signed in beside, sees neither the job nor its takes
    bob = open_page(browser, monitor, TOKENS["bob"])
    bob.wait_for_selector("[data-testid=who]:text('bob')")
    bob.wait_for_selector("#queue-empty:not([hidden]), #queue [data-job]", state="attached")
    assert bob.locator(f"[data-job='{job_id}']").count() == 0
    close(bob)
    close(page)


def test_cancel_on_a_portrait_tablet_cancels_the_job(browser, monitor, alice: StudioClient) -> None:
    page = open_page(browser, monitor, TOKENS["alice"], PORTRAIT)
    job_id = submit(alice, steps=40)
    page.wait_for_selector(f"#queue [data-job='{job_id}'][data-state='sampling']")
    box = page.locator(f"#queue [data-job='{job_id}'] button[data-testid=cancel]").bounding_box()
    assert box["height"] >= TOUCH_PX and box["width"] >= TOUCH_PX, box
    assert (
        page.evaluate("document.documentElement.scrollWidth") <= PORTRAIT["width"]
    )  # one column, no sideways scroll
    page.click(f"#queue [data-job='{job_id}'] button[data-testid=cancel]")
    page.wait_for_selector(f"#queue [data-job='{job_id}'][data-state='cancelled']")
    assert alice.job(job_id).state == pb.JOB_STATE_CANCELLED
    close(page)
