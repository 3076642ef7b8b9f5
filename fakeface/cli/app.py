"""Run the fakeface app locally: ``fakeface-app`` (the same Blocks a Space serves from ``app.py``).

Configuration comes from the environment, as on a Space: FAKEFACE_MODEL (Hub ids
or folders, comma-separated), FAKEFACE_DATASET, OPENAI_API_KEY (optional),
FAKEFACE_DEMO_BANNER, GRADIO_SERVER_NAME/PORT.
"""
from __future__ import annotations

import argparse
import logging

from fakeface.app.layout import build_app, launch_app


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    # No flags: a Space has none either, so the environment is the one way to configure the app.
    argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1]).parse_args(argv)
    configure_logging()
    launch_app(build_app())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
