"""The Space: a Gradio Blocks app over :mod:`fakeface.serving`, assembled from one module per tab.

Tabs (:mod:`fakeface.app.tabs`): Detect (one image, evidence on demand, and
the verdict-only ``/verdict``), Batch (many files -> table + CSV), Generate
(OpenAI faces, checked like uploads), Dataset (browse and evaluate), About
(the model card summary). Every action has an ``api_name``; the endpoints
return JSON-ready dicts and the page renders them in a second, private step,
so ``gradio_client`` users get data, not HTML.

Models load once, in a background thread started by :func:`launch_app`, so
the server is up at once and a missing model never stops it: the banner says
what is wrong and how to fix it.
"""
from __future__ import annotations

from typing import Any, Mapping

import gradio as gr

from fakeface.app.common import CPU_CONCURRENCY, TEMP_FILE_TTL_S, AppContext, bind
from fakeface.app.components import OriginalImage
from fakeface.app.render import render_placeholder
from fakeface.app.tabs.about import build_about_tab, status
from fakeface.app.tabs.batch import build_batch_tab
from fakeface.app.tabs.dataset import build_dataset_tab
from fakeface.app.tabs.detect import build_detect_tab, show_examples
from fakeface.app.tabs.generate import build_generate_tab
from fakeface.serving.generate import RateLimiter
from fakeface.serving.models import ModelRegistry
from fakeface.utils.constants import MAX_UPLOAD_BYTES
from fakeface.utils.settings import Settings

__all__ = ["OriginalImage", "build_app", "launch_app", "launch_settings"]

QUEUE_MAX_SIZE = 64
CSS = """
.ff-header h1 {margin-bottom: 0.1em}
.ff-header p {margin-top: 0; color: var(--body-text-color-subdued)}
.ff-small {font-size: 0.9em; color: var(--body-text-color-subdued)}
footer {opacity: 0.8}
"""


def build_app(registry: ModelRegistry | None = None, *, limiter: RateLimiter | None = None,
              environ: Mapping[str, str] | None = None, settings: Settings | None = None) -> gr.Blocks:
    """The whole Space as a ``gr.Blocks`` (not launched; models load on launch or first use).

    Configuration is ``settings``, else read once from ``environ`` (default
    ``os.environ``); a bad ``FAKEFACE_*`` value raises
    :class:`~fakeface.utils.settings.SettingsError` here, at start-up.
    """
    settings = settings or Settings.from_env(environ)
    ctx = AppContext.create(settings, registry, limiter)
    with gr.Blocks(title="fakeface: real or AI-generated face?", analytics_enabled=False,
                   delete_cache=(TEMP_FILE_TTL_S, TEMP_FILE_TTL_S)) as demo:
        with gr.Column(elem_classes="ff-header"):
            gr.Markdown("# fakeface\nIs this face a photo or AI-generated? A calibrated verdict, with the evidence behind it.")
        banner = gr.HTML(render_placeholder("Loading the models…"), label="banner", elem_id="banner")
        models_line = gr.HTML("", label="models")
        with gr.Tabs():
            examples = build_detect_tab(ctx)
            build_batch_tab(ctx)
            build_generate_tab(ctx)
            dataset_tab = build_dataset_tab(ctx)
            about_tab = build_about_tab(ctx)
        status_json = gr.JSON(visible=False, label="status")
        demo.load(bind(status, ctx), outputs=[status_json, banner, models_line, about_tab.about,
                                              dataset_tab.model_choice, about_tab.cards], api_name="status")
        demo.load(bind(show_examples, ctx), outputs=list(examples), api_visibility="private")
    demo.queue(default_concurrency_limit=CPU_CONCURRENCY, max_size=QUEUE_MAX_SIZE)
    demo.fakeface_registry = ctx.registry
    demo.fakeface_context = ctx
    return demo


def launch_settings() -> dict[str, Any]:
    """``launch()`` arguments: upload limit, error display, look.

    Host and port are left to Gradio, which reads GRADIO_SERVER_NAME and
    GRADIO_SERVER_PORT (default 127.0.0.1, port 7860 or the next free one;
    a Space sets 0.0.0.0:7860).
    """
    return {
        "max_file_size": MAX_UPLOAD_BYTES,
        "show_error": False,
        "theme": gr.themes.Soft(primary_hue="indigo", secondary_hue="pink"),
        "css": CSS,
    }


def launch_app(demo: gr.Blocks, **overrides: Any):
    """Launch ``demo`` with :func:`launch_settings`, any argument overridable (tests pass a free port).

    Model loading starts here, in the background, not at import: importing
    ``app`` makes no network calls, and the server answers while the
    models download. The process's torch threads are set here too
    (:func:`fakeface.serving.threads.apply_serving_threads`): a launched app
    runs several model calls at once.
    """
    ctx = getattr(demo, "fakeface_context", None)
    if ctx is not None:   # before the models load: their torch calls share the cores with the other lanes
        from fakeface.serving.threads import apply_serving_threads
        from fakeface.serving.verdicts import VERDICT_WORKERS

        apply_serving_threads(ctx.settings, concurrent_calls=CPU_CONCURRENCY + VERDICT_WORKERS)
    registry = getattr(demo, "fakeface_registry", None)
    if registry is not None:
        registry.start_loading()
    return demo.launch(**{**launch_settings(), **overrides})
