"""Caption metrics (METEOR, CIDEr) through pycocoevalcap, with its PTB tokenizer, as in the COCO caption protocol.

pycocoevalcap is an optional dependency (the ``eval`` extra) and needs a ``java`` executable on the PATH: the PTB
tokenizer and METEOR run as Java programs. CIDEr's document frequencies come from the references of the images
scored together, so the captions of a whole evaluation must be scored in one call.
"""

from __future__ import annotations

import shutil
from collections.abc import Hashable, Mapping, Sequence

SUPPORTED_CAPTION_METRICS: tuple[str, ...] = ("METEOR", "CIDEr")


def caption_metrics(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    metrics: Sequence[str] = SUPPORTED_CAPTION_METRICS,
) -> dict[str, float]:
    """Score one predicted caption per image against that image's reference captions.

    Args:
        predictions: ``{image_id: caption}``.
        references: ``{image_id: [reference caption, ...]}`` with the same image ids.
        metrics: any of ``"METEOR"``, ``"CIDEr"``.
    Returns:
        ``{metric: score}`` with pycocoevalcap's corpus-level scores (METEOR in [0, 1]; CIDEr-D unbounded, ~1 for
        good captions).
    """
    unknown = [m for m in metrics if m not in SUPPORTED_CAPTION_METRICS]
    if unknown:
        raise ValueError(f"unsupported caption metrics {unknown}; choose from {list(SUPPORTED_CAPTION_METRICS)}")
    missing = [k for k in references if k not in predictions]
    extra = [k for k in predictions if k not in references]
    if missing or extra:
        raise ValueError(
            f"predicted and reference captions must cover the same images: no prediction for {missing[:10]}, "
            f"no reference for {extra[:10]}"
        )
    for image_id, captions in references.items():
        if isinstance(captions, str) or len(captions) == 0:
            raise ValueError(f"image {image_id!r}: references must be a non-empty list of captions")
    if not references:
        return {metric: float("nan") for metric in metrics}
    tokenizer, scorers = _load_pycocoevalcap(metrics)

    # pycocoevalcap's input format: {image_id: [{"caption": text}, ...]}
    tokenized_predictions = tokenizer.tokenize({k: [{"caption": str(predictions[k])}] for k in references})
    tokenized_references = tokenizer.tokenize({k: [{"caption": str(c)} for c in v] for k, v in references.items()})
    results = {}
    for metric in metrics:
        score, _ = scorers[metric]().compute_score(tokenized_references, tokenized_predictions)
        results[metric] = float(score)
    return results


def _load_pycocoevalcap(metrics: Sequence[str]):
    try:
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    except ImportError as error:  # optional dependency
        raise ImportError(
            "caption metrics need pycocoevalcap: pip install 'pycocoevalcap>=1.2' (and a Java runtime)"
        ) from error
    if shutil.which("java") is None:
        raise RuntimeError("caption metrics need a 'java' executable on the PATH (OpenJDK 11+ works)")
    return PTBTokenizer(), {"METEOR": Meteor, "CIDEr": Cider}
