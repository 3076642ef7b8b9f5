"""Generate AI faces with the OpenAI images API into a folder with a manifest.

    fakeface-generate --count N --out DIR [--model gpt-image-2] [--from-real DIR] \\
        [--size 1024x1024] [--quality high] [--concurrency K] [--max-images M] [--dry-run] [--seed S]

Writes ``DIR/<id>.png`` and ``DIR/manifest.jsonl`` (one JSON object per image:
id, file, status ok|refused|failed, model, prompt, revised_prompt, attributes,
source_id, size, width, height, created_at ...), the input of
``fakeface-build-dataset --fake-dir DIR``. Re-running the same command skips
what is done and adopts images an interrupted run saved. The key comes from
``OPENAI_API_KEY`` or a ``.env`` file, never from the command line.

Exit status: 0 all planned images done, 1 stopped (bad key, permission, quota,
too many failures), 2 bad arguments, 3 some images failed (run again to retry),
4 images left for a later run by --max-images.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fakeface.generation.client import (
    DEFAULT_QUALITY, DEFAULT_SIZE, DEFAULT_TIMEOUT_S, GenerationError, available_image_models, available_image_qualities,
)
from fakeface.generation.manifest import load_manifest
from fakeface.generation.plan import describe_plan, plan_generation
from fakeface.generation.runner import run_generation
from fakeface.utils.constants import DEFAULT_IMAGE_MODEL

# Cost guard: more new images than this in one run need an explicit --max-images.
UNCONFIRMED_IMAGE_LIMIT = 100


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--count", type=int, default=None,
                   help="images to plan (default with --from-real: one look-alike per real face)")
    p.add_argument("--out", required=True, help="output folder (created; re-runs resume in it)")
    p.add_argument("--model", default=DEFAULT_IMAGE_MODEL, choices=available_image_models())
    p.add_argument("--from-real", metavar="DIR", default=None,
                   help="make look-alikes of the real faces in DIR with images.edit(input_fidelity='high')")
    p.add_argument("--prompt", action="append", default=None, metavar="TEXT",
                   help="free-text prompt instead of the attribute grid (repeat for several; cycled)")
    p.add_argument("--size", default=DEFAULT_SIZE, help="WIDTHxHEIGHT or auto")
    p.add_argument("--quality", default=DEFAULT_QUALITY, choices=available_image_qualities())
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at once (1-32)")
    p.add_argument("--max-images", type=int, default=None, metavar="M",
                   help=f"generate at most M new images in this run (required above {UNCONFIRMED_IMAGE_LIMIT})")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit without calling the API")
    p.add_argument("--seed", type=int, default=0, help="tie-breaking seed of the attribute grid")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per API request")
    p.add_argument("--retries", type=int, default=3, help="attempts per image on timeouts and server errors")
    p.add_argument("--env-file", default=".env", help="read OPENAI_API_KEY from this file if not in the environment")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        plan = plan_generation(args.count, model=args.model, size=args.size, quality=args.quality,
                               seed=args.seed, prompts=args.prompt, real_dir=args.from_real)
    except ValueError as error:
        parser.error(str(error))
    out = Path(args.out)
    done = {r.id for r in load_manifest(out) if r.final} if out.is_dir() else set()
    new = sum(p.id not in done for p in plan)
    if args.dry_run:
        print(describe_plan(plan, done_ids=done, max_images=args.max_images))
        print("dry run: no API call made")
        return 0
    if args.max_images is None and new > UNCONFIRMED_IMAGE_LIMIT:
        parser.error(f"this run would generate {new} new images (each one is billed); "
                     f"confirm with --max-images {new}, or run --dry-run to see the plan")
    try:
        summary = run_generation(plan, out, env_file=args.env_file, concurrency=args.concurrency,
                                 max_images=args.max_images, timeout=args.timeout, max_attempts=args.retries,
                                 progress=not args.no_progress)
    except GenerationError as error:          # no key at all: nothing was attempted
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary.format())
    if summary.stopped:
        return 1
    if summary.failed:
        return 3
    return 4 if summary.capped else 0


if __name__ == "__main__":
    sys.exit(main())
