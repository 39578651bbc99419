"""A self-contained HTML report of one memorised stream: per clip a few frame thumbnails, the
ground-truth facts and the memory written; then every question with the answer given; then the
Acc/Cov/Prec table. Images are inlined as base64 PNGs, so the file can be mailed or opened anywhere."""

from __future__ import annotations

import base64
import html
import io
import os

import numpy as np
from PIL import Image

from taskmem_jax.io import atomic_write_text

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; font-size: 14px; }
th { background: #f3f3f3; }
img { image-rendering: pixelated; margin-right: 4px; }
.ok { color: #176f2c; } .wrong { color: #b00020; } .abstain { color: #777; }
"""


def _png(frame: np.ndarray, scale: int) -> str:
  image = Image.fromarray(np.asarray(frame, np.uint8)).resize(
      (frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
  buffer = io.BytesIO()
  image.save(buffer, format="PNG")
  return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _png_file(path: str) -> str:
  """An <img> of a PNG file, inlined (the report stays one file)."""
  with open(path, "rb") as f:
    return f"<img style='max-width:100%' src='data:image/png;base64,{base64.b64encode(f.read()).decode()}'>"


def write_report(path: str | os.PathLike, *, title: str, summary: dict[str, str], clips: list[dict],
                 questions: list[dict], table_rows: list[dict], scale: int = 2,
                 sections: list[tuple[str, str, str | None]] = (), table_image: str | None = None) -> None:
  """clips: {"clip", "span", "frames" (uint8 [k, H, W, 3]), "facts" [str], "memory" (str or None)};
  questions: {"task", "text", "options" [str], "answer", "predicted" (letter or None)};
  table_rows: {"task", "acc", "cov", "prec", "n"} with fractions in [0, 1];
  sections: extra (heading, preformatted text, PNG file path or None) after the table, e.g. Phase Two;
  table_image: a PNG of the table (eval.plots.plot_tasks), shown under it and linked by relative path."""
  esc = html.escape
  out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
         f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1><table>"]
  out += [f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in summary.items()]
  out.append("</table><h2>Acc / Cov / Prec</h2><table><tr><th>task</th><th>n</th><th>Acc</th><th>Cov</th>"
             "<th>Prec</th></tr>")
  for row in table_rows:
    out.append(f"<tr><td>{esc(row['task'])}</td><td>{row['n']}</td>"
               + "".join(f"<td>{100 * row[k]:.1f}</td>" for k in ("acc", "cov", "prec")) + "</tr>")
  out.append("</table>")
  if table_image:
    link = os.path.relpath(table_image, os.path.dirname(os.path.abspath(path)))
    out.append(f"<p><a href='{esc(link)}'>{_png_file(table_image)}</a></p>")
  for heading, text, image in sections:
    out.append(f"<h2>{esc(heading)}</h2><pre>{esc(text)}</pre>")
    if image:
      out.append(_png_file(image))
  out.append("<h2>Clips: what happened, what was remembered</h2><table>"
             "<tr><th>clip</th><th>frames</th><th>ground-truth facts</th><th>memory</th></tr>")
  for clip in clips:
    images = "".join(f"<img src='{_png(f, scale)}'>" for f in clip["frames"])
    facts = "<br>".join(esc(f) for f in clip["facts"]) or "<i>none</i>"
    memory = esc(clip["memory"]) if clip["memory"] else "<i class='abstain'>no memory</i>"
    out.append(f"<tr><td>{clip['clip']}<br>{esc(clip['span'])}</td><td>{images}</td><td>{facts}</td>"
               f"<td>{memory}</td></tr>")
  out.append("</table><h2>Questions</h2><table><tr><th>task</th><th>question</th><th>options</th>"
             "<th>answer</th><th>given</th></tr>")
  for q in questions:
    given = q["predicted"]
    css, shown = ("abstain", "abstained") if given is None else (("ok", given) if given == q["answer"] else
                                                                 ("wrong", given))
    options = "<br>".join(f"{'ABCD'[i]}. {esc(o)}" for i, o in enumerate(q["options"]))
    out.append(f"<tr><td>{esc(q['task'])}</td><td>{esc(q['text'])}</td><td>{options}</td><td>{q['answer']}</td>"
               f"<td class='{css}'>{shown}</td></tr>")
  out.append("</table></body></html>")
  atomic_write_text(path, "\n".join(out))
