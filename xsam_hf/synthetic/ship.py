"""Ship a trained synthetic-world model as the package's embedded default (``xsam_hf/assets/default_model/``).

``python -m xsam_hf.synthetic.ship RUN_DIR [--dest DIR]`` takes the last stage of a
``python -m xsam_hf.synthetic.train_default`` run (``RUN_DIR/results.json`` names it), saves model and processor with
``save_pretrained`` (safetensors) and writes a model card (``README.md``) with the run's results table, plus the run's
``results.json``. Training files (optimizer state, trainer logs) stay behind, so the folder is a few MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from ..default_model import DEFAULT_MODEL_DIR
from .train_default import RECIPES_DIR, results_markdown

CARD = """# X-SAM world (the embedded default model of xsam-hf)

A {parameters:.1f} M-parameter X-SAM (`world` preset: SigLIP, SAM ViT, Phi-3-style LLM and Mask2Former decoder, all
small and trained from scratch) trained on CPU on the package's synthetic world (`xsam_hf/synthetic/`): 128 px
scenes of up to six coloured shapes over sky, ground and water. It is what `xsam segment`, the pipeline and
`xsam demo` use when no model is given, so that every task works offline.

It knows the world only: the classes {classes}; the colours, sizes and relations of the world's referring and
reasoning language; short captions and chat answers about such scenes. On a photo it still runs and returns masks,
but they mean nothing: give `--model` a real checkpoint for photos.

## Results on the world's validation split

{table}
## Reproduce

```bash
python -m xsam_hf.synthetic.train_default --recipe {recipe} --output RUN
python -m xsam_hf.synthetic.ship RUN
```
"""


def portable(value: Any, run_dir: Path) -> Any:
    """``value`` with every path inside ``run_dir`` made relative to it (the shipped results name no local folder)."""
    if isinstance(value, dict):
        return {key: portable(item, run_dir) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item, run_dir) for item in value]
    if isinstance(value, str):
        for root in {str(run_dir), str(run_dir.resolve())}:
            if value.startswith(root + "/"):
                return value[len(root) + 1:]
    return value


def recipe_name(recipe: str) -> str:
    """A recipe given as a file with the same settings as a packaged recipe is shipped under the packaged name."""
    path = Path(recipe)
    if path.suffix and path.is_file():
        settings = yaml.safe_load(path.read_text(encoding="utf-8"))
        for packaged in sorted(RECIPES_DIR.glob("*.yaml")):
            if yaml.safe_load(packaged.read_text(encoding="utf-8")) == settings:
                return packaged.stem
    return recipe


def ship(run_dir: str | Path, dest: str | Path = DEFAULT_MODEL_DIR) -> Path:
    """Copy the run's final model into ``dest`` (replacing what is there); returns ``dest``."""
    from ..modeling.modeling_xsam import XSamForSegmentation
    from ..processing import XSamProcessor
    from .vocabulary import CLASS_NAMES

    run_dir, dest = Path(run_dir), Path(dest)
    results: dict[str, Any] = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    final = Path(results["final"])
    if not final.is_absolute() and not final.exists():
        final = run_dir / final
    model = XSamForSegmentation.from_pretrained(final)
    processor = XSamProcessor.from_pretrained(final)
    if dest.exists():
        shutil.rmtree(dest)
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    recipe = results.get("recipe", "default")
    packaged = recipe_name(recipe)  # before `portable`: a recipe file inside the run must still be found
    results = portable(results, run_dir)
    if packaged != recipe:
        results["recipe"] = packaged
    # the table from the shipped results (not the run's RESULTS.md), so the card names what results.json names
    (dest / "README.md").write_text(CARD.format(parameters=parameters, classes=", ".join(CLASS_NAMES),
                                                table=results_markdown(results), recipe=results["recipe"]),
                                    encoding="utf-8")
    (dest / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--dest", default=str(DEFAULT_MODEL_DIR))
    args = parser.parse_args(argv)
    dest = ship(args.run_dir, args.dest)
    size = sum(f.stat().st_size for f in dest.iterdir()) / 2**20
    print(f"shipped {args.run_dir} -> {dest} ({size:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
