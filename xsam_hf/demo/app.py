"""`xsam demo`: every X-SAM task from one web page (Gradio), served on 127.0.0.1 with no network traffic.

The page: upload an image, pick a task, type class names / an expression / a question, or place visual prompts
(click points and boxes on the image, paint scribbles or masks), optionally on a second image for cross-image VGD.
It shows the overlay with its legend, the GCG caption with each phrase in its mask's colour, the chat, and the
result as JSON to download.

Nothing leaves the machine: Gradio's analytics and update check are off, the theme uses system fonts (Gradio's
stock fonts would come from Google Fonts), no share link, no server-side rendering, no MCP server.
"""

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

INSTALL_HINT = 'The demo needs Gradio: pip install "xsam-hf[demo]"'

# Before Gradio is imported: its import-time and launch-time telemetry read these variables.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

try:
    import gradio as gr
except ImportError as error:  # `xsam demo` without the extra: say how to get it, no traceback
    raise SystemExit(INSTALL_HINT) from error
from PIL import Image  # noqa: E402

from ..default_model import LoadedModel  # noqa: E402
from ..pipelines import GENERATIVE_TASKS  # noqa: E402
from .canvas import (  # noqa: E402
    ClickPrompts,
    VisualPromptArguments,
    add_box,
    add_click,
    describe_clicks,
    draw_click_markers,
    gather_visual_prompts,
    parse_dragged_box,
)
from .results import caption_html, legend_html, request_record, result_record  # noqa: E402

logger = logging.getLogger(__name__)

TASK_CHOICES = [
    ("Panoptic", "panoptic"),
    ("Semantic", "semantic"),
    ("Instance", "instance"),
    ("Open vocabulary", "open_vocabulary"),
    ("Referring", "referring"),
    ("Reasoning", "reasoning"),
    ("Interactive", "interactive"),
    ("VGD (visual grounded detection)", "vgd"),
    ("GCG (grounded caption)", "gcg"),
    ("Chat", "conversation"),
]
CLASS_TASKS = ("panoptic", "semantic", "instance", "open_vocabulary")
TEXT_PROMPT_TASKS = ("referring", "reasoning", "conversation")
VISUAL_PROMPT_TASKS = ("interactive", "vgd")
PROMPT_LABELS = {
    "referring": "Referring expression (one per line for several)",
    "reasoning": "Reasoning query",
    "conversation": "Your question",
}
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial",
                "sans-serif"]
SYSTEM_MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
PAGE_CSS = """
.xsam-legend { list-style: none; padding: 0; margin: 0; display: flex; flex-wrap: wrap; gap: 4px 16px; }
.xsam-legend li { display: flex; align-items: center; gap: 6px; }
.xsam-swatch { display: inline-block; width: 14px; height: 14px; border-radius: 3px; }
.xsam-caption mark { padding: 0 2px; border-radius: 3px; color: inherit; }
#input-image img, #prompt-image img { -webkit-user-drag: none; user-select: none; }
"""
# Images whose drags become box prompts, each with the hidden textbox the page's script reports a drag into.
DRAG_TARGETS = {"input-image": "input-image-drag", "prompt-image": "prompt-image-drag"}
# A press-move-release on an image is a box drag once the pointer moved this many CSS pixels; less is a click.
DRAG_MIN_PX = 6
# Gradio's image component reports clicks (select events), not drags, so the page listens itself: a pointer
# pressed on one of the images and released after moving is a box, converted from screen to ORIGINAL-image pixels
# (the image is fitted into its element keeping its aspect ratio, centred, like Gradio's own click mapping) and
# written into that image's hidden textbox, whose change event adds the box on the Python side. The click that the
# browser fires after such a drag is swallowed, so a drag does not also add a point. Inline, no remote script.
DRAG_SCRIPT = """
() => {
  const targets = %(targets)s;
  const minimum = %(minimum)d;
  let pressed = null;
  let swallowClick = false;
  const imageOf = (event) => {
    for (const id of Object.keys(targets)) {
      const image = event.target.closest && event.target.closest(`#${id} img`);
      if (image && image.naturalWidth > 0) return [id, image];
    }
    return null;
  };
  const toImagePixels = (image, clientX, clientY) => {
    const rect = image.getBoundingClientRect();
    const scale = Math.min(rect.width / image.naturalWidth, rect.height / image.naturalHeight);
    const left = rect.left + (rect.width - image.naturalWidth * scale) / 2;
    const top = rect.top + (rect.height - image.naturalHeight * scale) / 2;
    const clamp = (value, high) => Math.min(Math.max(value, 0), high);
    return [clamp((clientX - left) / scale, image.naturalWidth), clamp((clientY - top) / scale, image.naturalHeight)];
  };
  document.addEventListener("dragstart", (event) => { if (imageOf(event)) event.preventDefault(); }, true);
  document.addEventListener("pointerdown", (event) => {
    const hit = event.button === 0 ? imageOf(event) : null;
    pressed = hit ? {id: hit[0], image: hit[1], x: event.clientX, y: event.clientY} : null;
  }, true);
  document.addEventListener("pointerup", (event) => {
    const start = pressed;
    pressed = null;
    if (!start) return;
    if (Math.abs(event.clientX - start.x) < minimum && Math.abs(event.clientY - start.y) < minimum) return;
    swallowClick = true;
    setTimeout(() => { swallowClick = false; }, 0);
    const [x0, y0] = toImagePixels(start.image, start.x, start.y);
    const [x1, y1] = toImagePixels(start.image, event.clientX, event.clientY);
    const field = document.querySelector(`#${targets[start.id]} textarea, #${targets[start.id]} input`);
    if (!field) return;
    // The stamp makes the same box dragged twice still a change.
    field.value = JSON.stringify({box: [x0, y0, x1, y1], stamp: Date.now()});
    field.dispatchEvent(new Event("input", {bubbles: true}));
  }, true);
  document.addEventListener("pointercancel", () => { pressed = null; }, true);  // e.g. a touch became a scroll
  document.addEventListener("click", (event) => {
    if (swallowClick && imageOf(event)) { event.stopPropagation(); event.preventDefault(); }
    swallowClick = false;
  }, true);
}
""" % {"targets": json.dumps(DRAG_TARGETS), "minimum": DRAG_MIN_PX}


def offline_theme() -> gr.themes.Base:
    """Gradio's default look with system fonts only, so the page never asks a font server for anything."""
    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS)


def _split_names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").replace("\n", ",").split(",") if name.strip()]


def _expressions(text: str | None) -> str | list[str] | None:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else lines


def _editor_layers(painting: dict | None) -> list:
    return list((painting or {}).get("layers") or [])


def _blank_editor(background: Image.Image | None) -> dict:
    return {"background": background, "layers": [], "composite": background}


class DemoSession:
    """The model, its pipeline and where downloads go; the event handlers of one app close over it."""

    def __init__(self, loaded: LoadedModel, device: str = "cpu") -> None:
        from transformers import pipeline

        from ..pipelines import PIPELINE_TASK

        self.loaded = loaded
        self.segmenter = pipeline(PIPELINE_TASK, model=loaded.model, processor=loaded.processor, device=device)
        self.download_dir = Path(tempfile.mkdtemp(prefix="xsam-demo-"))

    def segment(self, task: str, image: Image.Image | None, classes_text: str, stuff_text: str, prompt_text: str,
                clicks: ClickPrompts, painting: dict | None, paint_as: str, prompt_image: Image.Image | None,
                prompt_clicks: ClickPrompts, names_text: str, threshold: float, max_new_tokens: int,
                conversation: list[dict], progress: Any = None) -> dict:
        """Run one request; returns the overlay, the texts and the record. Raises ValueError on a bad input."""
        progress = progress or (lambda *args, **kwargs: None)
        if image is None:
            raise ValueError("Upload an image first.")
        progress(0.05, desc="Reading the prompts")
        on_prompt_image = task == "vgd" and prompt_image is not None
        classes = _split_names(classes_text) if task in CLASS_TASKS else None
        stuff_classes = _split_names(stuff_text) if task in CLASS_TASKS else None
        unknown_stuff = sorted(set(stuff_classes or ()) - set(classes or ()))
        if unknown_stuff:
            raise ValueError(f"Stuff classes must be among the classes; not found: {', '.join(unknown_stuff)}.")
        prompt = _expressions(prompt_text) if task in TEXT_PROMPT_TASKS else None
        if task in ("reasoning", "conversation") and isinstance(prompt, list):
            prompt = "\n".join(prompt)
        visual: VisualPromptArguments | None = None
        if task in VISUAL_PROMPT_TASKS:
            canvas_image = prompt_image if on_prompt_image else image
            visual = gather_visual_prompts(prompt_clicks if on_prompt_image else clicks, _editor_layers(painting),
                                           canvas_image.size, "mask" if paint_as == "mask" else "scribble")
        names = _split_names(names_text) if task == "vgd" else None
        turns = None
        if task == "conversation":
            if not prompt:
                raise ValueError("Type a question for the chat.")
            turns = [*conversation, {"role": "user", "content": prompt}]

        call: dict[str, Any] = {"task": task}
        if classes:
            call["classes"] = classes
        if stuff_classes:
            call["stuff_classes"] = stuff_classes
        if prompt and task != "conversation":
            call["prompt"] = prompt
        if turns is not None:
            call["conversation"] = turns
        if visual is not None:
            call.update(visual.as_pipeline_kwargs())
            if on_prompt_image:
                call["prompt_image"] = prompt_image
        if names:
            call["names"] = names
        if task in GENERATIVE_TASKS:
            call["max_new_tokens"] = int(max_new_tokens)
        else:
            call["threshold"] = float(threshold)

        progress(0.2, desc=f"Running X-SAM ({task})")
        result = self.segmenter(image, **call)
        progress(0.85, desc="Drawing the result")
        from ..visualization import draw_overlay

        text = result["generated_text"] if task in GENERATIVE_TASKS else None
        segments = result["segments"] if task in GENERATIVE_TASKS else result
        request = request_record(task, classes, stuff_classes, prompt if turns is None else None, visual, names,
                                 on_prompt_image, conversation=turns)
        record = result_record(request, self.loaded.source, self.loaded.random_weights, image.size,
                               prompt_image.size if on_prompt_image else None, text, segments)
        download = self.download_dir / f"xsam-{task}-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns()}.json"
        download.write_text(json.dumps(record, indent=2))
        overlay = draw_overlay(image, segments, caption=text if task == "gcg" else None)
        answer_turns = [*turns, {"role": "assistant", "content": text}] if turns is not None else conversation
        return {
            "overlay": overlay,
            "legend": legend_html(segments, empty_message=(
                "No grounded segment." if task in GENERATIVE_TASKS else "No segment above the threshold.")),
            "caption": caption_html(text, segments) if task == "gcg" else "",
            "record": record,
            "download": str(download),
            "conversation": answer_turns,
        }


def build_app(loaded: LoadedModel, device: str = "cpu") -> gr.Blocks:
    """The demo page for one loaded model (no launch)."""
    session = DemoSession(loaded, device)

    with gr.Blocks(title="X-SAM demo", analytics_enabled=False) as app:
        gr.Markdown("# X-SAM: any segmentation\nModel: `" + loaded.source + "`")
        if loaded.random_weights:
            from ..default_model import RANDOM_WEIGHTS_NOTICE

            gr.Markdown(f"**Warning:** {RANDOM_WEIGHTS_NOTICE}", elem_id="random-weights-notice")

        original = gr.State(None)
        clicks = gr.State(ClickPrompts())
        prompt_original = gr.State(None)
        prompt_clicks = gr.State(ClickPrompts())
        conversation = gr.State([])

        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Image (click a point, drag a box)", type="pil", format="png",
                                 sources=["upload", "clipboard"], elem_id="input-image", height=420)
                task = gr.Radio(TASK_CHOICES, value="panoptic", label="Task", elem_id="task")
                classes_text = gr.Textbox(label="Class names (comma-separated)", value="person, sky, grass",
                                          elem_id="classes")
                stuff_text = gr.Textbox(label="Stuff classes (among the classes; merged per class)", value="sky",
                                        elem_id="stuff")
                prompt_text = gr.Textbox(label=PROMPT_LABELS["referring"], visible=False, lines=2,
                                         elem_id="prompt")
                with gr.Group(visible=False) as visual_group:
                    click_mode = gr.Radio([("Point", "point"), ("Box (two clicks: opposite corners)", "box")],
                                          value="point", label="A click on the image adds (a drag: a box)",
                                          elem_id="click-mode")
                    clicks_summary = gr.Markdown(describe_clicks(ClickPrompts()), elem_id="clicks-summary")
                    clear_prompts = gr.Button("Clear visual prompts", size="sm", elem_id="clear-prompts")
                    with gr.Accordion("Paint scribbles or masks", open=False):
                        paint_as = gr.Radio([("Scribble (each stroke)", "scribble"), ("Mask (each layer)", "mask")],
                                            value="scribble", label="Painted strokes are", elem_id="paint-as")
                        painting = gr.ImageEditor(
                            label="Paint on the image the prompts refer to", type="pil", format="png",
                            sources=[], transforms=(), layers=True, elem_id="painting",
                            brush=gr.Brush(default_size=12, colors=["#ff2828"], color_mode="fixed"),
                        )
                with gr.Accordion("Cross-image VGD: prompts on a second image", open=False,
                                  visible=False) as cross_group:
                    prompt_image = gr.Image(label="Prompt image (click or drag here; painting switches to it)",
                                            type="pil", format="png", sources=["upload", "clipboard"],
                                            elem_id="prompt-image")
                    prompt_clicks_summary = gr.Markdown(describe_clicks(ClickPrompts()))
                # Rendered but hidden: the page's script writes each dragged box here (see DRAG_SCRIPT).
                image_drag = gr.Textbox(visible="hidden", elem_id=DRAG_TARGETS["input-image"])
                prompt_image_drag = gr.Textbox(visible="hidden", elem_id=DRAG_TARGETS["prompt-image"])
                names_text = gr.Textbox(label="Names for the VGD prompts (comma-separated, optional)",
                                        visible=False, elem_id="names")
                threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Score threshold", elem_id="threshold")
                max_new_tokens = gr.Slider(8, 512, value=64, step=8, label="Answer length (tokens)", visible=False)
                run = gr.Button("Run", variant="primary", elem_id="run")
                status = gr.Markdown("Upload an image, pick a task, then Run.", elem_id="status")
            with gr.Column(scale=1):
                overlay = gr.Image(label="Result", type="pil", format="png", interactive=False, elem_id="overlay")
                legend = gr.HTML(elem_id="legend")
                caption = gr.HTML(elem_id="caption")
                chatbot = gr.Chatbot(label="Chat", visible=False, elem_id="chat", height=320)
                clear_chat = gr.Button("New chat", size="sm", visible=False)
                record_json = gr.JSON(label="Result (JSON)", elem_id="result-json", open=False, max_height=420)
                download = gr.File(label="Download the JSON", interactive=False, elem_id="download")

        def on_task(selected: str):
            return [
                gr.update(visible=selected in CLASS_TASKS),
                gr.update(visible=selected in CLASS_TASKS),
                gr.update(visible=selected in TEXT_PROMPT_TASKS, label=PROMPT_LABELS.get(selected, "Prompt")),
                gr.update(visible=selected in VISUAL_PROMPT_TASKS),
                gr.update(visible=selected == "vgd"),
                gr.update(visible=selected == "vgd"),
                gr.update(visible=selected not in GENERATIVE_TASKS),
                gr.update(visible=selected in GENERATIVE_TASKS),
                gr.update(visible=selected == "conversation"),
                gr.update(visible=selected == "conversation"),
                gr.update(value="Send" if selected == "conversation" else "Run"),
            ]

        task.change(on_task, task, [classes_text, stuff_text, prompt_text, visual_group, cross_group, names_text,
                                     threshold, max_new_tokens, chatbot, clear_chat, run], queue=False)

        # A second click made while the first is still being handled (its marker re-rendering) must reach the image:
        # no progress overlay over the image to swallow it, and not dropped as Gradio's default trigger_mode "once"
        # does (measured in Chromium: either alone loses it). Queued one at a time, each click reads the prompts the
        # one before it stored. Uploads and "Clear visual prompts" join the same queue: run beside it, a click still
        # queued would land after them, on the cleared prompts or the new image.
        one_click_at_a_time = {"trigger_mode": "multiple", "concurrency_id": "clicks", "concurrency_limit": 1,
                               "show_progress": "hidden"}

        def on_upload(uploaded, second):
            empty = ClickPrompts()
            editor = gr.update() if second is not None else _blank_editor(uploaded)
            return uploaded, empty, describe_clicks(empty), editor, [], []

        image.upload(on_upload, [image, prompt_original],
                     [original, clicks, clicks_summary, painting, conversation, chatbot], **one_click_at_a_time)
        image.clear(on_upload, [image, prompt_original],
                    [original, clicks, clicks_summary, painting, conversation, chatbot], **one_click_at_a_time)

        def on_prompt_upload(uploaded, first):
            empty = ClickPrompts()
            return uploaded, empty, describe_clicks(empty), _blank_editor(uploaded if uploaded is not None else first)

        prompt_image.upload(on_prompt_upload, [prompt_image, original],
                            [prompt_original, prompt_clicks, prompt_clicks_summary, painting], **one_click_at_a_time)
        prompt_image.clear(on_prompt_upload, [prompt_image, original],
                           [prompt_original, prompt_clicks, prompt_clicks_summary, painting], **one_click_at_a_time)

        def on_click(clean, placed: ClickPrompts, mode: str, event: gr.SelectData):
            if clean is None:
                raise gr.Error("Upload an image first.")
            x, y = event.index
            placed = add_click(placed, x, y, mode)
            return draw_click_markers(clean, placed), placed, describe_clicks(placed)

        image.select(on_click, [original, clicks, click_mode], [image, clicks, clicks_summary], **one_click_at_a_time)
        prompt_image.select(on_click, [prompt_original, prompt_clicks, click_mode],
                            [prompt_image, prompt_clicks, prompt_clicks_summary], **one_click_at_a_time)

        def on_drag(reported: str, clean, placed: ClickPrompts):
            if clean is None:
                return gr.update(), placed, gr.update()
            box = parse_dragged_box(reported, clean.size)
            if box is None:
                return gr.update(), placed, gr.update()
            placed = add_box(placed, box)
            return draw_click_markers(clean, placed), placed, describe_clicks(placed)

        image_drag.change(on_drag, [image_drag, original, clicks], [image, clicks, clicks_summary],
                          **one_click_at_a_time)
        prompt_image_drag.change(on_drag, [prompt_image_drag, prompt_original, prompt_clicks],
                                 [prompt_image, prompt_clicks, prompt_clicks_summary], **one_click_at_a_time)

        def on_clear_prompts(clean, second_clean):
            empty = ClickPrompts()
            editor_background = second_clean if second_clean is not None else clean
            return (clean, empty, describe_clicks(empty), second_clean, empty, describe_clicks(empty),
                    _blank_editor(editor_background))

        clear_prompts.click(on_clear_prompts, [original, prompt_original],
                            [image, clicks, clicks_summary, prompt_image, prompt_clicks, prompt_clicks_summary,
                             painting], **one_click_at_a_time)
        clear_chat.click(lambda: ([], []), None, [conversation, chatbot], queue=False)

        def on_run(task_value, clean, classes_value, stuff_value, prompt_value, placed, painted, paint_kind,
                   second_clean, second_placed, names_value, threshold_value, tokens, turns,
                   progress=gr.Progress()):
            started = time.monotonic()
            try:
                shown = session.segment(task_value, clean, classes_value, stuff_value, prompt_value, placed, painted,
                                        paint_kind, second_clean, second_placed, names_value, threshold_value,
                                        tokens, turns, progress)
            except ValueError as error:
                # A wrong or missing input: say what to fix (toast and status line), keep the previous result.
                gr.Warning(str(error), title="Cannot run")
                return (*[gr.update()] * (len(run_outputs) - 1), f"**Cannot run:** {error}")
            except Exception as error:  # noqa: BLE001 - the page gets one readable line, the log the traceback
                logger.exception("The demo request failed")
                raise gr.Error(f"The model failed on this request ({type(error).__name__}: {error}).",
                               print_exception=False) from None
            chat_update = shown["conversation"]
            prompt_update = "" if task_value == "conversation" else gr.update()
            count = len(shown["record"]["segments"])
            seconds = time.monotonic() - started
            status = f"Done: {task_value}, {count} segment{'s' if count != 1 else ''} in {seconds:.1f} s."
            return (shown["overlay"], shown["legend"], shown["caption"], shown["record"], shown["download"],
                    chat_update, chat_update, prompt_update, status)

        run_inputs = [task, original, classes_text, stuff_text, prompt_text, clicks, painting, paint_as,
                      prompt_original, prompt_clicks, names_text, threshold, max_new_tokens, conversation]
        run_outputs = [overlay, legend, caption, record_json, download, conversation, chatbot, prompt_text, status]
        run.click(on_run, run_inputs, run_outputs)
        prompt_text.submit(on_run, run_inputs, run_outputs)
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> None:
    """Serve the page locally: no share link, no SSR node server, no PWA, no MCP server, no remote fonts."""
    app.queue(default_concurrency_limit=1)  # one model, one request at a time
    app.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, show_error=True, ssr_mode=False,
        pwa=False, mcp_server=False, enable_monitoring=False, footer_links=[], theme=offline_theme(),
        css=PAGE_CSS, js=DRAG_SCRIPT, prevent_thread_lock=not block, quiet=not block,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xsam demo", description="Serve the X-SAM web demo on this machine.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--model", help="checkpoint folder or Hub id (default: the embedded default model)")
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """`xsam demo [--host H] [--port P] [--model DIR_OR_ID] [--device D]`; serves until interrupted."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from ..default_model import RANDOM_WEIGHTS_NOTICE, load_model

    loaded = load_model(args.model, device=args.device)
    if loaded.random_weights:
        print(f"WARNING: {RANDOM_WEIGHTS_NOTICE}", file=sys.stderr)
    print(f"X-SAM demo on http://{args.host}:{args.port} (model: {loaded.source})", flush=True)
    launch(build_app(loaded, args.device), args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
