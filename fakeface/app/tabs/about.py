"""The About tab (the model card summary) and the app's status, shown in the banner and here."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from fakeface.app.common import AppContext
from fakeface.app.render import render_about, render_banner, render_model_cards, render_models_line
from fakeface.serving.release import describe_release

__all__ = ["AboutTab", "build_about_tab", "status"]

API_HELP = """### Use it from Python

Every action is an API endpoint (see "Use via API" at the bottom of the page):

```python
from gradio_client import Client, handle_file

client = Client("http://127.0.0.1:7860")          # or "org/space-name"
result, gradcam = client.predict(handle_file("face.jpg"), True, True, api_name="/detect")
print(result["verdict"], result["p_fake"], result["provenance"]["c2pa"]["status"])
verdict = client.predict(handle_file("face.jpg"), api_name="/verdict")   # the verdict only, fastest
```

Endpoints: `/detect`, `/verdict`, `/detect_batch`, `/generate`, `/dataset_load`, `/dataset_samples`,
`/dataset_evaluate`, `/status`.
"""


def status(ctx: AppContext):
    """``/status``: the models' state (JSON) and the page's banner, models line, About text, model choice, cards."""
    state = ctx.registry.status()
    releases = [describe_release(m) for m in ctx.registry.models]
    names = [m["name"] for m in state["models"]]
    choice = gr.update(choices=names, value=names[0] if names else None)
    return (state, render_banner(state), render_models_line(state), render_about(state, releases), choice,
            render_model_cards(releases))


@dataclass
class AboutTab:
    about: gr.Markdown
    cards: gr.Markdown


def build_about_tab(ctx: AppContext) -> AboutTab:
    with gr.Tab("About", id="about"):
        about_md = gr.Markdown("Loading…", label="about")
        with gr.Accordion("The full model card", open=False):
            cards_md = gr.Markdown("", label="model cards")
        gr.Markdown(API_HELP)
    return AboutTab(about=about_md, cards=cards_md)
