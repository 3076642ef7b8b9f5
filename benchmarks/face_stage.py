"""Face-stage benchmark: how many faces it finds and what it costs, at several detection sizes.

Run with ``python scripts/face_stage_benchmark.py`` (writes ``results/face_stage.{json,md}``).

- Recall on the faces-dev pack's single-face images: every fake (each shows
  one person) and the aligned reals (ffhq-140k, celeba-hq, ffhq-1024), overall
  and per source, at each ``detect_size``. A photo counts as found when the
  face stage returns at least one face; "subject judgeable" also needs that
  face to be big enough to judge.
- Group photos (group-photos-ulfd): faces found and judgeable per size, since
  downscaling for detection is what loses small faces.
- Photos lying on their side: a sample of the single-face images turned by
  90 and 270 degrees; found, and turned back correctly.
- Time for a 1024² photo (a PNG and a JPEG with a face, and noise with none,
  decoded beforehand) on 2 threads, as median and p90 over interleaved rounds,
  beside decoding the same file (the baseline, in the same run) and as a
  ratio of it; and the process CPU time per call.

``detect_size`` is then chosen by a fixed rule (:func:`choose_detect_size`)
and the run says whether ``FaceCrop``'s default is that choice.
"""
from __future__ import annotations

import csv
import json
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from benchmarks.measure import collect_environment, time_interleaved
from fakeface.data.images import load_image
from fakeface.evaluation.metrics import json_safe
from fakeface.faces import FaceCrop, crop_faces
from fakeface.training.card import markdown_table
from fakeface.utils.fileio import write_atomic

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
SINGLE_FACE_REAL_SOURCES = ("ffhq-140k", "celeba-hq", "ffhq")   # aligned, one face each ("ffhq" = ffhq-1024)
GROUP_SOURCE = "group-photos-ulfd"
DEFAULT_DETECT_SIZES = (192, 256, 320, 416, 512, 640)
TARGETS = {"single_face_recall": 0.99, "photo_ms": 15.0}
DECODE_BASELINE = "decode only (baseline)"


@dataclass(frozen=True)
class FaceStageBenchmarkConfig:
    data_dir: str = str(DEFAULT_DATA)
    detect_sizes: tuple[int, ...] = DEFAULT_DETECT_SIZES
    threads: int = 2
    rounds: int = 7
    min_round_seconds: float = 0.3
    max_images: int | None = None     # cap on single-face images (a smoke run); None = all
    turned_sample: int = 40           # single-face images also checked turned by 90 and 270 degrees


# --------------------------------------------------------------------------- data

def read_manifest(data_dir: Path) -> list[dict[str, str]]:
    manifest = data_dir / "faces-dev" / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: the face-stage benchmark needs the faces-dev pack "
                                f"in ../shared/data next to the repository")
    with manifest.open(newline="") as handle:
        return list(csv.DictReader(handle))


def single_face_rows(rows: Iterable[Mapping[str, str]]) -> list[Mapping[str, str]]:
    return [r for r in rows if r["label"] == "fake" or r["source"] in SINGLE_FACE_REAL_SOURCES]


def _every_nth(items: Sequence[Any], count: int | None) -> list[Any]:
    """An even spread of ``count`` items (all when count is None or large), so every source is sampled."""
    if count is None or count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


# --------------------------------------------------------------------------- recall

def _scan_stats(image: Image.Image, crop: FaceCrop, threads: int) -> dict[str, Any]:
    scan = crop_faces(image, crop, threads=threads)
    first = scan.faces[0] if scan.faces else None
    return {
        "found": not scan.no_face,
        "subject_judgeable": first is not None and not first.face.too_small,
        "faces": len(scan.faces),
        "judgeable": len(scan.judgeable),
        "cut_by_border": first is not None and first.face.cut_by_border,
        "resampled": first is not None and first.rotation_deg % 90 != 0,
        "margin_used": first.margin_used if first else None,
        "turned_deg": scan.turned_deg,
    }


def _summarise(stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    n = len(stats)
    margins = [s["margin_used"] for s in stats if s["margin_used"] is not None]
    return {
        "images": n,
        "found": sum(s["found"] for s in stats),
        "recall": sum(s["found"] for s in stats) / n if n else None,
        "subject_judgeable": sum(s["subject_judgeable"] for s in stats) / n if n else None,
        "extra_faces": sum(max(0, s["faces"] - 1) for s in stats),
        "cut_by_border": sum(s["cut_by_border"] for s in stats),
        "resampled": sum(s["resampled"] for s in stats),
        "margin_used_median": float(np.median(margins)) if margins else None,
    }


def measure_single_face_recall(data_dir: Path, rows: Sequence[Mapping[str, str]], config: FaceStageBenchmarkConfig
                               ) -> dict[str, Any]:
    per_size: dict[int, list[dict]] = defaultdict(list)
    per_source: dict[int, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    missed: dict[int, list[str]] = defaultdict(list)
    crops = {size: FaceCrop(detect_size=size) for size in config.detect_sizes}
    start = time.perf_counter()
    for row in rows:
        image = load_image(data_dir / "faces-dev" / row["file"]).image
        for size, crop in crops.items():
            stats = _scan_stats(image, crop, config.threads)
            per_size[size].append(stats)
            per_source[size][row["source"]].append(stats)
            if not stats["found"]:
                missed[size].append(row["file"])
    return {
        "seconds": time.perf_counter() - start,
        "by_size": {size: _summarise(per_size[size]) for size in config.detect_sizes},
        "by_source": {size: {src: _summarise(v) for src, v in sorted(per_source[size].items())}
                      for size in config.detect_sizes},
        "missed": {size: missed[size] for size in config.detect_sizes},
    }


def measure_group_photos(data_dir: Path, rows: Sequence[Mapping[str, str]], config: FaceStageBenchmarkConfig
                         ) -> dict[int, dict[str, Any]]:
    images = [load_image(data_dir / "faces-dev" / r["file"]).image for r in rows if r["source"] == GROUP_SOURCE]
    out = {}
    for size in config.detect_sizes:
        stats = [_scan_stats(image, FaceCrop(detect_size=size), config.threads) for image in images]
        out[size] = {"photos": len(images), "faces": sum(s["faces"] for s in stats),
                     "judgeable": sum(s["judgeable"] for s in stats)}
    return out


def measure_turned(data_dir: Path, rows: Sequence[Mapping[str, str]], config: FaceStageBenchmarkConfig
                   ) -> dict[int, dict[str, Any]]:
    """Single-face photos turned on their side: found, and recognised as turned (so cut upright)."""
    sample = [load_image(data_dir / "faces-dev" / r["file"]).image for r in _every_nth(rows, config.turned_sample)]
    # a photo turned by ROTATE_90 (ccw) must be turned by 270 more to stand upright, and the other way round
    turns = ((Image.Transpose.ROTATE_90, 270), (Image.Transpose.ROTATE_270, 90))
    out = {}
    for size in config.detect_sizes:
        crop = FaceCrop(detect_size=size)
        found = upright = total = 0
        for image in sample:
            for turn, expected in turns:
                scan = crop_faces(image.transpose(turn), crop, threads=config.threads)
                total += 1
                found += not scan.no_face
                upright += scan.turned_deg == expected
        out[size] = {"photos": total, "found": found / total if total else None,
                     "turned_upright": upright / total if total else None}
    return out


# --------------------------------------------------------------------------- speed

def _speed_photos(data_dir: Path, rows: Sequence[Mapping[str, str]]) -> dict[str, Path]:
    """A 1024² PNG (FFHQ) and a 1024² JPEG (CelebA-HQ) from the pack."""
    photos = {}
    for kind, source, fmt in (("png", "ffhq", "PNG"), ("jpeg", "celeba-hq", "JPEG")):
        match = [r for r in rows if r["source"] == source and r["format"] == fmt and r["width"] == r["height"] == "1024"]
        if match:
            photos[kind] = data_dir / "faces-dev" / match[0]["file"]
    return photos


def _no_face_photo(size: int = 1024) -> bytes:
    """A 1024² PNG of seeded noise: no face, so the face stage also searches it turned three ways."""
    import io

    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def measure_speed(photos: Mapping[str, Path], config: FaceStageBenchmarkConfig) -> list[dict[str, Any]]:
    rows = []
    files = {kind: (path.name, path.read_bytes()) for kind, path in photos.items()}
    files["no face"] = ("noise 1024² PNG", _no_face_photo())
    for kind, (file_name, data) in files.items():
        image = load_image(data).image
        variants = {DECODE_BASELINE: lambda data=data: load_image(data)}
        for size in config.detect_sizes:
            crop = FaceCrop(detect_size=size)
            variants[f"face stage, detect_size {size}"] = (
                lambda crop=crop, image=image: crop_faces(image, crop, threads=config.threads))
        timings = time_interleaved(variants, rounds=config.rounds, min_round_seconds=config.min_round_seconds)
        base = timings[DECODE_BASELINE].as_dict(1)
        for name, timing in timings.items():
            stats = timing.as_dict(1)
            size = None if name == DECODE_BASELINE else int(name.rsplit(" ", 1)[1])
            rows.append({"photo": kind, "file": file_name, "variant": name, "detect_size": size,
                         "median_ms": stats["median_ms"], "p90_ms": stats["p90_ms"], "min_ms": stats["min_ms"],
                         "calls": stats["calls"], "ratio_to_decode": stats["median_ms"] / base["median_ms"],
                         "cpu_ms": cpu_ms_per_call(variants[name], config.rounds * 3)})
    return rows


def cpu_ms_per_call(fn: Any, calls: int) -> float:
    """Median process CPU time per call (all threads), in ms: what the call costs on a machine other jobs
    keep busy, where wall time also counts the waiting. With 2 threads it can exceed the idle wall time."""
    samples = []
    for _ in range(max(3, calls)):
        start = time.process_time()
        fn()
        samples.append(1000.0 * (time.process_time() - start))
    return float(np.median(samples))


# --------------------------------------------------------------------------- choice and run

def choose_detect_size(results: Mapping[str, Any]) -> dict[str, Any]:
    """The cheapest size (CPU time on the PNG) whose single-face recall is within 0.5 points of the best
    size's (and meets the target where any size does) and that finds >= 95% of the most group-photo faces.

    Faces found, not faces judgeable: the landmark size of a small face reads ~4% smaller at 320 than at
    640, so the judgeable count swings with the many group faces near ``min_face_px`` (a first run of
    this rule on judgeable faces picked 416: 39 judgeable against 32 at 320, with 144 and 145 found).
    CPU time, not wall time: the machine is shared, and wall medians swing with the load.
    """
    by_size = results["single_face"]["by_size"]
    best = max(v["recall"] for v in by_size.values())
    floor = max(best - 0.005, TARGETS["single_face_recall"]) if best >= TARGETS["single_face_recall"] else best - 0.005
    groups = results["group_photos"]
    most = max(v["faces"] for v in groups.values()) or 1
    cost = {r["detect_size"]: r["cpu_ms"] for r in results["speed"] if r["photo"] == "png" and r["detect_size"]}
    ok = [s for s in by_size if by_size[s]["recall"] >= floor and groups[s]["faces"] >= 0.95 * most]
    chosen = min(ok, key=lambda s: cost.get(s, float(s))) if ok else max(by_size, key=lambda s: by_size[s]["recall"])
    return {"chosen": chosen, "recall_floor": floor, "group_faces_floor": 0.95 * most,
            "faces_default": FaceCrop().detect_size, "default_is_chosen": FaceCrop().detect_size == chosen}


def evaluate_targets(results: Mapping[str, Any], size: int) -> list[dict[str, Any]]:
    recall = results["single_face"]["by_size"][size]["recall"]
    png = [r for r in results["speed"] if r["photo"] == "png" and r["detect_size"] == size]
    out = [{"target": f"single-face recall >= {TARGETS['single_face_recall']:.0%}", "measured": recall,
            "met": recall >= TARGETS["single_face_recall"]}]
    if png:
        out.append({"target": f"1024² photo <= {TARGETS['photo_ms']:.0f} ms on 2 threads (median)",
                    "measured": png[0]["median_ms"], "met": png[0]["median_ms"] <= TARGETS["photo_ms"]})
    return out


def run_face_stage_benchmark(config: FaceStageBenchmarkConfig) -> dict[str, Any]:
    data_dir = Path(config.data_dir)
    manifest = read_manifest(data_dir)
    single = single_face_rows(manifest)
    single = _every_nth(single, config.max_images)
    environment = collect_environment()
    results: dict[str, Any] = {"config": asdict(config), "environment": environment, "load_during": {}}
    results["speed"] = measure_speed(_speed_photos(data_dir, manifest), config)
    results["load_during"]["speed"] = os.getloadavg()[0]
    results["single_face"] = measure_single_face_recall(data_dir, single, config)
    results["load_during"]["single_face"] = os.getloadavg()[0]
    results["group_photos"] = measure_group_photos(data_dir, manifest, config)
    results["turned"] = measure_turned(data_dir, single, config)
    results["load_during"]["group_and_turned"] = os.getloadavg()[0]
    results["choice"] = choose_detect_size(results)
    default = results["choice"]["faces_default"]
    results["targets"] = evaluate_targets(results, default if default in config.detect_sizes else results["choice"]["chosen"])
    environment["load_average_after"] = list(os.getloadavg())
    return results


# --------------------------------------------------------------------------- report

def render_markdown(results: Mapping[str, Any], *, command: str | None = None) -> str:
    env, choice = results["environment"], results["choice"]
    default = choice["faces_default"]
    parts = ["# Face stage benchmark", "",
             "Generated by `scripts/face_stage_benchmark.py`" + (f" (`{command}`)" if command else "") + "; do not edit.",
             "", f"CPU: {env['cpu']} ({env['cpus_available']} available), flags {', '.join(env['cpu_flags'])}. "
             f"Load average before {env['load_average'][0]:.2f}, after {env['load_average_after'][0]:.2f} "
             f"(1 min; during: " + ", ".join(f"{k} {v:.2f}" for k, v in results["load_during"].items()) +
             "). The machine is shared with other jobs, so times are noisy; medians and p90 over interleaved rounds.",
             "", "## Targets (at FaceCrop's default detect_size " f"{default})", "",
             markdown_table(["target", "measured", "met"],
                            [[t["target"], t["measured"], "yes" if t["met"] else "**NO**"] for t in results["targets"]]),
             "", "## Choice of detect_size", "",
             f"Rule: the cheapest size (CPU ms on the PNG) whose single-face recall is at least "
             f"{choice['recall_floor']:.3f} (within 0.5 points of the best size, and the target where any size "
             f"meets it) and that finds at least {choice['group_faces_floor']:.0f} group-photo faces (95% of the "
             f"most). Faces found, not judgeable: a small face's size reads ~4% smaller at 320 than at 640, so "
             f"the judgeable count swings with the many group faces near min_face_px. "
             f"Chosen: **{choice['chosen']}**; FaceCrop's default is {default} "
             f"({'the same' if choice['default_is_chosen'] else '**differs**: update fakeface/faces/crop.py'}).", ""]
    parts += _size_table(results)
    parts += _speed_table(results)
    parts += _source_table(results, default)
    missed = results["single_face"]["missed"][default]
    parts += ["", f"Missed at {default} ({len(missed)}): " + (", ".join(f"`{m}`" for m in missed) or "none"), ""]
    return "\n".join(parts)


def _size_table(results: Mapping[str, Any]) -> list[str]:
    single, groups, turned = results["single_face"]["by_size"], results["group_photos"], results["turned"]
    rows = []
    for size in results["config"]["detect_sizes"]:
        s, g, t = single[size], groups[size], turned[size]
        rows.append([size, s["recall"], s["subject_judgeable"], s["extra_faces"], s["cut_by_border"],
                     s["resampled"], s["margin_used_median"], g["faces"], g["judgeable"], t["found"], t["turned_upright"]])
    n = next(iter(single.values()))["images"]
    photos = next(iter(groups.values()))["photos"]
    return [f"### Per detect_size ({n} single-face images, {photos} group photos, "
            f"{next(iter(turned.values()))['photos']} photos on their side)", "",
            markdown_table(["detect_size", "recall", "subject judgeable", "extra faces", "cut by border",
                            "eyes levelled (resampled)", "median margin used", "group faces", "group judgeable",
                            "sideways found", "sideways turned upright"], rows), ""]


def _speed_table(results: Mapping[str, Any]) -> list[str]:
    rows = [[r["photo"], r["file"], r["variant"], r["median_ms"], r["p90_ms"], r["min_ms"], r["calls"],
             r["ratio_to_decode"], r["cpu_ms"]] for r in results["speed"]]
    return ["## Time for a 1024² photo (decoded beforehand; 2 threads)", "",
            "The baseline is decoding the same file (`load_image`) in the same run; the ratio is face stage / decode "
            "(medians). `crop_faces` covers detection (downscale, RetinaFace, decoding, NMS) and cutting every crop. "
            "CPU ms is the process's CPU time per call, all threads, which a busy machine inflates far less than "
            "wall time.",
            "", markdown_table(["photo", "file", "variant", "median ms", "p90 ms", "min ms", "calls", "x decode",
                                "CPU ms"], rows), ""]


def _source_table(results: Mapping[str, Any], size: int) -> list[str]:
    rows = [[src, v["images"], v["found"], v["recall"], v["subject_judgeable"], v["cut_by_border"], v["resampled"],
             v["margin_used_median"]] for src, v in results["single_face"]["by_source"][size].items()]
    return [f"## Per source at detect_size {size}", "",
            markdown_table(["source", "images", "found", "recall", "subject judgeable", "cut by border",
                            "eyes levelled (resampled)", "median margin used"], rows)]


def write_results(results: Mapping[str, Any], json_path: Path, md_path: Path, *, command: str | None = None) -> None:
    write_atomic(json_path, (json.dumps(json_safe(results), indent=1) + "\n").encode())
    # the Markdown is rendered from the JSON as written, so re-rendering gives the same file
    write_atomic(md_path, render_markdown(_from_json(json_path), command=command).encode())


def _from_json(path: Path) -> dict[str, Any]:
    """Read results back with the int detect_size keys JSON turned into strings."""
    results = json.loads(path.read_text())
    for section in ("group_photos", "turned"):
        results[section] = {int(k): v for k, v in results[section].items()}
    for key in ("by_size", "by_source", "missed"):
        results["single_face"][key] = {int(k): v for k, v in results["single_face"][key].items()}
    return results


def remeasure_speed(json_path: Path, config: FaceStageBenchmarkConfig) -> dict[str, Any]:
    """Re-time the speed section (on a quieter moment) and keep the recall sections of an earlier run."""
    results = _from_json(json_path)
    config = replace(config, detect_sizes=tuple(results["config"]["detect_sizes"]))
    data_dir = Path(config.data_dir)
    environment = collect_environment()
    results["environment"] = environment
    results["config"] = {**results["config"], "threads": config.threads, "rounds": config.rounds}
    results["speed"] = measure_speed(_speed_photos(data_dir, read_manifest(data_dir)), config)
    results["load_during"] = {**results["load_during"], "speed": os.getloadavg()[0]}
    results["choice"] = choose_detect_size(results)
    default = results["choice"]["faces_default"]
    sizes = results["single_face"]["by_size"]
    results["targets"] = evaluate_targets(results, default if default in sizes else results["choice"]["chosen"])
    environment["load_average_after"] = list(os.getloadavg())
    return results


def render_from_json(json_path: Path, md_path: Path, *, command: str | None = None) -> None:
    write_atomic(md_path, render_markdown(_from_json(json_path), command=command).encode())


def quick_config(**overrides: Any) -> FaceStageBenchmarkConfig:
    """A smoke run: few images, two sizes, one short round."""
    return replace(FaceStageBenchmarkConfig(max_images=12, detect_sizes=(256, 320), rounds=1,
                                            min_round_seconds=0.0, turned_sample=2), **overrides)
