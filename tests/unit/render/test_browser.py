"""Open rendered e-mails in headless Chromium: cards visible on desktop and phone.

Needs /usr/bin/chromium (the system browser; playwright's own download is not
used). Without it the test skips, unless NUDGE_REQUIRE_SERVICES=1 (CI), where
it fails.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nudge.render import Renderer, fixture_request

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE = os.environ.get("NUDGE_REQUIRE_SERVICES") == "1"
REPO = Path(__file__).resolve().parents[3]
DESKTOP, PHONE = 1200, 375


def _missing(reason: str) -> None:
    """Skip the module, or fail it where CI requires every service."""
    if REQUIRE:
        pytest.fail(f"NUDGE_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


if not CHROMIUM.exists():
    _missing(f"{CHROMIUM} not found; install the chromium package")
try:
    from playwright import sync_api
except ImportError:
    _missing("playwright is not installed (pip install -e '.[dev]')")


def png(size: int, rgb: tuple[int, int, int]) -> bytes:
    """Return a square PNG of one colour, standing in for product photos."""
    row = b"\x00" + bytes(rgb) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


PHOTO = png(516, (214, 200, 180))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--headless", "--disable-gpu"],
        )
        yield browser
        browser.close()


def card_boxes(browser: Any, html: str, width: int) -> list[dict[str, float]]:
    """Open an e-mail at a viewport width and return each visible card's box."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        # No network: every image request gets the stand-in photo.
        page.route(
            "**/*",
            lambda route: route.fulfill(
                status=200, content_type="image/png", body=PHOTO
            ),
        )
        page.set_content(html, wait_until="load")
        cards = page.locator(".nudge-card")
        boxes = []
        for n in range(cards.count()):
            card = cards.nth(n)
            assert card.is_visible(), f"card {n} hidden at {width}px"
            box = card.bounding_box()
            assert box is not None
            boxes.append(box)
        return boxes
    finally:
        page.close()


@pytest.mark.parametrize("products", [6, 5])
def test_product_cards_fit_desktop_and_phone(browser: Any, products: int) -> None:
    renderer = Renderer(REPO / "email_templates", signing_secret="s")
    html = renderer.render(fixture_request("winback", products=products)).html

    for width in (DESKTOP, PHONE):
        boxes = card_boxes(browser, html, width)
        assert len(boxes) == products
        for box in boxes:
            assert box["width"] > 200 and box["height"] > 200, box
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, box

        # Two products a row on a desktop, one a row on a phone.
        first, second = boxes[0], boxes[1]
        if width == DESKTOP:
            assert first["y"] == second["y"]
            assert second["x"] >= first["x"] + first["width"]
        else:
            assert second["y"] >= first["y"] + first["height"]
            assert first["width"] > 0.8 * PHONE
