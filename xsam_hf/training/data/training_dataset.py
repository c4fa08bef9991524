"""Training view of one source: per-sample sampling seeded once, broken records skipped, images optionally opened."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .sampling import refseg_tuple_count, training_samples
from .schema import XSamExample
from .skips import CorruptRecordError, SkipCounter
from .source import ExampleSource

logger = logging.getLogger(__name__)


@dataclass
class TrainingSample:
    example: XSamExample
    image: Image.Image | None = None


def open_rgb_image(example: XSamExample) -> Image.Image | None:
    """Decode the image fully (so a truncated file fails here, not inside the collator) and check its size."""
    if example.image_path is None:
        return None
    with Image.open(example.image_path) as image:
        rgb = image.convert("RGB")
    if example.image_size is not None and (rgb.height, rgb.width) != tuple(example.image_size):
        raise CorruptRecordError(f"{example.image_path} is {rgb.height}x{rgb.width}, annotation says "
                                 f"{example.image_size[0]}x{example.image_size[1]}")
    return rgb


class XSamTrainingDataset:
    """Map-style dataset of sampled training examples of one source.

    * Sample ``i`` draws its classes / sentences / prompt types with ``default_rng([seed, record_index])``: the draw
      is made once per sample and repeats exactly in every epoch, process and worker.
    * A refseg image expands into several samples (one per sentence tuple); the expansion is counted when the dataset
      is built, which builds each refseg example once.
    * A record whose annotation or image is broken is counted in ``counter`` and replaced by the next index of the
      same source (so a source-grouped batch stays single-source); after ``max_retries`` in a row it raises.
      A failed index is remembered (per process: each DataLoader worker keeps its own set) and not read again, so
      the counter counts each broken record once.
    """

    def __init__(self, source: ExampleSource, *, seed: int = 0, load_images: bool = False,
                 counter: SkipCounter | None = None, max_retries: int = 32) -> None:
        self.source = source
        self.seed = seed
        self.load_images = load_images
        self.counter = counter if counter is not None else source.counter
        self.max_retries = max_retries
        self.index = self._build_index()
        self._known_bad: set[int] = set()
        if not self.index:
            logger.warning("source %s has no usable sample", source.name)

    @property
    def name(self) -> str:
        return self.source.name

    def _build_index(self) -> list[tuple[int, int]]:
        if self.source.task != "refseg":
            return [(record, 0) for record in range(len(self.source))]
        index = []
        for record in range(len(self.source)):
            try:
                count = refseg_tuple_count(self.source[record])
            except CorruptRecordError as error:
                self.counter.record(self.source.name, "build_failed", str(record), error)
                continue
            index.extend((record, variant) for variant in range(count))
        return index

    def __len__(self) -> int:
        return len(self.index)

    def rng_for(self, record: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, record])

    def sample(self, position: int) -> XSamExample:
        record, variant = self.index[position]
        samples = training_samples(self.source[record], self.rng_for(record))
        if variant >= len(samples):
            raise CorruptRecordError(f"{self.source.name}[{record}] has {len(samples)} samples, wanted #{variant}")
        return samples[variant]

    def __getitem__(self, position: int) -> TrainingSample:
        for attempt in range(self.max_retries):
            current = (position + attempt) % len(self.index)
            if current in self._known_bad:
                continue
            try:
                example = self.sample(current)
                image = open_rgb_image(example) if self.load_images else None
                return TrainingSample(example=example, image=image)
            except Exception as error:  # noqa: BLE001 - never let one bad record end a long run
                self._known_bad.add(current)
                self.counter.record(self.source.name, "unreadable_sample", str(current), error)
        raise RuntimeError(f"{self.max_retries} consecutive unreadable samples in {self.source.name} from "
                           f"index {position}: {self.counter.summary_line()}")
