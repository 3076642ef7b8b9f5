"""The Detect tab: one image -> a verdict, with the evidence on demand; and the verdict-only API."""
from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from fakeface.app.common import CPU_CONCURRENCY, CPU_LANE, AppContext, bind, public_result, user_errors
from fakeface.app.components import OriginalImage
from fakeface.app.render import (
    draw_result_faces, render_facts, render_placeholder, render_provenance, render_robustness, render_verdict,
)
from fakeface.serving.analysis import analyze_upload, decode_upload, read_upload
from fakeface.serving.errors import AppError
from fakeface.serving.examples import resolve_examples
from fakeface.serving.verdicts import verdict_bytes
from fakeface.utils.constants import MAX_UPLOAD_BYTES

__all__ = ["build_detect_tab", "detect", "detect_with_photo", "show_detection", "verdict"]

VERDICT_LANE = "verdict"
# A session's last decoded photo (kept for the face boxes, drawn right after the analysis) is dropped after this
# many seconds, so sessions that never draw boxes (API callers) do not hold their photos for long.
PHOTO_TTL_S = 60
# Package data (shipped in the wheel). gr.Examples takes file paths, and an installed
# package is an unpacked folder, so the resource is a real directory.
_NO_IMAGE = ("Add an image first:", "drop a file, upload, paste or use the webcam.")


@user_errors
def detect(ctx: AppContext, image_path: str | None, explain: bool = True, robustness: bool = True):
    """``/detect``: the full analysis (Grad-CAM and the robustness re-check when asked) and the overlay."""
    result, overlay, _ = detect_with_photo(ctx, image_path, explain, robustness)
    return result, overlay


@user_errors
def detect_with_photo(ctx: AppContext, image_path: str | None, explain: bool = True, robustness: bool = True):
    """What Analyze runs (the ``/detect`` endpoint): :func:`detect`'s two outputs, then the decoded photo when
    faces were found (else None), for :func:`show_detection` to draw their boxes on without decoding the
    upload again. The page keeps it in a ``gr.State``, which the API never returns."""
    if not image_path:
        raise AppError(*_NO_IMAGE, kind="no_input")
    result, decoded = analyze_upload(read_upload(image_path), image_path, ctx.models(), explain=bool(explain),
                                     robustness=bool(robustness))
    return public_result(result), result.get("gradcam"), decoded.image if result.get("faces") else None


@user_errors
def verdict(ctx: AppContext, image_path: str | None) -> dict[str, Any]:
    """``/verdict``: the verdict only (no evidence); concurrent calls share one model call."""
    if not image_path:
        raise AppError(*_NO_IMAGE, kind="no_input")
    return verdict_bytes(read_upload(image_path), image_path, ctx.batcher)


def show_detection(result: dict | None, image_path: str | None = None, photo: Image.Image | None = None):
    """The page's panels for a ``/detect`` result (rendering only, not an API).

    (verdict card with the per-face table, the photo with its face boxes or
    None, provenance, robustness, image facts). The boxes are drawn here, from
    the result's ``faces``, on ``photo`` (the image the analysis decoded, which
    :func:`detect_with_photo` hands the page), so ``/detect`` keeps its outputs;
    the upload at ``image_path`` is decoded only when no photo is given (a
    direct call, or the page's copy expired).
    """
    if not result:
        return render_placeholder("No result yet."), None, *(render_placeholder("No result yet."),) * 3
    faces_image = None
    if (result.get("faces") or result.get("mode") == "whole-image") and (photo is not None or image_path):
        faces_image = draw_result_faces(photo if photo is not None else decode_upload(read_upload(image_path)).image,
                                        result)
    return (render_verdict(result), faces_image, render_provenance(result.get("provenance")),
            render_robustness(result.get("robustness")), render_facts(result))


def _evidence_panels():
    with gr.Tabs():
        with gr.Tab("Faces"):
            faces_image = gr.Image(label="Faces found (box colour = the face's verdict, label = p(fake))", type="pil",
                                   format="jpeg", interactive=False, height=360, elem_id="detect-faces")
            gr.Markdown("Each face is judged on its own crop; the photo's verdict is that of its most suspicious "
                        "face. Grey boxes are faces too small to judge. With no face found, the whole image is "
                        "scored: one frame round the photo, and the verdict card says so.", elem_classes="ff-small")
        with gr.Tab("Where the model looked"):
            gradcam = gr.Image(label="Grad-CAM (towards 'fake')", type="pil", format="png", interactive=False, height=360)
            gr.Markdown("Warm colours mark the regions that pushed the score towards *fake*: on the most "
                        "suspicious face's crop when faces were found, else on the whole image. It shows where the "
                        "evidence came from, not proof; darkened areas were outside every crop the model inspected.",
                        elem_classes="ff-small")
        with gr.Tab("Provenance"):
            provenance = gr.HTML(render_placeholder("Metadata and content credentials appear here."))
        with gr.Tab("Robustness"):
            robustness = gr.HTML(render_placeholder("Re-scored copies appear here."))
        with gr.Tab("Image facts"):
            facts = gr.HTML(render_placeholder("Format, size and compression appear here."))
    return faces_image, gradcam, provenance, robustness, facts


def _input_column():
    image_in = OriginalImage(type="filepath", sources=["upload", "webcam", "clipboard"], label="Face image",
                             height=380, elem_id="detect-input", image_mode=None)
    with gr.Row():
        explain_box = gr.Checkbox(True, label="Grad-CAM heatmap")
        robust_box = gr.Checkbox(True, label="Robustness check")
    button = gr.Button("Analyze", variant="primary", elem_id="detect-button")
    # Filled when the models are loaded: the release's own example photos, or the synthetic stand-ins for the
    # synthetic demo model (fakeface.serving.examples); a click puts the photo in the image box.
    examples_caption = gr.Markdown("", elem_classes="ff-small", elem_id="detect-examples-caption")
    examples = gr.Gallery(label="Examples", columns=4, height=130, allow_preview=False, show_label=False,
                          elem_id="detect-examples", interactive=False)
    examples.select(pick_example, None, image_in, api_visibility="private", queue=False)
    gr.Markdown("The original file is analysed as uploaded (its metadata included). "
                f"Limit {MAX_UPLOAD_BYTES // 2**20} MiB.", elem_classes="ff-small")
    return image_in, explain_box, robust_box, button, examples, examples_caption


def show_examples(ctx: AppContext):
    """The gallery's photos and their caption, once the models are loaded."""
    chosen = resolve_examples(ctx.registry.models)
    return [str(p) for p in chosen.paths], chosen.caption


def pick_example(evt: gr.SelectData) -> str | None:
    value = evt.value or {}
    image = value.get("image") if isinstance(value, dict) else None
    return (image or {}).get("path") if isinstance(image, dict) else None


def build_detect_tab(ctx: AppContext) -> tuple[gr.Gallery, gr.Markdown]:
    """The tab's components and events (call inside ``gr.Blocks``); returns the examples gallery and its
    caption, which the page fills on load (:func:`show_examples`)."""
    with gr.Tab("Detect", id="detect"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                image_in, explain_box, robust_box, button, examples, examples_caption = _input_column()
            with gr.Column(scale=6):
                verdict_html = gr.HTML(render_placeholder("Drop a face image and press Analyze."), elem_id="verdict")
                faces_image, gradcam, provenance, robustness, facts = _evidence_panels()
                with gr.Accordion("Raw result (JSON)", open=False):
                    result_json = gr.JSON(label="result")
        verdict_json = gr.JSON(visible=False, label="verdict")
        verdict_trigger = gr.Button(visible=False)
        # The decoded photo, from the analysis to the face boxes (server-side; the API does not return it).
        photo = gr.State(None, time_to_live=PHOTO_TTL_S)

    # Dropping or uploading an image analyses it at once; the button re-runs (e.g. with other options).
    gr.on([button.click, image_in.upload], bind(detect_with_photo, ctx), [image_in, explain_box, robust_box],
          [result_json, gradcam, photo], api_name="detect", concurrency_id=CPU_LANE, concurrency_limit=CPU_CONCURRENCY,
          ).success(show_detection, [result_json, image_in, photo],
                    [verdict_html, faces_image, provenance, robustness, facts], api_visibility="private", queue=False)
    # As many verdict requests run at once as can share one model call.
    verdict_trigger.click(bind(verdict, ctx), [image_in], [verdict_json], api_name="verdict",
                          concurrency_id=VERDICT_LANE, concurrency_limit=ctx.settings.verdict_batch_size)
    return examples, examples_caption
