"""The fakeface Space: a Gradio app that tells real faces from AI-generated ones.

Configuration comes from the environment (Space variables and secrets):
FAKEFACE_MODEL (Hub ids or folders, comma-separated), FAKEFACE_DATASET,
OPENAI_API_KEY (optional), FAKEFACE_DEMO_BANNER, GRADIO_SERVER_NAME/PORT.
All logic lives in ``fakeface.app.layout`` and ``fakeface.serving.core``.
"""
import logging

from fakeface.app.layout import build_app, launch_app

demo = build_app()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    launch_app(demo)
