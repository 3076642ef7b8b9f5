"""Test-wide setup: no test may reach the internet.

Environment variables that huggingface_hub, datasets and gradio read at import
time are set here, before any test module imports them. Fixtures for the
loopback fakes live in their own modules and are registered in
``pytest_plugins`` below.
"""
import os
import tempfile

_SESSION_HOME = tempfile.mkdtemp(prefix="fakeface-tests-")
os.environ.setdefault("HF_HOME", os.path.join(_SESSION_HOME, "hf"))
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_DATASETS_CACHE"] = os.path.join(_SESSION_HOME, "datasets")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Never let a developer's real credentials leak into tests.
for _var in ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
    os.environ.pop(_var, None)
# Until a Hub fake is started, point the Hub at a closed loopback port so an
# accidental call fails fast instead of reaching out.
os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")

pytest_plugins = [
    "tests.fakes.hub_fixtures",
    "tests.fakes.openai_fixtures",
]
