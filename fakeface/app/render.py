"""HTML and Markdown for the app's panels, built from :mod:`fakeface.serving` results.

Pure functions (no gradio), so the look can be tested without a server.
Every value that comes from a file or a user (file names, EXIF fields, PNG
text chunks, C2PA claims, prompts) is HTML-escaped: metadata is attacker
controlled.
"""
from __future__ import annotations

import re
from html import escape
from typing import Any, Mapping, NamedTuple, Sequence

from PIL import Image

from fakeface.data.synthetic import SYNTHETIC_NOTICE
from fakeface.faces import draw_face_boxes
from fakeface.modeling.config import Decision
from fakeface.utils.formatting import format_number

_DEFAULT_DECISION = Decision()

VERDICT_STYLE = {
    # verdict -> (headline, colour, background, icon)
    "fake": ("Likely AI-generated", "#b42318", "#fef3f2", "⚠"),
    "real": ("Likely a real photo", "#067647", "#ecfdf3", "✓"),
    "uncertain": ("Uncertain", "#b54708", "#fffaeb", "?"),
}
_CARD = "border-radius:14px;padding:18px 20px;margin:0 0 10px 0;border:1px solid {border};background:{bg};color:#101828"
_MUTED = "color:#475467;font-size:0.92em"
_TABLE = "width:100%;border-collapse:collapse;font-size:0.92em;margin-top:8px"
_CELL = "padding:5px 8px;border-bottom:1px solid #eaecf0;text-align:left;vertical-align:top"


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _pct(p: Any) -> str:
    try:
        return f"{100 * float(p):.1f}%"
    except (TypeError, ValueError):
        return "–"


def _num(value: Any, digits: int = 2) -> str:
    return format_number(value, digits, missing="–")


def render_placeholder(text: str) -> str:
    return f'<div style="{_MUTED};padding:24px 8px;text-align:center">{_e(text)}</div>'


def _probability_bar(p: float, threshold_real: float, threshold_fake: float, colour: str) -> str:
    """A 0-100 % bar of p(fake) with the two thresholds marked (the uncertain band shaded)."""
    p, lo, hi = (max(0.0, min(1.0, float(v))) for v in (p, threshold_real, threshold_fake))
    band = (f'<div title="uncertain band" style="position:absolute;left:{lo * 100:.1f}%;width:{max(0.4, (hi - lo) * 100):.1f}%;'
            'top:0;bottom:0;background:rgba(181,71,8,0.15)"></div>')
    marks = "".join(
        f'<div title="{_e(name)} threshold {v:.2f}" style="position:absolute;left:{v * 100:.1f}%;top:-3px;bottom:-3px;'
        'width:2px;background:#344054"></div>'
        for name, v in (("real", lo), ("fake", hi))
    )
    return (
        '<div style="position:relative;height:12px;border-radius:6px;background:#eaecf0;margin:10px 0 4px 0">'
        f'{band}<div style="position:absolute;left:0;top:0;bottom:0;width:{p * 100:.1f}%;border-radius:6px;'
        f'background:{colour};opacity:0.85"></div>{marks}</div>'
        f'<div style="display:flex;justify-content:space-between;{_MUTED}"><span>real</span>'
        f'<span>p(fake) = {p:.3f}</span><span>fake</span></div>'
    )


def render_verdict(result: Mapping[str, Any]) -> str:
    """The verdict card: headline, calibrated probability with thresholds, every model side by side."""
    verdict = result.get("verdict", "uncertain")
    headline, colour, background, icon = VERDICT_STYLE.get(verdict, VERDICT_STYLE["uncertain"])
    primary = (result.get("models") or [{}])[0]
    calibrated = primary.get("calibrated")
    # Every model row carries its own thresholds; the fallback is the one default Decision, not a local 0.5.
    t_fake = primary.get("threshold_fake", _DEFAULT_DECISION.threshold_fake)
    t_real = primary.get("threshold_real", _DEFAULT_DECISION.threshold_real)
    # Results carry their reason (Decision.reason); one without (an older caller) gets it from its thresholds.
    reason = result.get("reason") or Decision.from_cfg(
        {"threshold_real": t_real, "threshold_fake": t_fake}).reason(result.get("p_fake", 0.0))
    calibration = ("calibrated probability (temperature scaling on validation data)" if calibrated
                   else "uncalibrated score: this model's config has no calibration")
    parts = [
        f'<div style="{_CARD.format(border=colour, bg=background)}">',
        f'<div style="display:flex;align-items:center;gap:12px">'
        f'<div style="font-size:2em;line-height:1;color:{colour}">{icon}</div>'
        f'<div><div style="font-size:1.5em;font-weight:700;color:{colour}" data-testid="verdict">{_e(headline)}</div>'
        f'<div style="{_MUTED}">{_e(result.get("file", ""))} · {_pct(result.get("p_fake"))} probability of being AI-generated</div>'
        '</div></div>',
        _probability_bar(result.get("p_fake", 0.0), t_real, t_fake, colour),
        _reason(verdict, reason, colour, calibration.capitalize()),
        render_experts(result),
    ]
    # How the verdict was reached (from the most suspicious face, no face found, ...) comes first, by the verdict.
    for i, note in enumerate(result.get("notes") or []):
        weight = "font-weight:600;color:#344054" if i == 0 else _MUTED
        parts.append(f'<div style="margin-top:8px;{weight}" data-testid="note">{_e(note)}</div>')
    robustness = result.get("robustness")
    if robustness:
        ok = robustness.get("stable")
        badge_colour = "#067647" if ok else "#b54708"
        parts.append(
            f'<div style="margin-top:8px;font-weight:600;color:{badge_colour}">'
            f'{"Stable verdict" if ok else "Unstable verdict"}</div>'
            f'<div style="{_MUTED}">{_e(robustness.get("summary"))}</div>'
        )
    if not result.get("agreement", True):
        parts.append('<div style="margin-top:8px;font-weight:600;color:#b54708">The models disagree; see the table.</div>')
    rows = result.get("models") or []
    if rows:
        header = "".join(f'<th style="{_CELL}">{h}</th>' for h in ("model", "p(fake)", "verdict", "thresholds (real / fake)", "runtime"))
        body = "".join(
            "<tr>"
            f'<td style="{_CELL}">{_e(r.get("model"))}</td>'
            f'<td style="{_CELL}">{_num(r.get("p_fake"), 3)}</td>'
            f'<td style="{_CELL};font-weight:600;color:{VERDICT_STYLE.get(r.get("verdict"), VERDICT_STYLE["uncertain"])[1]}">{_e(r.get("verdict"))}</td>'
            f'<td style="{_CELL}">{_num(r.get("threshold_real"))} / {_num(r.get("threshold_fake"))}'
            f'{"" if r.get("calibrated") else " (uncalibrated)"}</td>'
            f'<td style="{_CELL}">{_e(r.get("runtime"))}</td>'
            "</tr>"
            for r in rows
        )
        parts.append(f'<table style="{_TABLE}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>')
    parts.append(render_faces(result))
    if result.get("synthetic_model"):
        parts.append(f'<div style="margin-top:10px;{_MUTED}"><b>Demo model:</b> trained on synthetic data, '
                     'not a face-forgery detector. Do not use this verdict to judge real images.</div>')
    parts.append("</div>")
    warnings = result.get("warnings") or []
    if warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
        parts.append(
            f'<div style="{_CARD.format(border="#fec84b", bg="#fffcf5")}">'
            f'<div style="font-weight:600;color:#b54708">This image is far from what the model was trained on</div>'
            f'<ul style="margin:6px 0 0 18px;padding:0">{items}</ul></div>'
        )
    return "".join(parts)


def render_experts(result: Mapping[str, Any]) -> str:
    """A panel release: the sentence on which evidence spoke, and each expert's own p(fake); empty otherwise."""
    experts = result.get("experts")
    if not experts:
        return ""
    cells = " · ".join(f"{_e(name)} expert {_pct(p)}" for name, p in experts.items())
    return (f'<div style="margin-top:8px;font-weight:600;color:#344054" data-testid="evidence">'
            f'{_e(result.get("evidence") or "")}</div>'
            f'<div style="{_MUTED}" data-testid="experts">Each expert alone: {cells}</div>')


def _reason(verdict: str, reason: str, colour: str, calibration: str) -> str:
    """Why this verdict; an abstention says "Uncertain: ..." in bold, where the eye lands after the headline."""
    if verdict == "uncertain":
        return (f'<div style="margin-top:8px;font-weight:600;color:{colour}" data-testid="reason">Uncertain: '
                f'{_e(reason)}</div><div style="{_MUTED};margin-top:6px">{_e(calibration)}.</div>')
    return f'<div style="{_MUTED};margin-top:6px"><span data-testid="reason">{_e(reason)}</span> {_e(calibration)}.</div>'


TOO_SMALL_COLOUR = "#98a2b3"
FACES_MAX_SIDE = 1024      # the annotated photo is shown at most this large (boxes scaled with it)


def _face_colour(face: Mapping[str, Any]) -> str:
    if face.get("too_small"):
        return TOO_SMALL_COLOUR
    return VERDICT_STYLE.get(face.get("verdict"), VERDICT_STYLE["uncertain"])[1]


def _face_label(face: Mapping[str, Any]) -> str:
    if face.get("too_small"):
        return f"{face.get('face')}: too small"
    return f"{face.get('face')}: {face.get('verdict')} {_num(face.get('p_fake'), 2)}"


def render_faces(result: Mapping[str, Any]) -> str:
    """The per-face table (one row per face found, the most suspicious marked); empty when there are none."""
    faces = result.get("faces") or []
    if not faces:
        return ""
    header = "".join(f'<th style="{_CELL}">{h}</th>'
                     for h in ("face", "p(fake)", "verdict", "box (x0, y0, x1, y1)", "notes"))
    rows = []
    for face in faces:
        flags = [text for key, text in (("most_suspicious", "the photo's verdict comes from this face"),
                                        ("too_small", "too small to judge"),
                                        ("cut_by_border", "cut by the photo's border")) if face.get(key)]
        if face.get("verdict") == "uncertain" and face.get("reason"):
            # The photo's own uncertain reason is in the card above: the row points to it rather than repeat it.
            shown_above = face.get("most_suspicious") and result.get("verdict") == "uncertain"
            flags.insert(0, "uncertain: the reason above" if shown_above else f"Uncertain: {face['reason'].rstrip('.')}")
        if face.get("experts"):
            flags.append(" · ".join(f"{name} {_num(p, 2)}" for name, p in face["experts"].items()))
        verdict = "too small" if face.get("too_small") else face.get("verdict")
        weight = "font-weight:700;" if face.get("most_suspicious") else ""
        rows.append(
            f'<tr data-testid="face-row" style="{weight}">'
            f'<td style="{_CELL}"><span style="display:inline-block;width:10px;height:10px;border-radius:2px;'
            f'background:{_face_colour(face)};margin-right:6px"></span>{_e(face.get("face"))}</td>'
            f'<td style="{_CELL}">{_num(face.get("p_fake"), 3)}</td>'
            f'<td style="{_CELL};color:{_face_colour(face)};font-weight:600">{_e(verdict)}</td>'
            f'<td style="{_CELL}">{_e(", ".join(str(v) for v in face.get("box") or []))}</td>'
            f'<td style="{_CELL}">{_e("; ".join(flags))}</td></tr>'
        )
    judged = sum(not f.get("too_small") for f in faces)
    title = f"{len(faces)} face(s) found, {judged} judged"
    return (f'<div style="margin-top:12px;font-weight:600" data-testid="faces-title">{_e(title)}</div>'
            f'<table style="{_TABLE}" data-testid="faces-table"><thead><tr>{header}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


class _Box(NamedTuple):
    box: tuple[int, int, int, int]     # what draw_face_boxes reads from a face


def draw_result_faces(image: Image.Image, result: Mapping[str, Any],
                      max_side: int = FACES_MAX_SIDE) -> Image.Image | None:
    """The photo (at most ``max_side``) with each face's box in its verdict's colour, labelled with p(fake).

    With no face (no face stage, or none found) the whole image was scored: one frame round the photo says so,
    in the photo's verdict colour, so the panel never sits empty beside a verdict. None when nothing was scored.
    """
    faces = result.get("faces") or []
    if not faces and (result.get("mode") != "whole-image" or result.get("p_fake") is None):
        return None
    scale = min(1.0, max_side / max(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
    if not faces:
        whole = {"face": "whole image", "verdict": result.get("verdict"), "p_fake": result.get("p_fake")}
        # Pillow draws a rectangle's outline inwards from its corners: the frame stays on the photo.
        return draw_face_boxes(image, [_Box((0, 0, image.width - 1, image.height - 1))], [_face_label(whole)],
                               [_face_colour(whole)])
    boxes = [_Box(tuple(int(round(v * scale)) for v in face["box"])) for face in faces]
    return draw_face_boxes(image, boxes, [_face_label(f) for f in faces], [_face_colour(f) for f in faces])


def render_facts(result: Mapping[str, Any]) -> str:
    """Image facts: format, size, file size, JPEG quality, decode notes, timings."""
    image = result.get("image") or {}
    rows = [
        ("Format", image.get("format")),
        ("Size", f'{image.get("width")} × {image.get("height")} px ({image.get("megapixels")} MP)'),
        ("File size", f'{(image.get("bytes") or 0) / 1024:.1f} KiB'),
        ("Colour mode", image.get("mode")),
    ]
    if image.get("jpeg_quality") is not None:
        rows.append(("JPEG quality (estimated)", image.get("jpeg_quality")))
    for note in image.get("notes") or []:
        rows.append(("Decoding", note))
    timings = result.get("timings_ms") or {}
    if timings:
        rows.append(("Time", ", ".join(f"{k.removesuffix('_ms')} {v:.0f} ms" for k, v in timings.items())))
    return _kv_table(rows)


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    body = "".join(
        f'<tr><th style="{_CELL};width:34%;font-weight:600">{_e(k)}</th><td style="{_CELL}">{_e(v)}</td></tr>'
        for k, v in rows
    )
    return f'<table style="{_TABLE}">{body}</table>'


_C2PA_STYLE = {
    "trusted": ("#067647", "#ecfdf3"), "valid": ("#067647", "#ecfdf3"), "invalid": ("#b42318", "#fef3f2"),
}


def render_provenance(provenance: Mapping[str, Any] | None) -> str:
    """The provenance panel: C2PA credentials first, then EXIF, text chunks and generator hints."""
    if not provenance:
        return render_placeholder("Provenance was not read.")
    c2pa = provenance.get("c2pa") or {}
    status = c2pa.get("status", "none")
    colour, background = _C2PA_STYLE.get(status, ("#344054", "#f9fafb"))
    parts = [
        f'<div style="{_CARD.format(border=colour, bg=background)}">'
        f'<div style="font-weight:700;color:{colour}">Content credentials (C2PA): {_e(status)}</div>'
        f'<div style="margin-top:4px">{_e(c2pa.get("summary"))}</div>'
    ]
    details = [(label, c2pa.get(key)) for label, key in (
        ("Issuer", "issuer"), ("Signed by", "signer"), ("Signed at", "signed_at"),
        ("Claim generator", "claim_generator"), ("Validation state", "validation_state"), ("Title", "title"),
    ) if c2pa.get(key)]
    if c2pa.get("software_agents"):
        details.append(("Made with", ", ".join(c2pa["software_agents"])))
    if c2pa.get("source_types"):
        details.append(("Declared source", "; ".join(c2pa["source_types"])))
    if c2pa.get("actions"):
        details.append(("Actions", ", ".join(c2pa["actions"])))
    if details:
        parts.append(_kv_table(details))
    parts.append("</div>")
    exif = provenance.get("exif") or {}
    parts.append('<div style="font-weight:600;margin:8px 0 2px 0">EXIF camera data</div>')
    parts.append(_kv_table(list(exif.items())) if exif else
                 f'<div style="{_MUTED}">None. Common for generated images, but also for screenshots and most uploads.</div>')
    text = provenance.get("text_chunks") or {}
    if text:
        parts.append('<div style="font-weight:600;margin:10px 0 2px 0">Text metadata</div>')
        for key, value in text.items():
            parts.append(
                f'<details style="margin:2px 0"><summary><code>{_e(key)}</code> ({len(value)} characters)</summary>'
                f'<pre style="white-space:pre-wrap;word-break:break-word;max-height:220px;overflow:auto;'
                f'background:#f9fafb;padding:8px;border-radius:8px">{_e(value)}</pre></details>'
            )
    hints = provenance.get("generator_hints") or []
    if hints:
        items = "".join(f"<li>{_e(h)}</li>" for h in hints)
        parts.append(f'<div style="font-weight:600;margin:10px 0 2px 0;color:#b54708">Generator hints in the metadata</div>'
                     f'<ul style="margin:2px 0 0 18px;padding:0">{items}</ul>')
    parts.append(f'<div style="{_MUTED};margin-top:10px">Metadata is easy to strip and to forge; only a valid C2PA '
                 'signature binds its claims to these exact bytes. Missing metadata proves nothing.</div>')
    return "".join(parts)


def render_robustness(robustness: Mapping[str, Any] | None) -> str:
    if not robustness:
        return render_placeholder("The robustness check was not run.")
    body = "".join(
        f'<tr><td style="{_CELL}">{_e(c.get("description"))}</td><td style="{_CELL}">{_num(c.get("p_fake"), 3)}</td>'
        f'<td style="{_CELL}">{_e(c.get("verdict"))}</td><td style="{_CELL}">{float(c.get("delta", 0)):+.3f}</td></tr>'
        for c in robustness.get("checks") or []
    )
    colour = "#067647" if robustness.get("stable") else "#b54708"
    header = "".join(f'<th style="{_CELL}">{h}</th>' for h in ("copy", "p(fake)", "verdict", "change"))
    return (f'<div style="font-weight:600;color:{colour}">{_e(robustness.get("summary"))}</div>'
            f'<table style="{_TABLE}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'
            f'<div style="{_MUTED};margin-top:6px">Real photos are recompressed and resized all the time; a verdict '
            'that flips under such everyday changes rests on fragile evidence.</div>')


def render_banner(status: Mapping[str, Any]) -> str:
    """Top-of-page notices: the synthetic-demo warning, models that failed to load, Hub-down notices."""
    parts = []
    if status.get("synthetic_demo"):
        parts.append(
            f'<div style="{_CARD.format(border="#b42318", bg="#fef3f2")}" data-testid="demo-banner">'
            '<b style="color:#b42318">Demo model, synthetic training data.</b> '
            "The detector served here was trained on procedurally generated stand-in images, not on faces. "
            "It demonstrates the pipeline and <b>is not a face-forgery detector</b>: do not use its verdicts to "
            f'judge real images.<div style="{_MUTED};margin-top:4px">{_e(SYNTHETIC_NOTICE)}</div></div>'
        )
    for failure in status.get("failures") or []:
        parts.append(
            f'<div style="{_CARD.format(border="#b54708", bg="#fffaeb")}">'
            f'<b style="color:#b54708">Model {_e(failure.get("source"))} is not available.</b> '
            f'{_e(_sentence(failure.get("problem")))}<div style="margin-top:4px"><b>How to fix:</b> {_e(failure.get("fix"))}</div></div>'
        )
    for model in status.get("models") or []:
        if model.get("notice"):
            parts.append(f'<div style="{_CARD.format(border="#b54708", bg="#fffaeb")}">{_e(model["notice"])}</div>')
        stage = model.get("face_stage") or {}
        if stage.get("used") and not stage.get("available"):
            parts.append(
                f'<div style="{_CARD.format(border="#b54708", bg="#fffaeb")}" data-testid="face-stage-banner">'
                f'<b style="color:#b54708">No face detector for {_e(model.get("name"))}.</b> '
                f'{_e(_sentence(stage.get("problem")))}<div style="margin-top:4px"><b>How to fix:</b> '
                f'{_e(stage.get("fix"))}</div></div>'
            )
    return "".join(parts)


def _sentence(text: Any) -> str:
    text = str(text or "").strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "." if text else ""


def render_models_line(status: Mapping[str, Any]) -> str:
    models = status.get("models") or []
    if not models:
        return f'<div style="{_MUTED}">No detector is loaded.</div>'
    names = ", ".join(_e(m.get("name")) for m in models)
    return f'<div style="{_MUTED}">Serving {len(models)} model(s): {names}</div>'


def render_generated(generated: Mapping[str, Any] | None) -> str:
    if not generated:
        return ""
    rows = [("Model", generated.get("model")), ("Prompt", generated.get("prompt"))]
    if generated.get("revised_prompt"):
        rows.append(("Revised prompt", generated.get("revised_prompt")))
    rows += [("Size / quality", f'{generated.get("size")} / {generated.get("quality")}'),
             ("Paid with", f'{generated.get("key")} OpenAI key')]
    return _kv_table(rows)


def _metric(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if value != value else f"{value:.3f}"


def render_metrics(metrics: Mapping[str, Any]) -> str:
    """Markdown table of an evaluation on a sample."""
    lines = [
        f"**{metrics.get('n')} images** ({metrics.get('n_real')} real, {metrics.get('n_fake')} fake), "
        f"model `{metrics.get('model')}`, verdicts at p(fake) ≥ {_num(metrics.get('threshold'))}.",
        "",
        "| ROC-AUC | AP | accuracy | F1 | fakes caught | reals called fake | ECE |",
        "|---|---|---|---|---|---|---|",
        "| " + " | ".join(_metric(metrics.get(k)) for k in ("roc_auc", "average_precision", "accuracy", "f1", "tpr", "fpr", "ece")) + " |",
    ]
    verdicts = metrics.get("verdicts") or {}
    if verdicts:
        lines += ["", "Verdicts: " + ", ".join(f"{v} {k}" for k, v in verdicts.items()) + "."]
    for note in metrics.get("notes") or []:
        lines += ["", f"_Note: {note}._"]
    return "\n".join(lines)


def render_dataset_summary(source: str, summary: Mapping[str, Any]) -> str:
    lines = [f"**Dataset** `{source}`", "", "| split | rows | real | fake | generators |", "|---|---|---|---|---|"]
    for name, split in (summary.get("splits") or {}).items():
        gens = ", ".join(f"{g} ({n})" for g, n in (split.get("generators") or {}).items())
        lines.append(f"| {name} | {split.get('rows')} | {split.get('real')} | {split.get('fake')} | {gens} |")
    attrs = {k: v for k, v in (summary.get("attributes") or {}).items() if v}
    if attrs:
        lines += ["", "Attributes: " + "; ".join(f"{k}: {', '.join(v[:8])}" for k, v in attrs.items())]
    if any("synthetic" in g for g in summary.get("generators") or []):
        lines += ["", f"> {SYNTHETIC_NOTICE}"]
    return "\n".join(lines)


def render_model_cards(releases: Sequence[Mapping[str, Any]]) -> str:
    """Each release's full model card (README.md), its headings nested under the model's name."""
    parts = []
    for release in releases:
        if release.get("card"):
            card = re.sub(r"(?m)^(#+)", r"##\1", str(release["card"]))
            parts.append(f"## {(release.get('model') or {}).get('name')}\n\n{card}")
    return "\n\n".join(parts) or "No model card ships with the loaded model(s)."


def _fast_path_lines(fast: Mapping[str, Any] | None) -> list[str]:
    """Why the torch model serves when the release ships a graph that was refused (the refusal's own fields)."""
    if not fast or fast.get("served") or fast.get("code") in (None, "absent", "disabled"):
        return []
    check = fast.get("check") or {}
    measured = (f" (reference inputs: max |Δp| {_num(check.get('max_abs_dp'), 3)} here, tolerance "
                f"{_num(check.get('tolerance'), 3)}; {_num(check.get('drift'), 3)} from where it was exported, "
                f"tolerance {_num(check.get('drift_tolerance'), 3)})" if check else "")
    return [f"- **Why torch:** the ONNX fast path was refused (`{fast.get('code')}`): {fast.get('problem')}{measured}. "
            f"{fast.get('fix') or ''}".rstrip()]


def _face_stage_lines(stage: Mapping[str, Any] | None) -> list[str]:
    """Where the face detector comes from, or why photos are scored whole (the status' own fields)."""
    if not stage or not stage.get("used"):
        return []
    if not stage.get("available"):
        return [f"- **Face stage unavailable:** {stage.get('problem')}. {stage.get('fix') or ''}".rstrip()]
    origin = "bundled with the release" if stage.get("origin") == "release" else "from the installed package"
    extra = f" ({stage['problem']})" if stage.get("problem") else ""
    return [f"- **Face detector:** RetinaFace, {origin}, sha256 `{str(stage.get('sha256'))[:12]}…`{extra}"]


def _panel_lines(panel: Mapping[str, Any] | None) -> list[str]:
    """A panel release's experts: what each reads, what it cannot see, its weight in the fusion."""
    if not panel:
        return []
    lines = [f"- **A panel of {len(panel['experts'])} experts**, fused by a monotone logistic regression fitted on "
             f"{panel.get('fusion_source') or 'unrecorded scores'}:"]
    lines += [f"  - *{e['name']}* (weight {_num(e.get('weight'))}): reads {e['sees']}. Cannot see: {e['misses']}."
              for e in panel["experts"]]
    return lines


def _band_line(model: Mapping[str, Any]) -> str:
    """The About tab's account of when the model abstains, from its recorded band (or that it was not measured)."""
    note = f" {_sentence(model['threshold_note'])}" if model.get("threshold_note") else ""
    if model.get("confidently_wrong") is None or model.get("coverage") is None or not model.get("band_source"):
        return f"- **When it abstains:** how often its confident verdicts are wrong was not measured for this release.{note}"
    target = model.get("band_target")
    return (f"- **When it abstains:** the uncertain band was chosen on {model['band_source']}"
            + (f" for at most {100 * float(target):g} % confidently wrong" if target is not None else "")
            + f"; there {100 * float(model['confidently_wrong']):.1f} % of images got a confident wrong verdict and "
            f"{100 * float(model['coverage']):.1f} % a confident verdict at all.{note}")


def render_about(status: Mapping[str, Any], releases: Sequence[Mapping[str, Any]]) -> str:
    """The About tab: per model what it was trained on, measured metrics, scope, limits, revisions."""
    lines = ["## About the detector", ""]
    if not releases:
        lines.append("No model is loaded; the status banner above says why and how to fix it.")
    for release in releases:
        model = release.get("model") or {}
        lines += [f"### {model.get('name')}", ""]
        trained = model.get("trained_on") or {}
        fakes = ", ".join(trained.get("fake_generators") or []) or "unrecorded"
        reals = ", ".join(trained.get("real_sources") or []) or "unrecorded"
        lines += [
            f"- **Architecture:** `{model.get('architecture')}`, input {model.get('input_size')}, "
            f"{model.get('crop_protocol')} with {model.get('test_crops')} test crop(s), runtime {model.get('runtime')}",
            f"- **Model:** `{model.get('source')}`" + (f" at revision `{model.get('revision')}`" if model.get("revision") else ""),
            *_fast_path_lines(model.get("fast_path")),
            *_face_stage_lines(model.get("face_stage")),
            *_panel_lines(model.get("panel")),
            f"- **Trained on:** fakes from {fakes}; real images from {reals}",
            f"- **Dataset:** `{release.get('dataset') or 'unrecorded'}`"
            + (f" at revision `{release['dataset_revision']}`" if release.get("dataset_revision") else ""),
            f"- **Decision:** fake when p(fake) ≥ {_num(model.get('threshold_fake'))}, real when below "
            f"{_num(model.get('threshold_real'))}, uncertain in between"
            + (f"; thresholds chosen for a {100 * float(model['target_fpr']):g} % false-positive rate on validation data"
               if model.get("target_fpr") else "")
            + ("" if model.get("calibrated") else " (**uncalibrated**)"),
            _band_line(model),
        ]
        metrics = release.get("metrics")
        if metrics:
            lines += ["", f"Measured on the held-out test split ({release.get('n_test')} images):", "",
                      "| ROC-AUC | AP | accuracy | F1 | fakes caught | reals called fake | ECE |",
                      "|---|---|---|---|---|---|---|",
                      "| " + " | ".join(_metric(metrics.get(k)) for k in ("roc_auc", "average_precision", "accuracy", "f1", "tpr", "fpr", "ece")) + " |"]
        else:
            lines += ["", "_No test metrics ship with this model (no eval_results.json)._"]
        if model.get("synthetic_training_data"):
            lines += ["", "> **Synthetic training data.** This model demonstrates the pipeline; it is not a face-forgery detector."]
        lines.append("")
    lines += [
        "### Scope and limits",
        "",
        "- The detector knows only the generators and real-image sources it was trained on; newer generators, "
        "other cameras and heavy post-processing (compression, resizing, filters, screenshots) can fool it.",
        "- A verdict is a statistical estimate, not proof. Grad-CAM shows where the evidence came from, not why.",
        "- Missing metadata or content credentials prove nothing; a valid C2PA signature binds its claims to the file.",
        "- Do not use this tool alone to make decisions about people.",
    ]
    return "\n".join(lines)
