"""The fakeface Space: a Gradio app that tells real faces from AI-generated ones.

Configuration comes from the environment (Space variables and secrets):
FAKEFACE_MODEL (Hub ids or folders, comma-separated), FAKEFACE_DATASET,
OPENAI_API_KEY (optional), FAKEFACE_DEMO_BANNER, GRADIO_SERVER_NAME/PORT.
All logic lives in ``fakeface.app`` and ``fakeface.serving``; ``fakeface-app`` runs the same.
"""
from fakeface.app.layout import build_app, launch_app
from fakeface.cli.app import configure_logging

demo = build_app()

if __name__ == "__main__":
    configure_logging()
    launch_app(demo)
