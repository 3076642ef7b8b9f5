"""Decoding a 1024² photo: Pillow against the project's load path (libspng for PNG pixels).

Run with ``python scripts/decode_benchmark.py`` (writes ``results/decode.{json,md}``).

Per file, in interleaved rounds in one process (so every ratio compares numbers measured side by
side): **Pillow** (``Image.open(...).load()``, RGB already for these files: the baseline), **load_image**
(:func:`fakeface.data.images.load_image`, what every caller uses: header checks, limits,
orientation, RGB), **load_image, pyspng hidden** (the same function on its Pillow path, i.e. the
load path before libspng) and, for PNGs, **pyspng.load alone** (libspng's decode with nothing
around it). Files: the six 1024² FFHQ PNGs of ``../shared/data/seed-ffhq`` and, for contrast, the
first of them re-encoded as a quality-90 JPEG (Pillow decodes JPEGs either way). Before timing,
each file's load_image pixels are checked equal to Pillow's. Target (issue 24): 1024² PNG through
load_image in <= 25 ms, the median over the six photos.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from PIL import Image

import fakeface.data.images as images
from benchmarks.face_stage import cpu_ms_per_call
from benchmarks.measure import collect_environment, time_interleaved
from fakeface.utils.formatting import format_number, json_safe, markdown_table

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SEED_DIR = REPO.parent / "shared" / "data" / "seed-ffhq"
TARGET_MS = 25.0
PILLOW, LOAD, LOAD_PILLOW, SPNG = "Pillow", "load_image", "load_image, pyspng hidden", "pyspng.load alone"


@dataclass(frozen=True)
class DecodeBenchmarkConfig:
    seed_dir: str = str(DEFAULT_SEED_DIR)
    rounds: int = 9
    min_round_seconds: float = 0.1


def _files(seed_dir: Path) -> dict[str, bytes]:
    files = {path.name: path.read_bytes() for path in sorted(seed_dir.glob("*.png"))}
    if not files:
        raise SystemExit(f"no PNG photos in {seed_dir} (the seed-ffhq pack in ../shared/data)")
    first = next(iter(files))
    buffer = io.BytesIO()
    with Image.open(io.BytesIO(files[first])) as photo:
        photo.convert("RGB").save(buffer, format="JPEG", quality=90)
    files[f"{Path(first).stem}.jpg (q90)"] = buffer.getvalue()
    return files


def _pillow(data: bytes) -> Image.Image:
    # convert() of an RGB image would copy it, a cost of the call and not of decoding (~4 ms for a JPEG here)
    image = Image.open(io.BytesIO(data))
    image.load()
    return image if image.mode == "RGB" else image.convert("RGB")


def _pillow_path(data: bytes) -> Image.Image:
    saved, images.pyspng = images.pyspng, None
    try:
        return images.load_image(data).image
    finally:
        images.pyspng = saved


def _variants(data: bytes, is_png: bool) -> dict[str, Callable[[], Any]]:
    variants: dict[str, Callable[[], Any]] = {
        PILLOW: lambda: _pillow(data), LOAD: lambda: images.load_image(data).image,
        LOAD_PILLOW: lambda: _pillow_path(data),
    }
    if is_png and images.pyspng is not None:
        variants[SPNG] = lambda: images.pyspng.load(data, "RGB")
    return variants


def run_decode_benchmark(config: DecodeBenchmarkConfig) -> dict[str, Any]:
    environment = collect_environment()
    rows = []
    for name, data in _files(Path(config.seed_dir)).items():
        decoded = images.load_image(data)
        identical = bool(np.array_equal(np.asarray(decoded.image), np.asarray(_pillow(data))))
        if not identical:   # a speed-up with other pixels is no speed-up: stop before timing it
            raise SystemExit(f"{name}: load_image's pixels differ from Pillow's")
        variants = _variants(data, name.endswith(".png"))
        timings = time_interleaved(variants, rounds=config.rounds, min_round_seconds=config.min_round_seconds)
        base = timings[PILLOW].as_dict(1)
        for label, timing in timings.items():
            stats = timing.as_dict(1)
            rows.append({"file": name, "bytes": len(data), "size": f"{decoded.width}x{decoded.height}",
                         "variant": label, "decoder": decoded.decoder if label == LOAD else None,
                         "median_ms": stats["median_ms"], "p90_ms": stats["p90_ms"], "min_ms": stats["min_ms"],
                         "calls": stats["calls"], "ratio_to_pillow": stats["median_ms"] / base["median_ms"],
                         "cpu_ms": cpu_ms_per_call(variants[label], 5), "identical_pixels": identical})
    return json_safe({
        "setup": {"rounds": config.rounds, "min_round_seconds": config.min_round_seconds,
                  "pyspng": _version("pyspng"), "pillow": _version("pillow"),
                  "path": "fakeface.data.images.load_image(data).image"},
        "environment": environment, "load_average_end": list(os.getloadavg()),
        "rows": rows, "summary": _summary(rows),
    })


def _version(name: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _summary(rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Per variant, the median over the six PNGs of each photo's median (and p90, CPU ms)."""
    png = [r for r in rows if r["file"].endswith(".png")]
    summary: dict[str, Any] = {"variants": {}}
    for label in dict.fromkeys(r["variant"] for r in png):
        mine = [r for r in png if r["variant"] == label]
        summary["variants"][label] = {
            "median_ms": float(np.median([r["median_ms"] for r in mine])),
            "p90_ms": float(np.median([r["p90_ms"] for r in mine])),
            "cpu_ms": float(np.median([r["cpu_ms"] for r in mine])),
            "ratio_to_pillow": float(np.median([r["ratio_to_pillow"] for r in mine])), "photos": len(mine)}
    measured = summary["variants"][LOAD]["median_ms"]
    summary["target"] = {"what": "1024² FFHQ PNG through load_image, median over the six photos",
                         "goal_ms": TARGET_MS, "measured_ms": measured, "met": measured <= TARGET_MS}
    return summary


def render_decode(results: Mapping[str, Any], *, command: str | None = None) -> str:
    env, setup, summary = results["environment"], results["setup"], results["summary"]
    target = summary["target"]
    rows = [[r["file"], r["variant"], format_number(r["median_ms"], 1), format_number(r["p90_ms"], 1),
             format_number(r["min_ms"], 1), format_number(r["cpu_ms"], 1), f"{r['ratio_to_pillow']:.2f}x"]
            for r in results["rows"]]
    overview = [[label, format_number(v["median_ms"], 1), format_number(v["p90_ms"], 1), format_number(v["cpu_ms"], 1),
                 f"{v['ratio_to_pillow']:.2f}x"] for label, v in summary["variants"].items()]
    lines = [
        "# Decoding a 1024² photo: Pillow against load_image (libspng for PNG)", "",
        f"Command: `{command or 'python scripts/decode_benchmark.py'}`. {setup['rounds']} interleaved rounds; "
        f"pyspng {setup['pyspng']}, Pillow {setup['pillow']}. Every file's load_image pixels equal Pillow's "
        "(checked before timing).",
        f"CPU: {env['cpu']}, flags {', '.join(env['cpu_flags'])}; {env['cpus_available']} CPUs; load average "
        f"{', '.join(f'{v:.2f}' for v in env['load_average'])} at the start, "
        f"{', '.join(f'{v:.2f}' for v in results['load_average_end'])} at the end.", "",
        f"**Target** ({target['what']}): <= {target['goal_ms']:.0f} ms; measured {target['measured_ms']:.1f} ms: "
        f"**{'met' if target['met'] else 'missed'}**.", "",
        "Six FFHQ PNGs, median over the photos of each photo's median, p90 and CPU ms:", "",
        markdown_table(["variant", "median ms", "p90 ms", "CPU ms", "vs Pillow"], overview), "",
        markdown_table(["file", "variant", "median ms", "p90 ms", "min ms", "CPU ms", "vs Pillow"], rows), "",
        "Pillow: `Image.open(...).load()` (these files are RGB already). load_image: the project's one decoder "
        "(header checks, pixel limits, orientation, RGB), libspng decoding the PNG pixels. \"pyspng hidden\": the same function on its "
        "Pillow path (the load path before libspng; also what a machine without pyspng runs). CPU ms is process "
        "CPU time per call, which a busy machine inflates less than wall time. The JPEG is decoded by Pillow on "
        "every path. Most of load_image's time over pyspng.load alone is the copy into a Pillow image: in this "
        "loop each call's fresh buffers are mapped anew by the kernel (about 2000 page faults, ~5 ms).",
    ]
    return "\n".join(lines) + "\n"
