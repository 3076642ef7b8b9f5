"""The Dataset tab: load a face dataset, browse samples by filter, evaluate a model on a sample."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from fakeface.app.common import ANY, CPU_CONCURRENCY, CPU_LANE, AppContext, bind, user_errors
from fakeface.app.render import render_dataset_summary, render_metrics
from fakeface.serving.browse import evaluate_sample, filter_indices, sample_gallery, split_of, summarize_dataset
from fakeface.serving.errors import AppError
from fakeface.utils.constants import ATTRIBUTE_COLUMNS, LABEL_NAMES
from fakeface.utils.formatting import json_safe

__all__ = ["DatasetTab", "build_dataset_tab", "dataset_evaluate", "dataset_load", "dataset_samples", "show_filters"]

_CPU = {"concurrency_id": CPU_LANE, "concurrency_limit": CPU_CONCURRENCY}


@user_errors
def dataset_load(ctx: AppContext, source: str, progress=gr.Progress()):
    """``/dataset_load``: the dataset's summary (splits, counts, generators, attributes) and its Markdown."""
    progress(0.1, desc="loading the dataset")
    data = ctx.datasets.load(source)
    summary = summarize_dataset(data)
    summary["source"] = source.strip()
    return summary, render_dataset_summary(source.strip(), summary)


@user_errors
def dataset_samples(ctx: AppContext, source: str, split: str, label: str, generator: str, gender: str = ANY,
                    race: str = ANY, glasses: str = ANY, expression: str = ANY, age: str = ANY):
    """``/dataset_samples``: up to 24 thumbnails matching the filters."""
    part = split_of(ctx.datasets.load(source), split)
    attributes = {"gender": gender, "race": race, "glasses": glasses, "expression": expression, "age": age}
    indices = filter_indices(part, label=label, generator=generator, attributes=attributes)
    if not indices:
        raise AppError("No images match these filters.", kind="not_found")
    return sample_gallery(part, indices, n=24, seed=len(indices))


@user_errors
def dataset_evaluate(ctx: AppContext, source: str, split: str, model_name: str | None, n: float,
                     progress=gr.Progress()):
    """``/dataset_evaluate``: metrics at the model's threshold on a random sample, with the two plots."""
    from fakeface.evaluation.plots import confusion_figure, roc_figure   # matplotlib: on first use

    part = split_of(ctx.datasets.load(source), split)
    model = ctx.registry.model_by_name(model_name)
    metrics = evaluate_sample(model, part, n=int(n), progress=lambda f, d: progress(f, desc=d))
    confusion = confusion_figure(metrics["confusion_matrix"], title=f"Confusion matrix ({split})")
    roc = roc_figure(metrics["labels"], metrics["p_fake"], title=f"ROC ({split}, n={metrics['n']})",
                     operating_threshold=metrics["threshold"])
    public = json_safe({k: v for k, v in metrics.items() if k not in ("labels", "p_fake")})
    return public, render_metrics(metrics), confusion, roc


def show_filters(summary: dict | None):
    """The filter dropdowns' choices for a loaded dataset (rendering only)."""
    summary = summary or {}
    splits = list((summary.get("splits") or {}).keys())
    default_split = "test" if "test" in splits else (splits[0] if splits else None)
    updates = [gr.update(choices=splits, value=default_split),
               gr.update(choices=[ANY, *summary.get("generators", [])], value=ANY)]
    attrs = summary.get("attributes") or {}
    updates += [gr.update(choices=[ANY, *attrs.get(c, [])], value=ANY) for c in ATTRIBUTE_COLUMNS]
    return updates


@dataclass
class DatasetTab:
    """What the layout wires to the app's status: the model chooser."""

    model_choice: gr.Dropdown


def _filters():
    with gr.Row():
        split_in = gr.Dropdown([], label="Split", min_width=120, allow_custom_value=True)
        label_in = gr.Dropdown([ANY, *LABEL_NAMES], value=ANY, label="Label", min_width=120)
        generator_in = gr.Dropdown([ANY], value=ANY, label="Generator", min_width=160, allow_custom_value=True)
        attr_filters = [gr.Dropdown([ANY], value=ANY, label=c, min_width=110, allow_custom_value=True)
                        for c in ATTRIBUTE_COLUMNS]
    return split_in, label_in, generator_in, attr_filters


def build_dataset_tab(ctx: AppContext) -> DatasetTab:
    with gr.Tab("Dataset", id="dataset"):
        with gr.Row():
            source_in = gr.Textbox(ctx.registry.dataset or "", label="Dataset (Hub id org/name)",
                                   placeholder="org/name", scale=4)
            load_btn = gr.Button("Load", variant="primary", scale=1)
        summary_md = gr.Markdown("", label="dataset")
        summary_state = gr.JSON(visible=False, label="dataset summary")
        split_in, label_in, generator_in, attr_filters = _filters()
        samples_btn = gr.Button("Show samples")
        gallery = gr.Gallery(label="Samples", columns=6, height=420, object_fit="contain", fit_columns=False)
        gr.Markdown("### Evaluate a model on a sample")
        with gr.Row():
            model_in = gr.Dropdown([], label="Model", scale=3, allow_custom_value=True)
            n_in = gr.Slider(10, 1000, value=200, step=1, label="Sample size", scale=2)
            eval_btn = gr.Button("Evaluate", variant="primary", scale=1)
        metrics_md = gr.Markdown("", label="metrics table")
        with gr.Row():
            confusion_plot = gr.Plot(label="Confusion matrix")
            roc_plot = gr.Plot(label="ROC curve")
        metrics_json = gr.JSON(visible=False, label="metrics")

    load_btn.click(bind(dataset_load, ctx), [source_in], [summary_state, summary_md], api_name="dataset_load", **_CPU
                   ).success(show_filters, [summary_state], [split_in, generator_in, *attr_filters],
                             api_visibility="private", queue=False)
    samples_btn.click(bind(dataset_samples, ctx), [source_in, split_in, label_in, generator_in, *attr_filters],
                      [gallery], api_name="dataset_samples", **_CPU)
    eval_btn.click(bind(dataset_evaluate, ctx), [source_in, split_in, model_in, n_in],
                   [metrics_json, metrics_md, confusion_plot, roc_plot], api_name="dataset_evaluate", **_CPU)
    return DatasetTab(model_choice=model_in)
