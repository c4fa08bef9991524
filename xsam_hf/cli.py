"""The `xsam` command: `xsam segment | train | eval | convert | demo | synth`.

Each subcommand's work lives in its own module; this file only parses arguments and dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

# subcommand -> (module, function taking argv); imported only when used, so `xsam segment` stays light.
DELEGATED_COMMANDS = {
    "train": ("xsam_hf.training.train", "main", "Train a stage from a YAML recipe: xsam train CONFIG [key=value ...]"),
    "eval": ("xsam_hf.evaluation.runner", "main", "Evaluate a model on a data set: xsam eval --help"),
    "convert": ("xsam_hf.convert", "main", "Convert an official X-SAM checkpoint: xsam convert --help"),
    "demo": ("xsam_hf.demo.app", "main", "Serve the web demo on 127.0.0.1: xsam demo --help"),
    "synth": ("xsam_hf.synthetic.__main__", "main", "Write the synthetic world's data sets: xsam synth --help"),
}


def _pairs(text: str, size: int, what: str) -> tuple[float, ...]:
    values = [v for v in text.replace(" ", "").split(",") if v]
    if len(values) != size:
        raise argparse.ArgumentTypeError(f"{what} needs {size} comma-separated numbers, got {text!r}.")
    try:
        return tuple(float(v) for v in values)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{what} must be numbers, got {text!r}.") from error


def _point(text: str) -> tuple[float, ...]:
    return _pairs(text, 2, "--point X,Y")


def _box(text: str) -> tuple[float, ...]:
    return _pairs(text, 4, "--box X0,Y0,X1,Y1")


def _scribble(text: str) -> list[tuple[float, ...]]:
    return [_pairs(p, 2, "--scribble point") for p in text.split(";") if p.strip()]


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def load_image(spec: str):
    """A path, `sample:world` (the synthetic-world scene shipped with the package) or `skimage:NAME` (a photo bundled
    with scikit-image, e.g. `skimage:astronaut`)."""
    from .processing import load_image as load_any

    if spec == "sample:world":
        from .synthetic.sample import sample_image_path

        return load_any(str(sample_image_path()))
    if spec.startswith("sample:"):
        raise SystemExit(f"Unknown sample image {spec!r}; the package ships sample:world.")
    if spec.startswith("skimage:"):
        try:
            import skimage.data
        except ImportError as error:
            raise SystemExit("skimage: images need scikit-image: pip install scikit-image") from error
        name = spec.split(":", 1)[1]
        if not hasattr(skimage.data, name):
            raise SystemExit(f"scikit-image has no sample image {name!r}.")
        return load_any(getattr(skimage.data, name)())
    if not Path(spec).is_file():
        raise SystemExit(f"Image not found: {spec}")
    return load_any(spec)


def _segment_parser(sub) -> None:
    p = sub.add_parser("segment", help="Segment an image with any X-SAM task; writes PREFIX.png and PREFIX.json.")
    p.add_argument("--image", required=True,
                   help="image path, sample:world (the shipped synthetic scene), or skimage:NAME (e.g. skimage:astronaut)")
    p.add_argument("--task", default="panoptic",
                   help="panoptic | semantic | instance | open_vocabulary | referring | reasoning | interactive | "
                        "vgd | gcg | chat")
    p.add_argument("--classes", help='comma-separated category names, e.g. "person,dog,grass" (default with the '
                   "embedded model: the synthetic world's classes)")
    p.add_argument("--stuff", help="comma-separated names among --classes that are stuff (merged per class)")
    p.add_argument("--prompt", action="append", help="referring expression / reasoning query / chat question "
                   "(repeat for several expressions)")
    p.add_argument("--point", type=_point, action="append", help="X,Y in original-image pixels (repeatable)")
    p.add_argument("--box", type=_box, action="append", help="X0,Y0,X1,Y1 in original-image pixels (repeatable)")
    p.add_argument("--scribble", type=_scribble, action="append", help='"X,Y;X,Y;..." polyline (repeatable)')
    p.add_argument("--mask", action="append", help="PNG mask of the image's size, nonzero = prompt (repeatable)")
    p.add_argument("--prompt-image", help="image the visual prompts are drawn on (cross-image VGD)")
    p.add_argument("--names", help="comma-separated names for the VGD prompts")
    p.add_argument("--model", help="checkpoint folder or Hub id (default: the embedded default model)")
    p.add_argument("--threshold", type=float, help="score threshold (default 0.5, for people looking)")
    p.add_argument("--mask-threshold", type=float)
    p.add_argument("--max-new-tokens", type=int, default=128, help="GCG / chat answer length")
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", required=True, help="output prefix: writes PREFIX.png (overlay) and PREFIX.json")


def _segment(args) -> int:
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    from .default_model import RANDOM_WEIGHTS_NOTICE, load_model
    from .pipelines import GENERATIVE_TASKS, PIPELINE_TASK, TASK_ALIASES, segment_record
    from .processing.prompts import GENERIC_TASKS
    from .visualization import draw_overlay

    image = load_image(args.image)
    prompt_image = load_image(args.prompt_image) if args.prompt_image else None
    masks = [np.asarray(Image.open(m).convert("L")) > 0 for m in args.mask or ()]
    loaded = load_model(args.model, device=args.device)
    if loaded.random_weights:
        print(f"WARNING: {RANDOM_WEIGHTS_NOTICE}", file=sys.stderr)
    segmenter = pipeline(PIPELINE_TASK, model=loaded.model, processor=loaded.processor, device=args.device)
    task = TASK_ALIASES.get(args.task, args.task)
    if task in GENERIC_TASKS and args.classes is None and loaded.default_classes:
        args.classes, args.stuff = ",".join(loaded.default_classes), ",".join(loaded.default_stuff_classes)
    prompt = args.prompt[0] if args.prompt and (len(args.prompt) == 1 or task != "referring") else args.prompt
    call = dict(
        task=task, classes=_names(args.classes), stuff_classes=_names(args.stuff), prompt=prompt,
        points=args.point, boxes=args.box, scribbles=args.scribble, masks=masks or None, prompt_image=prompt_image,
        names=_names(args.names),
    )
    call = {k: v for k, v in call.items() if v is not None}
    post = {"threshold": args.threshold, "mask_threshold": args.mask_threshold}
    post = {k: v for k, v in post.items() if v is not None}
    if task in GENERATIVE_TASKS:
        post["max_new_tokens"] = args.max_new_tokens
    try:
        result = segmenter(image, **call, **post)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    text = result["generated_text"] if task in GENERATIVE_TASKS else None
    segments = result["segments"] if task in GENERATIVE_TASKS else result

    prefix = Path(args.output)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    draw_overlay(image, segments, caption=text).save(prefix.with_suffix(".png"))
    record = {
        "image": args.image,
        "task": task,
        "model": loaded.source,
        "random_weights": loaded.random_weights,
        "image_size": [image.height, image.width],
        "generated_text": text,
        "segments": [segment_record(s) for s in segments],
    }
    prefix.with_suffix(".json").write_text(json.dumps(record, indent=2))
    print(f"{len(segments)} segments -> {prefix.with_suffix('.png')} and {prefix.with_suffix('.json')}")
    if text is not None:
        print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="xsam", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _segment_parser(sub)
    for name, (_, _, help_text) in DELEGATED_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if argv and argv[0] in DELEGATED_COMMANDS:
        module_name, function, _ = DELEGATED_COMMANDS[argv[0]]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            raise SystemExit(f"`xsam {argv[0]}` is not available in this version yet.") from error
        return getattr(module, function)(argv[1:]) or 0
    args = parser.parse_args(argv)
    return _segment(args)


if __name__ == "__main__":
    sys.exit(main())
