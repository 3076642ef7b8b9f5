"""Generate AI faces with the OpenAI images API: ``python scripts/generate_faces.py --help`` (same as ``fakeface-generate``).

The command line lives in ``fakeface.cli.generate``.
"""
from fakeface.cli.generate import main

if __name__ == "__main__":
    raise SystemExit(main())
