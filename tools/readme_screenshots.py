"""Screenshots of the client side for the README, taken from a running imagegen API (the demo model draws best).

IMAGEGEN_MODEL=demo imagegen dev &
python tools/readme_screenshots.py --url http://127.0.0.1:8000

docs/images/cli.png: `imagegen generate` run in a real terminal (tmux), its last screen rendered by rich and
photographed by headless Chromium. docs/images/playground.png: the playground after a finished generation.
Needs tmux and chromium (Debian packages) and the playwright package.
"""

from __future__ import annotations

import argparse
import io
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright
from rich.console import Console
from rich.text import Text

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
PROMPT = "a red circle on a blue background"
COLUMNS, ROWS = 100, 12


def terminal_screen(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run `command` in a detached tmux terminal until it exits; its last screen, with colours (ANSI)."""
    session = f"imagegen-shot-{int(time.time())}"
    done = cwd / "done"
    shell = f"clear; {shlex.join(command)}; touch {shlex.quote(str(done))}; sleep 600"
    subprocess.run(
        [
            *("tmux", "new-session", "-d", "-s", session, "-x", str(COLUMNS), "-y", str(ROWS), "-c", str(cwd)),
            *(arg for name, value in env.items() for arg in ("-e", f"{name}={value}")),
            shell,
        ],
        check=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not done.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the command did not finish in 300s")
            time.sleep(0.2)
        captured = subprocess.run(
            ["tmux", "capture-pane", "-p", "-e", "-t", session], check=True, capture_output=True, text=True
        )
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    return captured.stdout.rstrip() + "\n"


def terminal_html(prompt_line: str, screen: str) -> str:
    """The terminal text as an HTML page (rich's exporter keeps the colours)."""
    console = Console(record=True, width=COLUMNS, force_terminal=True, color_system="truecolor", file=io.StringIO())
    console.print(Text(prompt_line, style="bold green"))
    console.print(Text.from_ansi(screen))
    return console.export_html(inline_styles=True, code_format=HTML_PAGE)


HTML_PAGE = """<!DOCTYPE html><html><head><meta charset="UTF-8"><style>
body {{ margin: 0; background: #1e1e2e; }}
pre {{ margin: 0; padding: 16px 20px; color: {foreground}; background: {background};
  font: 15px/1.35 "DejaVu Sans Mono", monospace; display: inline-block; }}
</style></head><body><pre id="terminal"><code>{code}</code></pre></body></html>"""


def shoot_cli(browser: Any, url: str, output: Path) -> None:
    """Run `imagegen generate` for real in a terminal and save a picture of its screen."""
    with tempfile.TemporaryDirectory() as folder:
        args = ["generate", PROMPT, "-o", "circle.png", "--width", "64", "--height", "64", "--steps", "20"]
        args += ["--guidance-scale", "4", "--seed", "7", "-n", "4"]
        command = [sys.executable, "-m", "launcher.main", *args]
        screen = terminal_screen(command, Path(folder), {"IMAGEGEN_URL": url})
    page = browser.new_page(device_scale_factor=1)
    page.set_content(terminal_html("$ imagegen " + shlex.join(args), screen))
    page.locator("#terminal").screenshot(path=str(output))
    page.close()


def shoot_playground(browser: Any, url: str, output: Path) -> None:
    """Generate from the playground page and save a picture of the finished page."""
    page = browser.new_page(viewport={"width": 1360, "height": 680})
    page.goto(url + "/")
    page.wait_for_selector("#sampler option", state="attached")
    page.fill("#prompt", PROMPT)
    page.fill("#negative_prompt", "")
    for field, value in {"width": "64", "height": "64", "steps": "20", "guidance_scale": "4", "seed": "7"}.items():
        page.fill(f"#{field}", value)
    page.fill("#num_images", "4")
    page.click("#submit")
    page.wait_for_selector('#status[data-state="succeeded"]', timeout=300_000)
    time.sleep(0.5)  # let the images paint
    page.screenshot(path=str(output))
    page.close()


def main() -> None:
    """Take both screenshots."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out-dir", type=Path, default=Path("docs/images"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        shoot_cli(browser, args.url, args.out_dir / "cli.png")
        shoot_playground(browser, args.url, args.out_dir / "playground.png")
        browser.close()
    print(args.out_dir / "cli.png")
    print(args.out_dir / "playground.png")


if __name__ == "__main__":
    main()
