"""Check a ``reverie analyze`` report in a real browser and save a screenshot of it.

Needs Debian's chromium (``apt-get install -y chromium``); installs nothing itself.

1. Static checks of the file: no ``<script>``, no ``http(s)://`` reference in any ``src``/``href``, and every
   ``<img>`` a ``data:image/png;base64`` URI that decodes to a PNG Pillow can open.
2. In headless Chromium, on a copy of the page with one probe script appended (the report itself has none):
   every image must have decoded (``naturalWidth > 0``), and the browser's log (``--enable-logging=stderr``)
   must hold no console error and no failed load.
3. A screenshot (``--window-size`` wide and tall), cropped to ``--crop`` pixels of height, scaled to
   ``--width-out`` and saved as an optimised PNG, which must stay under ``--max-kb``.

Exit status 1 on any failure, with one line per problem.

    python benchmarks/report_screenshot.py RUN_DIR/analysis/report.html --out docs/report.png
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PROBE = ("<script>window.addEventListener('load', () => { const bad = [...document.images]"
         ".filter(i => !i.complete || i.naturalWidth === 0).length; document.title = "
         "'IMAGES ' + document.images.length + ' BROKEN ' + bad; });</script>")


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.refs, self.scripts = [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.imgs.append(attrs.get("src") or "")
        for key in ("src", "href"):
            if attrs.get(key):
                self.refs.append(attrs[key])


def static_problems(text: str) -> tuple[list[str], int]:
    """Problems found by reading the file, and the number of images."""
    from PIL import Image

    tags = _Tags()
    tags.feed(text)
    problems = []
    if tags.scripts:
        problems.append(f"the report has {tags.scripts} <script> element(s); it must have none")
    if re.search(r"https?://", text):
        problems.append("the report refers to http(s):// addresses; it must be readable offline")
    if not tags.imgs:
        problems.append("the report has no <img> at all")
    for i, src in enumerate(tags.imgs):
        head = "data:image/png;base64,"
        if not src.startswith(head):
            problems.append(f"image {i} is not an embedded PNG (src starts {src[:40]!r})")
            continue
        try:
            data = base64.b64decode(src[len(head):], validate=True)
            if not data.startswith(PNG_MAGIC):
                raise ValueError("no PNG signature")
            Image.open(io.BytesIO(data)).verify()
        except (binascii.Error, ValueError, OSError) as e:
            problems.append(f"image {i} does not decode to a PNG ({e})")
    return problems, len(tags.imgs)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    sys.exit("chromium is not installed; install Debian's package: apt-get install -y chromium")


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


BASE = ["--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--mute-audio",
        "--no-first-run", "--disable-extensions"]


def browser_problems(html_file: Path, images: int, timeout: float) -> list[str]:
    """Load a probed copy in Chromium: every image decoded, no console error, no failed load."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "probed.html"
        probed.write_text(html_file.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                          encoding="utf-8")
        # the page under test: the original file, for its console log
        log = _run([chromium(), *BASE, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                    "--dump-dom", html_file.resolve().as_uri()], timeout)
        for line in log.stderr.splitlines():
            if ("CONSOLE" in line and ("ERROR" in line or "Uncaught" in line)) or "net::ERR" in line \
                    or "Failed to load" in line:
                problems.append(f"browser log: {line.strip()[:200]}")
        dom = _run([chromium(), *BASE, "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()], timeout)
        m = re.search(r"<title>IMAGES (\d+) BROKEN (\d+)</title>", dom.stdout)
        if m is None:
            problems.append("the browser did not finish loading the page (probe gave no answer)")
        else:
            seen, broken = int(m.group(1)), int(m.group(2))
            if seen != images:
                problems.append(f"the browser saw {seen} images, the file has {images}")
            if broken:
                problems.append(f"{broken} of {seen} images did not decode in the browser")
    return problems


def screenshot(html_file: Path, out: Path, window: tuple[int, int], crop: int, width_out: int,
               timeout: float) -> int:
    """Screenshot, crop to ``crop`` px of height, scale to ``width_out`` px wide; returns the file's bytes."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "shot.png"
        _run([chromium(), *BASE, f"--window-size={window[0]},{window[1]}", f"--screenshot={raw}",
              "--virtual-time-budget=5000", html_file.resolve().as_uri()], timeout)
        if not raw.is_file():
            raise SystemExit("chromium wrote no screenshot")
        img = Image.open(raw).convert("RGB")
    img = img.crop((0, 0, img.width, min(crop, img.height)))
    if img.width > width_out:
        img = img.resize((width_out, round(img.height * width_out / img.width)), Image.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out.stat().st_size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", type=Path)
    p.add_argument("--out", type=Path, help="screenshot PNG to write (none when omitted)")
    p.add_argument("--window", default="1280,4000", help="browser window WIDTH,HEIGHT")
    p.add_argument("--crop", type=int, default=2600, help="keep this many pixels from the top")
    p.add_argument("--width-out", type=int, default=960, help="scale the screenshot to this width")
    p.add_argument("--max-kb", type=int, default=400)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    if not args.report.is_file():
        print(f"no report at {args.report}", file=sys.stderr)
        return 1
    problems, images = static_problems(args.report.read_text(encoding="utf-8"))
    problems += browser_problems(args.report, images, args.timeout)
    size = None
    if args.out is not None:
        width, height = (int(v) for v in args.window.split(","))
        size = screenshot(args.report, args.out, (width, height), args.crop, args.width_out, args.timeout)
        if size > args.max_kb * 1024:
            problems.append(f"the screenshot is {size / 1024:.0f} KB, over --max-kb {args.max_kb}")
    for line in problems:
        print(f"FAIL: {line}", file=sys.stderr)
    print(f"{args.report}: {images} images, {len(problems)} problem(s)"
          + (f"; screenshot {args.out} ({size / 1024:.0f} KB)" if size is not None else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
