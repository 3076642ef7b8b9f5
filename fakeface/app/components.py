"""Gradio pieces of the app that stock Gradio does not have: an image input that keeps the bytes."""
from __future__ import annotations

import base64
import contextlib
import html
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes

import gradio as gr

from fakeface.utils.constants import MAX_UPLOAD_BYTES

__all__ = ["OriginalImage", "user_error"]


def user_error(message: str, title: str = "Error") -> gr.Error:
    """A ``gr.Error`` for an expected problem: message HTML-escaped (Gradio renders it as HTML), no traceback."""
    return gr.Error(html.escape(message, quote=False), title=title, print_exception=False)


@contextlib.contextmanager
def _no_type_stub():
    """Define a component class without Gradio writing ``<module>.pyi`` beside this file.

    Gradio's component metaclass writes (and later only partly updates) a
    stub copy of the defining module, meant for custom-component packages;
    here it would be a stale duplicate of this source inside the package.
    """
    from gradio import component_meta

    original = getattr(component_meta, "create_or_modify_pyi", None)
    if original is not None:
        component_meta.create_or_modify_pyi = lambda *args, **kwargs: None
    try:
        yield
    finally:
        if original is not None:
            component_meta.create_or_modify_pyi = original


with _no_type_stub():
    class OriginalImage(gr.Image):
        """``gr.Image`` whose callback gets the uploaded file exactly as sent.

        Stock ``gr.Image`` opens the file with PIL in its preprocessing (a bad
        file fails there with PIL's message, not ours) and, for mode changes,
        re-encodes it, which drops C2PA and EXIF. This passes the path through
        untouched; :func:`fakeface.data.images.load_image` does all decoding. It
        renders with the stock image component (``is_template``).
        """

        is_template = True

        def preprocess(self, payload: Any) -> str | None:
            if payload is None:
                return None
            url = getattr(payload, "url", None)
            if url and url.startswith("data:"):
                return _save_data_url(url, self.GRADIO_CACHE)
            if not getattr(payload, "path", None):
                raise user_error("The image did not arrive; please upload it again.")
            return str(payload.path)


def _save_data_url(url: str, cache_dir: str) -> str:
    """An inline ``data:`` image (some paste and webcam paths), saved byte for byte."""
    header, _, encoded = url.partition(",")
    if len(encoded) > MAX_UPLOAD_BYTES * 4 // 3 + 4:
        raise user_error(f"The image is too large; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB.")
    try:
        data = base64.b64decode(encoded, validate=True) if ";base64" in header else unquote_to_bytes(encoded)
    except ValueError:
        raise user_error("The pasted image could not be read (malformed data URL).") from None
    folder = Path(cache_dir) / "pasted"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"pasted-{uuid.uuid4().hex}"
    path.write_bytes(data)
    return str(path)
