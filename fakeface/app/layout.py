"""The Space: a Gradio Blocks app over :mod:`fakeface.serving.core`.

Tabs: Detect (one image, with evidence), Batch (many files -> table + CSV),
Generate (OpenAI faces, checked like uploads), Dataset (browse and evaluate),
About (the model card summary). Every action has an ``api_name``; the
endpoints return JSON-ready dicts and the page renders them in a second,
private step, so ``gradio_client`` users get data, not HTML.

Models load once, in a background thread started by :func:`launch_app`, so
the server is up at once and a missing model never stops it: the banner says
what is wrong and how to fix it.
"""
from __future__ import annotations

import functools
import importlib.resources
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from fakeface.utils.constants import ATTRIBUTE_COLUMNS, DEFAULT_IMAGE_MODEL, ENV_OPENAI_KEY, LABEL_NAMES, MAX_UPLOAD_BYTES
from fakeface.data.images import ImageDecodeError
from fakeface.serving.core import (
    AppError, DatasetCache, GenerationRequest, ModelRegistry, RateLimiter, analyze_bytes, analyze_files,
    batch_columns, describe_release, evaluate_sample, filter_indices, generate_and_analyze, read_upload,
    sample_gallery, summarize_dataset, write_rows_csv,
)
from fakeface.app.components import OriginalImage, user_error
from fakeface.app.render import (
    render_about, render_banner, render_dataset_summary, render_facts, render_generated, render_metrics,
    render_model_cards, render_models_line, render_placeholder, render_provenance, render_robustness, render_verdict,
)

logger = logging.getLogger(__name__)

__all__ = ["OriginalImage", "build_app", "launch_app", "launch_settings"]

# Package data (shipped in the wheel). gr.Examples takes file paths, and an installed
# package is an unpacked folder, so the resource is a real directory.
EXAMPLES_DIR = Path(str(importlib.resources.files("fakeface.app") / "examples"))
ANY = "any"
IMAGE_SIZES = ("1024x1024", "1024x1536", "1536x1024", "auto")
# Two CPU cores: heavy work (detection, batches, evaluation) shares one lane
# of two; generation waits on OpenAI, not the CPU, so it gets its own.
CPU_LANE, CPU_CONCURRENCY = "cpu", 2
GENERATE_CONCURRENCY = 4
# Uploads, overlays, CSVs and generated images are temporary: a long-running
# Space deletes them after an hour (Gradio's cache and our own output folder).
TEMP_FILE_TTL_S = 3600

CSS = """
.ff-header h1 {margin-bottom: 0.1em}
.ff-header p {margin-top: 0; color: var(--body-text-color-subdued)}
.ff-small {font-size: 0.9em; color: var(--body-text-color-subdued)}
footer {opacity: 0.8}
"""


# --------------------------------------------------------------------------- error handling

def user_errors(fn: Callable) -> Callable:
    """Turn every failure of a callback into a ``gr.Error`` with a clear, secret-free message.

    Expected problems (bad files, missing models, OpenAI refusals) show their
    own message; anything else is logged and reported generically, and the
    app keeps serving.
    """
    from fakeface.generation.runner import GenerationError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ImageDecodeError as error:
            raise user_error(f"This file cannot be analysed: {error}.", "Unusable image") from None
        except GenerationError as error:
            raise user_error(str(error), "Image generation failed") from None
        except AppError as error:
            raise user_error(str(error)) from None
        except Exception as error:  # noqa: BLE001 - never a traceback (or an input) in the UI
            logger.exception("unexpected error in %s", fn.__name__)
            raise user_error(f"Something went wrong ({type(error).__name__}); please try again.") from None

    return wrapper


def _public(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON part of a result: no images, no raw bytes."""
    from fakeface.evaluation.metrics import json_safe

    return json_safe({k: v for k, v in result.items() if k not in ("gradcam", "image_bytes")})


# --------------------------------------------------------------------------- the app

def build_app(registry: ModelRegistry | None = None, *, limiter: RateLimiter | None = None,
              environ: dict[str, str] | None = None) -> gr.Blocks:
    """The whole Space as a ``gr.Blocks`` (not launched; models load on launch or first use)."""
    env = dict(os.environ if environ is None else environ)
    registry = registry or ModelRegistry.from_env(env)
    limiter = limiter or RateLimiter.from_env(env)
    datasets_cache = DatasetCache(allowed_folders=[registry.dataset] if registry.dataset else [])
    space_has_key = bool((env.get(ENV_OPENAI_KEY) or "").strip())
    output_dir = Path(tempfile.mkdtemp(prefix="fakeface-app-"))

    def models():
        return registry.require_models()

    def model_by_name(name: str | None):
        loaded = models()
        return next((m for m in loaded if m.name == name), loaded[0])

    # ------------------------------------------------------------------ callbacks (API)

    @user_errors
    def detect(image_path: str | None, explain: bool = True, robustness: bool = True):
        if not image_path:
            raise AppError("Add an image first: drop a file, upload, paste or use the webcam.")
        result = analyze_bytes(read_upload(image_path), image_path, models(), explain=bool(explain),
                               robustness=bool(robustness))
        return _public(result), result.get("gradcam")

    @user_errors
    def detect_batch(files: list[str] | None, progress=gr.Progress()):
        if not files:
            raise AppError("Add some image files first.")
        paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files]
        rows = analyze_files(paths, models(), progress=lambda i, n, name: progress((i, n), desc=f"{name}"))
        csv_path = write_rows_csv(rows, _new_output_path(output_dir, "fakeface-results", ".csv"))
        columns = batch_columns(rows)
        table = {"headers": columns, "data": [[_cell(row.get(c)) for c in columns] for row in rows]}
        return table, str(csv_path)

    @user_errors
    def generate(api_key: str | None, image_model: str, size: str, quality: str, prompt: str | None,
                 age: str, gender: str, race: str, expression: str, glasses: str,
                 request: gr.Request = None):
        attributes = {k: v for k, v in zip(("age", "gender", "race", "expression", "glasses"),
                                           (age, gender, race, expression, glasses)) if v and v != ANY}
        session = getattr(request, "session_hash", None) or "api"
        generation = GenerationRequest(prompt=prompt, attributes=attributes, model=image_model, size=size,
                                       quality=quality, user_key=api_key)
        result = generate_and_analyze(generation, models(), session_id=session, limiter=limiter, environ=env)
        image_path = _new_output_path(output_dir, "generated", "." + result["image_format"].lower())
        image_path.write_bytes(result["image_bytes"])   # the bytes as OpenAI sent them (C2PA intact)
        return str(image_path), _public(result), result.get("gradcam")

    @user_errors
    def dataset_load(source: str, progress=gr.Progress()):
        progress(0.1, desc="loading the dataset")
        data = datasets_cache.load(source)
        summary = summarize_dataset(data)
        summary["source"] = source.strip()
        return summary, render_dataset_summary(source.strip(), summary)

    @user_errors
    def dataset_samples(source: str, split: str, label: str, generator: str, gender: str = ANY, race: str = ANY,
                        glasses: str = ANY, expression: str = ANY, age: str = ANY):
        data = datasets_cache.load(source)
        part = _split_of(data, split)
        attributes = {"gender": gender, "race": race, "glasses": glasses, "expression": expression, "age": age}
        indices = filter_indices(part, label=label, generator=generator, attributes=attributes)
        if not indices:
            raise AppError("No images match these filters.")
        return sample_gallery(part, indices, n=24, seed=len(indices))

    @user_errors
    def dataset_evaluate(source: str, split: str, model_name: str | None, n: float, progress=gr.Progress()):
        from fakeface.evaluation.metrics import json_safe
        from fakeface.evaluation.plots import confusion_figure, roc_figure

        data = datasets_cache.load(source)
        part = _split_of(data, split)
        model = model_by_name(model_name)
        metrics = evaluate_sample(model, part, n=int(n), progress=lambda f, d: progress(f, desc=d))
        confusion = confusion_figure(metrics["confusion_matrix"], title=f"Confusion matrix ({split})")
        roc = roc_figure(metrics["labels"], metrics["p_fake"], title=f"ROC ({split}, n={metrics['n']})",
                         operating_threshold=metrics["threshold"])
        public = json_safe({k: v for k, v in metrics.items() if k not in ("labels", "p_fake")})
        return public, render_metrics(metrics), confusion, roc

    def status():
        state = registry.status()
        releases = [describe_release(m) for m in registry.models]
        names = [m["name"] for m in state["models"]]
        choice = gr.update(choices=names, value=names[0] if names else None)
        return (state, render_banner(state), render_models_line(state), render_about(state, releases), choice,
                render_model_cards(releases))

    # ------------------------------------------------------------------ rendering (page only)

    def show_detection(result: dict | None):
        if not result:
            return (render_placeholder("No result yet."),) * 4
        return (render_verdict(result), render_provenance(result.get("provenance")),
                render_robustness(result.get("robustness")), render_facts(result))

    def show_generation(result: dict | None):
        if not result:
            return render_placeholder("No image yet."), "", ""
        return render_verdict(result), render_provenance(result.get("provenance")), render_generated(result.get("generated"))

    def show_filters(summary: dict | None):
        summary = summary or {}
        splits = list((summary.get("splits") or {}).keys())
        default_split = "test" if "test" in splits else (splits[0] if splits else None)
        updates = [gr.update(choices=splits, value=default_split),
                   gr.update(choices=[ANY, *summary.get("generators", [])], value=ANY)]
        attrs = summary.get("attributes") or {}
        updates += [gr.update(choices=[ANY, *attrs.get(c, [])], value=ANY) for c in ATTRIBUTE_COLUMNS]
        return updates

    # ------------------------------------------------------------------ layout

    with gr.Blocks(title="fakeface: real or AI-generated face?", analytics_enabled=False,
                   delete_cache=(TEMP_FILE_TTL_S, TEMP_FILE_TTL_S)) as demo:
        with gr.Column(elem_classes="ff-header"):
            gr.Markdown("# fakeface\nIs this face a photo or AI-generated? A calibrated verdict, with the evidence behind it.")
        banner = gr.HTML(render_placeholder("Loading the models…"), label="banner", elem_id="banner")
        models_line = gr.HTML("", label="models")

        with gr.Tabs():
            with gr.Tab("Detect", id="detect"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5):
                        image_in = OriginalImage(
                            type="filepath", sources=["upload", "webcam", "clipboard"], label="Face image",
                            height=380, elem_id="detect-input", image_mode=None,
                        )
                        with gr.Row():
                            explain_box = gr.Checkbox(True, label="Grad-CAM heatmap")
                            robust_box = gr.Checkbox(True, label="Robustness check")
                        detect_btn = gr.Button("Analyze", variant="primary", elem_id="detect-button")
                        examples = sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
                        if examples:
                            gr.Examples([[str(p)] for p in examples], inputs=[image_in],
                                        label="Examples: synthetic stand-ins from fakeface.data.synthetic, not real people")
                        gr.Markdown("The original file is analysed as uploaded (its metadata included). "
                                    f"Limit {MAX_UPLOAD_BYTES // 2**20} MiB.", elem_classes="ff-small")
                    with gr.Column(scale=6):
                        verdict_html = gr.HTML(render_placeholder("Drop a face image and press Analyze."),
                                               elem_id="verdict")
                        with gr.Tabs():
                            with gr.Tab("Where the model looked"):
                                gradcam_out = gr.Image(label="Grad-CAM (towards 'fake')", type="pil", format="png",
                                                       interactive=False, height=360)
                                gr.Markdown("Warm colours mark the regions that pushed the score towards *fake*. "
                                            "It shows where the evidence came from, not proof; darkened areas "
                                            "were outside every crop the model inspected.", elem_classes="ff-small")
                            with gr.Tab("Provenance"):
                                provenance_html = gr.HTML(render_placeholder("Metadata and content credentials appear here."))
                            with gr.Tab("Robustness"):
                                robustness_html = gr.HTML(render_placeholder("Re-scored copies appear here."))
                            with gr.Tab("Image facts"):
                                facts_html = gr.HTML(render_placeholder("Format, size and compression appear here."))
                        with gr.Accordion("Raw result (JSON)", open=False):
                            result_json = gr.JSON(label="result")

            with gr.Tab("Batch", id="batch"):
                gr.Markdown("Score many images at once. Each file is analysed like a single upload (without "
                            "Grad-CAM and the robustness check); files that cannot be read get an error row.")
                batch_in = gr.File(file_count="multiple", type="filepath", label="Images")
                batch_btn = gr.Button("Analyze all", variant="primary")
                batch_table = gr.Dataframe(label="Results", interactive=False, wrap=True)
                batch_csv = gr.File(label="Download CSV", interactive=False)

            with gr.Tab("Generate", id="generate"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=5):
                        key_note = ("This Space has its own key, with a small per-session limit; your own key has no limit here."
                                    if space_has_key else "This Space has no key of its own: enter yours to generate.")
                        api_key_in = gr.Textbox(label="Your OpenAI API key (optional)", type="password",
                                                placeholder="sk-…", info="Used for this one request only; never stored, logged or shown. "
                                                + key_note, elem_id="openai-key")
                        with gr.Row():
                            model_in = gr.Dropdown(_image_models(), value=_default_image_model(), label="Image model")
                            size_in = gr.Dropdown(list(IMAGE_SIZES), value=IMAGE_SIZES[0], label="Size")
                            quality_in = gr.Dropdown(_image_qualities(), value="medium", label="Quality")
                        gr.Markdown("**Describe the face** with the prompt builder, or write your own prompt.")
                        attribute_inputs = []
                        for keys in (("age", "gender", "race"), ("expression", "glasses")):
                            with gr.Row():
                                for key in keys:
                                    attribute_inputs.append(gr.Dropdown(_attribute_choices(key), value=ANY, min_width=120,
                                                                        label="ethnicity" if key == "race" else key))
                        prompt_in = gr.Textbox(label="Free-text prompt (overrides the builder)", lines=2,
                                               placeholder="A photorealistic portrait of …")
                        generate_btn = gr.Button("Generate and analyze", variant="primary")
                    with gr.Column(scale=6):
                        generated_img = gr.Image(label="Generated face (original file)", type="filepath",
                                                 interactive=False, height=380)
                        generated_verdict = gr.HTML(render_placeholder("The generated face and its verdict appear here."))
                        with gr.Tabs():
                            with gr.Tab("Where the model looked"):
                                generated_cam = gr.Image(label="Grad-CAM", type="pil", format="png", interactive=False)
                            with gr.Tab("Provenance"):
                                generated_prov = gr.HTML("")
                            with gr.Tab("Request"):
                                generated_info = gr.HTML("")
                        with gr.Accordion("Raw result (JSON)", open=False):
                            generated_json = gr.JSON(label="result")

            with gr.Tab("Dataset", id="dataset"):
                with gr.Row():
                    dataset_in = gr.Textbox(registry.dataset or "", label="Dataset (Hub id org/name)",
                                            placeholder="org/name", scale=4)
                    dataset_btn = gr.Button("Load", variant="primary", scale=1)
                dataset_md = gr.Markdown("", label="dataset")
                dataset_state = gr.JSON(visible=False, label="dataset summary")
                with gr.Row():
                    split_in = gr.Dropdown([], label="Split", min_width=120, allow_custom_value=True)
                    label_in = gr.Dropdown([ANY, *LABEL_NAMES], value=ANY, label="Label", min_width=120)
                    generator_in = gr.Dropdown([ANY], value=ANY, label="Generator", min_width=160, allow_custom_value=True)
                    attr_filters = [gr.Dropdown([ANY], value=ANY, label=c, min_width=110, allow_custom_value=True)
                                    for c in ATTRIBUTE_COLUMNS]
                samples_btn = gr.Button("Show samples")
                gallery = gr.Gallery(label="Samples", columns=6, height=420, object_fit="contain", fit_columns=False)
                gr.Markdown("### Evaluate a model on a sample")
                with gr.Row():
                    eval_model_in = gr.Dropdown([], label="Model", scale=3, allow_custom_value=True)
                    eval_n_in = gr.Slider(10, 1000, value=200, step=1, label="Sample size", scale=2)
                    eval_btn = gr.Button("Evaluate", variant="primary", scale=1)
                metrics_md = gr.Markdown("", label="metrics table")
                with gr.Row():
                    confusion_plot = gr.Plot(label="Confusion matrix")
                    roc_plot = gr.Plot(label="ROC curve")
                metrics_json = gr.JSON(visible=False, label="metrics")

            with gr.Tab("About", id="about"):
                about_md = gr.Markdown("Loading…", label="about")
                with gr.Accordion("The full model card", open=False):
                    cards_md = gr.Markdown("", label="model cards")
                gr.Markdown(_api_help())

        status_json = gr.JSON(visible=False, label="status")

        # ------------------------------------------------------------------ events
        demo.load(status, outputs=[status_json, banner, models_line, about_md, eval_model_in, cards_md],
                  api_name="status")

        # Dropping or uploading an image analyses it at once; the button re-runs (e.g. with other options).
        gr.on(
            [detect_btn.click, image_in.upload], detect, [image_in, explain_box, robust_box], [result_json, gradcam_out],
            api_name="detect", concurrency_id=CPU_LANE, concurrency_limit=CPU_CONCURRENCY,
        ).success(show_detection, [result_json], [verdict_html, provenance_html, robustness_html, facts_html],
                  api_visibility="private", queue=False)

        batch_btn.click(detect_batch, [batch_in], [batch_table, batch_csv], api_name="detect_batch",
                        concurrency_id=CPU_LANE, concurrency_limit=CPU_CONCURRENCY)

        generate_btn.click(
            generate, [api_key_in, model_in, size_in, quality_in, prompt_in, *attribute_inputs],
            [generated_img, generated_json, generated_cam], api_name="generate",
            concurrency_id="openai", concurrency_limit=GENERATE_CONCURRENCY,
        ).success(show_generation, [generated_json], [generated_verdict, generated_prov, generated_info],
                  api_visibility="private", queue=False)

        dataset_btn.click(dataset_load, [dataset_in], [dataset_state, dataset_md], api_name="dataset_load",
                          concurrency_id=CPU_LANE, concurrency_limit=CPU_CONCURRENCY
                          ).success(show_filters, [dataset_state], [split_in, generator_in, *attr_filters],
                                    api_visibility="private", queue=False)
        samples_btn.click(dataset_samples, [dataset_in, split_in, label_in, generator_in, *attr_filters], [gallery],
                          api_name="dataset_samples", concurrency_id=CPU_LANE, concurrency_limit=CPU_CONCURRENCY)
        eval_btn.click(dataset_evaluate, [dataset_in, split_in, eval_model_in, eval_n_in],
                       [metrics_json, metrics_md, confusion_plot, roc_plot], api_name="dataset_evaluate",
                       concurrency_id=CPU_LANE, concurrency_limit=CPU_CONCURRENCY)

    demo.queue(default_concurrency_limit=CPU_CONCURRENCY, max_size=64)
    demo.fakeface_registry = registry
    return demo


def _new_output_path(folder: Path, stem: str, suffix: str) -> Path:
    """A fresh file name in ``folder``; files older than ``TEMP_FILE_TTL_S`` are removed first."""
    cutoff = time.time() - TEMP_FILE_TTL_S
    for old in folder.glob("*"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except OSError:
            pass                              # another request removed it first
    return folder / f"{stem}-{uuid.uuid4().hex[:12]}{suffix}"


def _split_of(data: Any, split: str | None) -> Any:
    names = list(data.keys())
    if not names:
        raise AppError("The dataset has no splits.")
    if not split:
        split = "test" if "test" in names else names[0]
    if split not in names:
        raise AppError(f"The dataset has no split {split!r}; choose one of {', '.join(names)}.")
    return data[split]


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _image_models() -> list[str]:
    try:
        from fakeface.generation.runner import available_image_models

        return list(available_image_models())
    except Exception:  # noqa: BLE001 - without openai the tab still renders, and says why on use
        return [DEFAULT_IMAGE_MODEL]


def _default_image_model() -> str:
    models = _image_models()
    return DEFAULT_IMAGE_MODEL if DEFAULT_IMAGE_MODEL in models else models[0]


def _image_qualities() -> list[str]:
    try:
        from fakeface.generation.runner import available_image_qualities

        return list(available_image_qualities())
    except Exception:  # noqa: BLE001
        return ["low", "medium", "high", "auto"]


def _attribute_choices(key: str) -> list[tuple[str, str]]:
    from fakeface.generation.prompts import ATTRIBUTE_GRID

    values = ATTRIBUTE_GRID.get(key, ())
    return [("any", ANY)] + [(v.replace("_", " "), v) for v in values]


def _api_help() -> str:
    return """### Use it from Python

Every action is an API endpoint (see "Use via API" at the bottom of the page):

```python
from gradio_client import Client, handle_file

client = Client("http://127.0.0.1:7860")          # or "org/space-name"
result, gradcam = client.predict(handle_file("face.jpg"), True, True, api_name="/detect")
print(result["verdict"], result["p_fake"], result["provenance"]["c2pa"]["status"])
```

Endpoints: `/detect`, `/detect_batch`, `/generate`, `/dataset_load`, `/dataset_samples`, `/dataset_evaluate`, `/status`.
"""


# --------------------------------------------------------------------------- launch

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
    models download.
    """
    registry = getattr(demo, "fakeface_registry", None)
    if registry is not None:
        registry.start_loading()
    return demo.launch(**{**launch_settings(), **overrides})
