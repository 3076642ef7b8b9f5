"""Build the face dataset (and optionally publish it to the Hub).

    fakeface-build-dataset --real-dir DIR [--attributes CSV] --fake-dir DIR [--fake-dir DIR ...] \\
        [--synthetic N] [--twins taef2,esrgan] --output-dir DIR [--push-to-hub ORG/NAME [--private]] [--seed S]

The token for --push-to-hub comes from HF_TOKEN or the login cache, never from
the command line. See docs/dataset.md.
"""
from __future__ import annotations

import argparse
import logging
import sys

from fakeface.data.dataset import build_face_dataset, format_build_summary, push_face_dataset
from fakeface.data.sources import DEFAULT_REAL_SOURCE
from fakeface.data.split import DEFAULT_NEAR_DUPLICATE_DISTANCE, DEFAULT_SPLIT_FRACTIONS
from fakeface.data.twins import DEFAULT_TWIN_CACHE, TWIN_MAKERS, TwinMakerUnavailable, make_twin_folder


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("sources")
    src.add_argument("--real-dir", action="append", default=[], metavar="DIR",
                     help="folder of real face images (FFHQ layout: 00000.png ...); repeatable")
    src.add_argument("--attributes", metavar="CSV",
                     help="attribute table keyed by file name (FFHQ shape: Name, FacialExp, Glasses, Gender, Race)")
    src.add_argument("--real-source", default=DEFAULT_REAL_SOURCE, metavar="NAME",
                     help=f"generator column value for the real images (default {DEFAULT_REAL_SOURCE})")
    src.add_argument("--fake-dir", action="append", default=[], metavar="DIR",
                     help="folder written by the face generator (with manifest.jsonl) or a plain folder of fakes; "
                          "repeatable")
    src.add_argument("--fake-generator", metavar="NAME",
                     help="generator of fake folders without a manifest (e.g. dall-e-2)")
    src.add_argument("--synthetic", type=int, default=0, metavar="N",
                     help="add N images from the built-in offline synthetic source (half real, half fake)")
    src.add_argument("--synthetic-size", type=int, default=256, metavar="PX",
                     help="typical side of synthetic images (they vary from 0.875x to 1.25x this)")
    src.add_argument("--twins", metavar="MAKERS", default="",
                     help=f"also add an aligned fake twin of every real, by these makers ({','.join(TWIN_MAKERS)}); "
                          "written to OUTPUT_DIR.twins/, cached in --twins-cache (docs/twins.md)")
    src.add_argument("--twins-cache", default=DEFAULT_TWIN_CACHE, metavar="DIR", help="default %(default)s")
    out = p.add_argument_group("output")
    out.add_argument("--output-dir", required=True, metavar="DIR", help="dataset folder to write (replaced atomically)")
    out.add_argument("--seed", type=int, default=0)
    out.add_argument("--split-fractions", default=",".join(f"{f:g}" for f in DEFAULT_SPLIT_FRACTIONS),
                     metavar="TRAIN,VAL,TEST", help="default %(default)s")
    out.add_argument("--near-duplicate-distance", type=int, default=DEFAULT_NEAR_DUPLICATE_DISTANCE, metavar="BITS",
                     help="pHash Hamming distance up to which two images count as near-duplicates (default %(default)s)")
    out.add_argument("--license", help="dataset license for the card (default: derived from the sources)")
    out.add_argument("--name", help="pretty name for the card")
    out.add_argument("--num-workers", type=int, default=1, help="processes decoding images (default 1)")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    hub = p.add_argument_group("publishing")
    hub.add_argument("--push-to-hub", metavar="ORG/NAME", help="publish the folder to this Hub dataset repo")
    hub.add_argument("--private", action="store_true", help="create the Hub repo as private")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        fractions = [float(x) for x in args.split_fractions.split(",")]
    except ValueError:
        print(f"error: --split-fractions must be three numbers like 0.8,0.1,0.1, got {args.split_fractions!r}",
              file=sys.stderr)
        return 2
    if args.private and not args.push_to_hub:
        print("error: --private only applies with --push-to-hub", file=sys.stderr)
        return 2
    makers = [m.strip() for m in args.twins.split(",") if m.strip()]
    if makers and not args.real_dir:
        print("error: --twins needs --real-dir (twins are made from the real images)", file=sys.stderr)
        return 2
    try:
        fake_dirs = list(args.fake_dir)
        if makers:   # a sibling of the output: the build refuses sources inside the folder it replaces
            fake_dirs.append(make_twin_folder(args.real_dir, f"{args.output_dir.rstrip('/')}.twins", makers,
                                              cache_dir=args.twins_cache))
        result = build_face_dataset(
            args.output_dir, real_dirs=args.real_dir, fake_dirs=fake_dirs, attributes=args.attributes,
            synthetic=args.synthetic, seed=args.seed, real_source=args.real_source,
            fake_generator=args.fake_generator, synthetic_size=args.synthetic_size, split_fractions=fractions,
            near_duplicate_distance=args.near_duplicate_distance, license=args.license, pretty_name=args.name,
            num_workers=args.num_workers, progress=not args.no_progress,
        )
    except (ValueError, TwinMakerUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_build_summary(result.report))
    print(f"dataset written to {result.output_dir}")
    if args.push_to_hub:
        try:
            commit = push_face_dataset(result.output_dir, args.push_to_hub, private=args.private)
        except Exception as error:  # noqa: BLE001 - Hub/network errors: report, the local build stands
            print(f"error: pushing to {args.push_to_hub} failed ({type(error).__name__}: {error}); "
                  f"the local dataset in {result.output_dir} is complete, re-run the push later", file=sys.stderr)
            return 1
        print(f"pushed to the Hub dataset {args.push_to_hub} (commit {commit[:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
