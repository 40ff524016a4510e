"""Draw a grid of `demo` pictures through a running imagegen API (for the README).

imagegen dev &                      # serves the demo model
python tools/demo_grid.py --url http://127.0.0.1:8000 -o docs/images/demo-grid.png
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

ROWS = [
    ("red", "circle", "blue"),
    ("yellow", "square", "black"),
    ("white", "triangle", "green"),
    ("blue", "circle", "yellow"),
    ("green", "square", "white"),
    ("black", "triangle", "red"),
]
SEEDS = (1, 2, 3, 4)
CELL, LABEL = 64, 14


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/images/demo-grid.png"))
    parser.add_argument("--scale", type=int, default=2)
    args = parser.parse_args()

    size = CELL * args.scale
    grid = Image.new("RGB", (len(SEEDS) * size, len(ROWS) * (size + LABEL)), "white")
    pen = ImageDraw.Draw(grid)
    with httpx.Client(base_url=args.url, timeout=60) as client:
        jobs = []
        for foreground, shape, background in ROWS:
            prompt = f"a {foreground} {shape} on a {background} background"
            body = {
                "prompt": prompt,
                "model": "demo",
                "width": CELL,
                "height": CELL,
                "steps": 20,
                "guidance_scale": 4.0,
                "seed": SEEDS[0],
                "num_images": len(SEEDS),
            }
            response = client.post("/generate", json=body)
            response.raise_for_status()
            jobs.append((prompt, response.json()["id"]))
        for row, (prompt, job_id) in enumerate(jobs):
            job = client.get(f"/jobs/{job_id}").json()
            while job["status"] in ("queued", "running"):
                time.sleep(0.2)
                job = client.get(f"/jobs/{job_id}").json()
            top = row * (size + LABEL)
            pen.text((4, top + 1), f'"{prompt}"  seeds {SEEDS[0]}..{SEEDS[-1]}', fill="black")
            for column, url in enumerate(job["images"]):
                picture = Image.open(io.BytesIO(client.get(url).content)).convert("RGB")
                grid.paste(picture.resize((size, size), Image.NEAREST), (column * size, top + LABEL))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
