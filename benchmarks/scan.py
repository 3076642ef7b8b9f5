"""Scan throughput: one process with one thread against two processes with one thread each, same run.

    python scripts/scan_benchmark.py [--images 400] [--rounds 3] [--work-dir DIR]
    python scripts/scan_benchmark.py --source ../shared/data/faces-dev --faces --images 360 \
        --output results/scan_faces_dev

Each round scans the same folder twice, once with ``python -m
fakeface.scan.cli --threads 1`` and once under ``torchrun --standalone
--nproc_per_node 2`` (``--threads 1`` each), in an order that alternates
between rounds so a machine shared with other work slows both alike. The
folder is made of JPEG and PNG faces-sized images, or with ``--source`` is a
real folder (``--images``: every n-th of its files, linked, not copied);
``--faces`` scans with the release's copy that has the face stage. Each
process also reads and decodes ahead of scoring on a second thread
(``--prefetch``, the scan's default). images/s counts the scan itself (every
process starts after every model is loaded; see ``ScanSummary.scan_seconds``):
N images / the slowest process's scan time; each process's images, bytes and
seconds show how even the byte-balanced shards were. Per-image times are each
batch's wall time per image (decode + score + commit). Written to
``results/scan.json`` and ``results/scan.md`` (or ``--output``) with the
CPU's instruction sets and the load average before and after each run.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.measure import collect_environment, create_benchmark_images, prepare_trained_releases

TARGET_SPEEDUP = 1.8
ARCH = "mobilenetv2_100"


def make_scan_folder(folder: Path, count: int, size: int = 512) -> Path:
    """``count`` images (two thirds JPEG, one third PNG) in a few sub-folders, the same for every run."""
    folder.mkdir(parents=True, exist_ok=True)
    base = create_benchmark_images(size, min(count, 16))
    for i in range(count):
        fmt, ext = ("PNG", "png") if i % 3 == 0 else ("JPEG", "jpg")
        buffer = io.BytesIO()
        base[i % len(base)].rotate(i % 7).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        path = folder / f"d{i % 5}" / f"img{i:05d}.{ext}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(buffer.getvalue())
    return folder


def link_source_subset(source: Path, folder: Path, count: int | None) -> Path:
    """Every n-th file of ``source`` (sorted paths, ``count`` of them; all when None) linked into ``folder``."""
    files = sorted(p for p in source.rglob("*") if p.is_file())
    step = max(1, len(files) // count) if count else 1
    shutil.rmtree(folder, ignore_errors=True)
    for path in files[::step][:count]:
        link = folder / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path.resolve())
    return folder


def face_stage_release(release: str, work: Path) -> str:
    """A copy of ``release`` whose config asks for the face stage (its int8 graph still applies: same weights)."""
    from fakeface.faces import FaceCrop
    from fakeface.modeling.detector import load_detector, save_detector, set_face_crop

    folder = work / f"{Path(release).name}-faces"
    if not (folder / "config.json").is_file():
        shutil.copytree(release, folder, dirs_exist_ok=True)
        model = load_detector(folder)
        set_face_crop(model, FaceCrop())
        save_detector(model, folder)
    return os.fspath(folder)


def ensure_release(work: Path) -> str:
    """A trained MobileNetV2 release (benchmarks.inference's cached one), its int8 fast path re-exported when an
    older export left it unusable (it then loads here unless this CPU's int8 results differ from the reference)."""
    from fakeface.data.dataset import load_face_dataset
    from fakeface.evaluation.metrics import decode_split
    from fakeface.modeling.detector import load_detector
    from fakeface.modeling.fastpath import export_fast_path, load_fast_path

    models, (data_dir, _) = prepare_trained_releases(work, [ARCH])
    release = models[ARCH]
    loaded = load_fast_path(release)
    # Made by an older export: measure what a release ships now (its int8 graph, or its fp32 graph where int8
    # misses the budget). A graph re-exported here and still refused runs the scan in torch, as for a user.
    if loaded.detector is None:
        data = load_face_dataset(data_dir)
        calibration, _, _ = decode_split(data["validation"], max_images=64)
        holdout, labels, _ = decode_split(data["test"])
        export_fast_path(load_detector(release), release, calibration, holdout, labels)
    return release


def _run_one(processes: int, source: Path, release: str, out: Path, prefetch: int | None) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    scan = ["-m", "fakeface.scan.cli", os.fspath(source), "--model", release, "--output-dir", os.fspath(out),
            "--threads", "1", "--no-progress", *(["--prefetch", str(prefetch)] if prefetch is not None else [])]
    if processes == 1:
        cmd = [sys.executable, *scan]
    else:
        cmd = [os.fspath(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node",
               str(processes), *scan]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FAKEFACE_THREADS": "1"}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"scan with {processes} process(es) failed:\n{done.stderr[-3000:]}")
    records = [json.loads(p.read_text()) for p in sorted((out / "processes").glob("process-*.json"))]
    images = sum(r["scored_now"] for r in records)
    slowest = max(r["scan_seconds"] for r in records)
    per_image = [ms for r in records for ms in r["ms_per_image"]]
    return {"processes": processes, "images": images, "scan_seconds": slowest, "images_per_s": images / slowest,
            "wall_seconds_with_startup": wall, "median_ms_per_image": float(np.median(per_image)),
            "p90_ms_per_image": float(np.percentile(per_image, 90)), "runtime": records[0]["model"]["runtime"],
            "shards": [{"images": r["scored_now"], "bytes": r.get("bytes_read"), "scan_seconds": r["scan_seconds"],
                        "cpu_seconds": r.get("cpu_seconds"), "threads": r.get("threads")} for r in records],
            "cpu_ms_per_image": _cpu_ms_per_image(records, images),
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def _cpu_ms_per_image(records: list[dict[str, Any]], images: int) -> float | None:
    """CPU time the processes spent scanning (all their threads), per image: what contention would raise."""
    if any(r.get("cpu_seconds") is None for r in records) or not images:
        return None
    return 1000.0 * sum(r["cpu_seconds"] for r in records) / images


def run_scan_benchmark(work: Path, *, images: int = 400, rounds: int = 3, source: Path | None = None,
                       faces: bool = False, prefetch: int | None = None, release: str | None = None) -> dict[str, Any]:
    """``release``: scan with this release as it is (e.g. the panel ``make release`` builds), else train one."""
    environment = collect_environment()
    given = release is not None
    release = release or ensure_release(work)
    if faces and not given:
        release = face_stage_release(release, work)
    folder = (make_scan_folder(work / "scan-images", images) if source is None
              else link_source_subset(source, work / "scan-source", images))
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        for processes in ((1, 2) if r % 2 == 0 else (2, 1)):
            runs.append({"round": r, **_run_one(processes, folder, release, work / f"scan-out-{processes}", prefetch)})
    by = {p: [x["images_per_s"] for x in runs if x["processes"] == p] for p in (1, 2)}
    per_round = [b["images_per_s"] / a["images_per_s"] for a, b in
                 ((next(x for x in runs if x["round"] == r and x["processes"] == 1),
                   next(x for x in runs if x["round"] == r and x["processes"] == 2)) for r in range(rounds))]
    speedup = float(np.median(by[2]) / np.median(by[1]))
    environment["load_average_after"] = list(os.getloadavg())
    return {
        "setup": {"images": runs[0]["images"], "source": os.fspath(source) if source else None,
                  "image_size": None if source else 512,
                  "formats": _formats(folder) if source else "2/3 JPEG q90, 1/3 PNG",
                  "architecture": release if given else ARCH,
                  "faces": faces, "prefetch": "batch size (16)" if prefetch is None else prefetch,
                  "rounds": rounds, "threads_per_process": 1, "batch_size": 16,
                  "command": "python -m fakeface.scan.cli / torchrun --standalone --nproc_per_node 2 -m fakeface.scan.cli"},
        "environment": environment,
        "runs": runs,
        "summary": {"images_per_s_1x1": float(np.median(by[1])), "images_per_s_2x1": float(np.median(by[2])),
                    "speedup_median": speedup, "speedup_per_round": per_round, "target_speedup": TARGET_SPEEDUP,
                    "target_met": bool(speedup >= TARGET_SPEEDUP)},
    }


def _formats(folder: Path) -> str:
    counts: dict[str, int] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            kind = path.suffix.lower().lstrip(".") or "none"
            counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _setup_line(setup: dict[str, Any]) -> str:
    what = (f"{setup['images']} files of {setup['source']} ({setup['formats']}; every n-th file, linked)"
            if setup.get("source") else f"{setup['images']} images of {setup['image_size']} px ({setup['formats']})")
    faces = ", face stage on" if setup.get("faces") else ""
    ahead = f", read-ahead {setup['prefetch']}" if "prefetch" in setup else ""
    return (f"- Setup: {what}, {setup['architecture']} release{faces}, batch {setup['batch_size']}{ahead}, "
            f"{setup['threads_per_process']} thread per process, {setup['rounds']} rounds alternating the order.")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _shards(run: dict[str, Any]) -> str:
    """Each process's images / MB / scan seconds: how even the split by bytes came out."""
    shards = run.get("shards") or []
    return " · ".join(f"{s['images']} / {(s['bytes'] or 0) / 1e6:.0f} MB / {s['scan_seconds']:.1f} s" for s in shards)


def _reading(results: dict[str, Any]) -> list[str]:
    """How to read the ratio: CPU per image says whether the processes contend; a busy machine skews images/s."""
    env, s, runs = results["environment"], results["summary"], results["runs"]
    lines = []
    cpu = {n: [r["cpu_ms_per_image"] for r in runs if r["processes"] == n and r.get("cpu_ms_per_image")]
           for n in (1, 2)}
    if cpu[1] and cpu[2]:
        one, two = float(np.median(cpu[1])), float(np.median(cpu[2]))
        lines += [f"CPU time per image (every thread of every process): {one:.1f} ms with one process, {two:.1f} ms "
                  f"with two ({two / one:.2f}x). " + (
                      "Two processes cost about the same CPU per image as one: they do not get in each other's way."
                      if two / one < 1.15 else
                      "Each image costs more CPU when two processes run: they contend (caches, memory bandwidth, or "
                      "two vCPUs sharing one physical core), beyond any CPU time other work took."), ""]
        # The one-process baseline is not one core: its read-ahead thread decodes on the other core while the
        # main thread scores, so two processes on two cores can gain at most cores / (what one process used).
        singles = [r for r in runs if r["processes"] == 1 and r.get("cpu_ms_per_image") and r.get("scan_seconds")]
        if singles:
            used = float(np.median([r["cpu_ms_per_image"] * r["images"] / 1e3 / r["scan_seconds"] for r in singles]))
            ceiling = env["cpus_available"] / used * one / two
            lines += [f"One process used {used:.2f} cores (its read-ahead thread decodes the next files on the other "
                      f"core while the batch is scored), so {env['cpus_available']} processes on "
                      f"{env['cpus_available']} cores can reach at most about {ceiling:.2f}x at the CPU per image "
                      "they measured; that, not the scan's scaling, bounds the ratio.", ""]
    if max(r["load_before"] for r in runs) > env["cpus_available"]:
        lines += [f"The load average was above the {env['cpus_available']} cores during the runs: other work "
                  "shared the CPU, so images/s measures the share the scan was given as much as the scan, and the "
                  "ratio is not core scaling. Rerun on a quiet machine for that.", ""]
    elif not s["target_met"] and not lines:
        one = float(np.median([r["median_ms_per_image"] for r in runs if r["processes"] == 1]))
        two = float(np.median([r["median_ms_per_image"] for r in runs if r["processes"] == 2]))
        lines += [f"Per image, each of the two processes took {two:.1f} ms against {one:.1f} ms for one process "
                  f"alone ({two / one:.2f}x): the two processes slow each other down, so the second vCPU adds "
                  "far less than a core's worth of int8 throughput. Either other work still took CPU time (see "
                  "the load column) or, on a VM, the two vCPUs share one physical core's vector units; nothing "
                  "is shared between the processes but the barrier at start and end.", ""]
    return lines


def render_scan_markdown(results: dict[str, Any]) -> str:
    env, s, setup = results["environment"], results["summary"], results["setup"]
    lines = [
        "# Scan throughput: 1 process x 1 thread vs 2 processes x 1 thread",
        "",
        _setup_line(setup),
        f"- CPU: {env['cpu']}, {env['cpus_available']} cores available; flags: {', '.join(env['cpu_flags'])}.",
        f"- Load average: {env['load_average'][0]:.2f} before, {env['load_average_after'][0]:.2f} after "
        "(the machine is shared with other work; per-run values below).",
        "",
        "| round | processes | images | scan s | images/s | median ms/image | p90 ms/image | CPU ms/image | runtime "
        "| per process: images / MB / s | load before/after |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(f"| {r['round']} | {r['processes']} | {r['images']} | {r['scan_seconds']:.2f} | "
                     f"{r['images_per_s']:.1f} | {r['median_ms_per_image']:.1f} | {r['p90_ms_per_image']:.1f} | "
                     f"{_number(r.get('cpu_ms_per_image'))} | {r['runtime']} | {_shards(r)} | "
                     f"{r['load_before']:.1f} / {r['load_after']:.1f} |")
    verdict = "met" if s["target_met"] else "NOT met"
    lines += [
        "",
        f"**2 processes / 1 process: {s['speedup_median']:.2f}x** (median images/s {s['images_per_s_2x1']:.1f} vs "
        f"{s['images_per_s_1x1']:.1f}; per round {', '.join(f'{v:.2f}x' for v in s['speedup_per_round'])}). "
        f"Target >= {s['target_speedup']}x: {verdict}.",
        "",
        *_reading(results),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400, help="images made, or files taken from --source")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--source", default=None, help="a folder to scan (e.g. ../shared/data/faces-dev)")
    parser.add_argument("--faces", action="store_true", help="scan with the face stage (a copy of the release)")
    parser.add_argument("--prefetch", type=int, default=None, help="the scan's --prefetch (default: its own)")
    parser.add_argument("--release", default=None, help="scan with this release as it is (default: train one)")
    parser.add_argument("--work-dir", default=None, help="keep the release and images here (reused)")
    parser.add_argument("--output", default="results/scan", help="path prefix of the .json and .md")
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the existing .json")
    args = parser.parse_args(argv)
    if args.render_only:
        results = json.loads(Path(args.output + ".json").read_text())
        Path(args.output + ".md").write_text(render_scan_markdown(results))
        return 0
    with tempfile.TemporaryDirectory(prefix="fakeface-scan-bench-") as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = run_scan_benchmark(work, images=args.images, rounds=args.rounds, faces=args.faces,
                                     source=Path(args.source).resolve() if args.source else None,
                                     prefetch=args.prefetch, release=args.release)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output + ".json").write_text(json.dumps(results, indent=2) + "\n")
    Path(args.output + ".md").write_text(render_scan_markdown(results))
    print(render_scan_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
