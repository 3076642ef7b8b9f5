"""The Generate tab: a face from OpenAI (the visitor's key or the Space's, rate-limited), checked like an upload."""
from __future__ import annotations

import gradio as gr

from fakeface.app.common import ANY, AppContext, bind, new_output_path, public_result, user_errors
from fakeface.app.render import render_generated, render_placeholder, render_provenance, render_verdict
from fakeface.generation.prompts import ATTRIBUTE_GRID
from fakeface.generation.client import available_image_models, available_image_qualities
from fakeface.serving.generate import GenerationRequest, generate_and_analyze
from fakeface.utils.constants import DEFAULT_IMAGE_MODEL

__all__ = ["ATTRIBUTES", "build_generate_tab", "generate", "show_generation"]

IMAGE_SIZES = ("1024x1024", "1024x1536", "1536x1024", "auto")
ATTRIBUTES = ("age", "gender", "race", "expression", "glasses")
GENERATE_CONCURRENCY = 4      # waits on OpenAI, not the CPU


@user_errors
def generate(ctx: AppContext, api_key: str | None, image_model: str, size: str, quality: str, prompt: str | None,
             age: str, gender: str, race: str, expression: str, glasses: str, request: gr.Request = None):
    """``/generate``: the generated file's path, the analysis and the Grad-CAM overlay."""
    attributes = {k: v for k, v in zip(ATTRIBUTES, (age, gender, race, expression, glasses)) if v and v != ANY}
    session = getattr(request, "session_hash", None) or "api"
    generation = GenerationRequest(prompt=prompt, attributes=attributes, model=image_model, size=size,
                                   quality=quality, user_key=api_key)
    result = generate_and_analyze(generation, ctx.models(), session_id=session, limiter=ctx.limiter,
                                  settings=ctx.settings)
    image_path = new_output_path(ctx.output_dir, "generated", "." + result["image_format"].lower())
    image_path.write_bytes(result["image_bytes"])   # the bytes as OpenAI sent them (C2PA intact)
    return str(image_path), public_result(result), result.get("gradcam")


def show_generation(result: dict | None):
    if not result:
        return render_placeholder("No image yet."), "", ""
    return render_verdict(result), render_provenance(result.get("provenance")), render_generated(result.get("generated"))


def _default_image_model() -> str:
    models = list(available_image_models())
    return DEFAULT_IMAGE_MODEL if DEFAULT_IMAGE_MODEL in models else models[0]


def _attribute_choices(key: str) -> list[tuple[str, str]]:
    return [("any", ANY)] + [(v.replace("_", " "), v) for v in ATTRIBUTE_GRID.get(key, ())]


def _request_column(ctx: AppContext) -> tuple[list, gr.Button]:
    key_note = ("This Space has its own key, with a small per-session limit; your own key has no limit here."
                if ctx.settings.space_has_openai_key else "This Space has no key of its own: enter yours to generate.")
    api_key_in = gr.Textbox(label="Your OpenAI API key (optional)", type="password", placeholder="sk-…",
                            info="Used for this one request only; never stored, logged or shown. " + key_note,
                            elem_id="openai-key")
    with gr.Row():
        model_in = gr.Dropdown(list(available_image_models()), value=_default_image_model(), label="Image model")
        size_in = gr.Dropdown(list(IMAGE_SIZES), value=IMAGE_SIZES[0], label="Size")
        quality_in = gr.Dropdown(list(available_image_qualities()), value="medium", label="Quality")
    gr.Markdown("**Describe the face** with the prompt builder, or write your own prompt.")
    attribute_inputs = []
    for keys in (("age", "gender", "race"), ("expression", "glasses")):
        with gr.Row():
            for key in keys:
                attribute_inputs.append(gr.Dropdown(_attribute_choices(key), value=ANY, min_width=120,
                                                    label="ethnicity" if key == "race" else key))
    prompt_in = gr.Textbox(label="Free-text prompt (overrides the builder)", lines=2,
                           placeholder="A photorealistic portrait of …")
    button = gr.Button("Generate and analyze", variant="primary")
    return [api_key_in, model_in, size_in, quality_in, prompt_in, *attribute_inputs], button


def build_generate_tab(ctx: AppContext) -> None:
    with gr.Tab("Generate", id="generate"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                inputs, button = _request_column(ctx)
            with gr.Column(scale=6):
                image_out = gr.Image(label="Generated face (original file)", type="filepath", interactive=False,
                                     height=380)
                verdict_html = gr.HTML(render_placeholder("The generated face and its verdict appear here."))
                with gr.Tabs():
                    with gr.Tab("Where the model looked"):
                        gradcam = gr.Image(label="Grad-CAM", type="pil", format="png", interactive=False)
                    with gr.Tab("Provenance"):
                        provenance = gr.HTML("")
                    with gr.Tab("Request"):
                        info = gr.HTML("")
                with gr.Accordion("Raw result (JSON)", open=False):
                    result_json = gr.JSON(label="result")
    button.click(bind(generate, ctx), inputs, [image_out, result_json, gradcam], api_name="generate",
                 concurrency_id="openai", concurrency_limit=GENERATE_CONCURRENCY,
                 ).success(show_generation, [result_json], [verdict_html, provenance, info],
                           api_visibility="private", queue=False)
