"""The Batch tab: many files -> a table and a CSV."""
from __future__ import annotations

from typing import Any

import gradio as gr

from fakeface.app.common import CPU_CONCURRENCY, CPU_LANE, AppContext, bind, new_output_path, user_errors
from fakeface.serving.batch import analyze_files, batch_columns, write_rows_csv
from fakeface.serving.errors import AppError

__all__ = ["build_batch_tab", "detect_batch"]


@user_errors
def detect_batch(ctx: AppContext, files: list[str] | None, progress=gr.Progress()):
    """``/detect_batch``: a photo row per file and a row per face (bad files get an error row); table and CSV path."""
    if not files:
        raise AppError("Add some image files first.", kind="no_input")
    paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in files]
    rows = analyze_files(paths, ctx.models(), progress=lambda i, n, name: progress((i, n), desc=f"{name}"))
    csv_path = write_rows_csv(rows, new_output_path(ctx.output_dir, "fakeface-results", ".csv"))
    columns = batch_columns(rows)
    table = {"headers": columns, "data": [[_cell(row.get(c)) for c in columns] for row in rows]}
    return table, str(csv_path)


def _cell(value: Any) -> Any:
    return "" if value is None else value


def build_batch_tab(ctx: AppContext) -> None:
    with gr.Tab("Batch", id="batch"):
        gr.Markdown("Score many images at once. Each file is analysed like a single upload (without "
                    "Grad-CAM and the robustness check): a **photo** row with its verdict (from its most "
                    "suspicious face, or from the whole image when no face was found), then a **face N** row per "
                    "face with its box (x0, y0, x1, y1) and its own verdict. Files that cannot be read get an "
                    "error row.")
        files_in = gr.File(file_count="multiple", type="filepath", label="Images")
        button = gr.Button("Analyze all", variant="primary")
        table = gr.Dataframe(label="Results", interactive=False, wrap=True)
        csv_out = gr.File(label="Download CSV", interactive=False)
    button.click(bind(detect_batch, ctx), [files_in], [table, csv_out], api_name="detect_batch",
                 concurrency_id=CPU_LANE, concurrency_limit=CPU_CONCURRENCY)
