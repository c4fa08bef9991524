import math

import numpy as np
import pytest
from xsam_data_fixtures import assert_picklable, box_mask, rle_of, write_image, write_json

from xsam_hf.training.data import (BalancedConcatDataset, SkipCounter, SourceGroupedBatchSampler,
                                   XSamTrainingDataset, load_coco_instances, repeat_factors)


def test_repeat_factors_follow_the_square_root_rule():
    lengths = [900, 90, 10]
    factors = repeat_factors(lengths, threshold=0.1)
    assert factors[0] == 1.0  # f = 0.9 > t
    assert factors[1] == pytest.approx(math.sqrt(0.1 / 0.09))
    assert factors[2] == pytest.approx(math.sqrt(0.1 / 0.01))
    dataset = BalancedConcatDataset([list(range(n)) for n in lengths], names=["big", "mid", "small"])
    assert dataset.lengths == [900, math.floor(90 * math.sqrt(0.1 / 0.09)), math.floor(10 * math.sqrt(10))]
    assert dataset.lengths[2] == 31 and len(dataset) == sum(dataset.lengths)
    small_start = dataset.offsets[2]
    # Indices past a source's own length wrap modulo its length.
    assert [dataset[small_start + k] for k in (0, 9, 10, 11, 30)] == [0, 9, 0, 1, 0]
    assert dataset.locate(small_start + 25) == (2, 5) and dataset.source_of(0) == 0
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    assert BalancedConcatDataset([[1], [2, 3]], threshold=0).lengths == [1, 2]


def test_source_weights_multiply_the_balance_factor():
    lengths = [900, 90, 10]
    weighted = BalancedConcatDataset([list(range(n)) for n in lengths], weights=[1.0, 2.0, 0.5])
    # mid: floor(90 * 1.054 * 2) = 189; small: floor(10 * 3.162 * 0.5) = 15
    assert weighted.lengths == [900, 189, 15]
    assert weighted[weighted.offsets[1] + 95] == 5  # a doubled source wraps round its own length
    assert BalancedConcatDataset([[1], [2, 3]], threshold=0, weights=[3, 1]).lengths == [3, 2]
    for bad in ([1.0, 1.0], [1.0, 0.0, 1.0], [1.0, -2.0, 1.0]):
        with pytest.raises(ValueError, match="one positive weight per source"):
            BalancedConcatDataset([list(range(n)) for n in lengths], weights=bad)


def _simulate(lengths, per_device, world_size, seed=0, epoch=0):
    """Every rank's batches, from one sampler per rank (as separate processes would build them)."""
    per_rank = []
    for rank in range(world_size):
        sampler = SourceGroupedBatchSampler(lengths, per_device, world_size=world_size, rank=rank, seed=seed)
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
    return per_rank


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_every_step_of_every_rank_comes_from_one_source(world_size):
    lengths = [37, 5, 64, 13]
    offsets = np.cumsum([0] + lengths)

    def source_of(index):
        return int(np.searchsorted(offsets, index, side="right") - 1)

    per_device = 3
    per_rank = _simulate(lengths, per_device, world_size)
    steps = {len(batches) for batches in per_rank}
    assert len(steps) == 1  # every rank gets the same number of batches
    group = per_device * world_size
    assert steps.pop() == sum(math.ceil(n / group) for n in lengths)
    assert len(SourceGroupedBatchSampler(lengths, per_device, world_size=world_size)) == len(per_rank[0])
    seen = set()
    for step in zip(*per_rank):
        assert all(len(batch) == per_device for batch in step)
        sources = {source_of(i) for batch in step for i in batch}
        assert len(sources) == 1  # the whole global batch is one source
        seen.update(i for batch in step for i in batch)
    assert seen == set(range(sum(lengths)))  # every sample is used (padding only repeats)


def test_global_order_matches_what_sharding_by_batch_number_gives_each_rank():
    lengths = [20, 9]
    global_order = list(SourceGroupedBatchSampler(lengths, 2, world_size=4, rank=None, seed=3))
    per_rank = _simulate(lengths, 2, 4, seed=3)
    for rank in range(4):
        assert global_order[rank::4] == per_rank[rank]
    assert len(SourceGroupedBatchSampler(lengths, 2, world_size=4, rank=None)) == len(global_order)


def test_epochs_are_reproducible_from_the_seed_and_set_epoch_reshuffles():
    lengths = [30, 30]
    assert _simulate(lengths, 4, 2, seed=7) == _simulate(lengths, 4, 2, seed=7)
    assert _simulate(lengths, 4, 2, seed=7, epoch=1) != _simulate(lengths, 4, 2, seed=7, epoch=0)
    assert _simulate(lengths, 4, 2, seed=8) != _simulate(lengths, 4, 2, seed=7)


def test_short_last_group_is_padded_with_the_previous_group_and_tiny_sources_cycle():
    groups = [g.tolist() for g in SourceGroupedBatchSampler([10], 4, world_size=1, seed=0).groups()]
    assert [len(g) for g in groups] == [4, 4, 4]
    assert sorted(set().union(*groups)) == list(range(10))
    # The short group holds the last 2 shuffled samples, then the first 2 samples of the group before it.
    matches = [(p, q) for p in groups for q in groups if p is not q and p[2:] == q[:2]]
    assert len(matches) == 1
    padded, previous = matches[0]
    others = [g for g in groups if g is not padded]
    assert set(padded[:2]).isdisjoint(set().union(*others)) and len(set(previous)) == 4
    tiny = SourceGroupedBatchSampler([3], 4, world_size=2).groups()
    assert len(tiny) == 1 and len(tiny[0]) == 8 and set(tiny[0].tolist()) == {0, 1, 2}


def test_balanced_dataset_with_grouped_sampler_end_to_end():
    sources = [[("big", i) for i in range(50)], [("small", i) for i in range(4)]]
    dataset = BalancedConcatDataset(sources)
    sampler = SourceGroupedBatchSampler.for_dataset(dataset, 2, world_size=2, rank=None, seed=0)
    for batch_pair in zip(*[iter(list(sampler))] * 2):
        names = {dataset[i][0] for batch in batch_pair for i in batch}
        assert len(names) == 1
    small = [dataset[i] for batch in sampler for i in batch if dataset[i][0] == "small"]
    assert {i for _, i in small} == {0, 1, 2, 3} and len(small) >= dataset.lengths[1]


H, W = 12, 16


def test_training_dataset_skips_corrupt_images_counts_them_and_keeps_empty_examples(tmp_path):
    for name in ("ok.jpg", "empty.jpg", "wrong_size.jpg"):
        write_image(tmp_path / name, H, W if name != "wrong_size.jpg" else W + 1)
    (tmp_path / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_json(tmp_path / "instances.json", {
        "images": [{"id": i, "file_name": n, "height": H, "width": W}
                   for i, n in enumerate(["ok.jpg", "truncated.jpg", "empty.jpg", "wrong_size.jpg", "gone.jpg"])],
        "annotations": [{"id": 1, "image_id": 0, "category_id": 1, "iscrowd": 0,
                         "segmentation": rle_of(box_mask(H, W, 2, 2, 8, 8))}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}],
    })
    counter = SkipCounter()
    source = load_coco_instances(tmp_path / "instances.json", tmp_path, counter=counter)
    dataset = XSamTrainingDataset(source, seed=1, load_images=True)
    assert_picklable(dataset)
    served = [dataset[i] for i in range(len(dataset))]
    ids = [s.example.meta["image_id"] for s in served]
    assert ids == [0, 2, 2, 0, 0]  # broken ones replaced by the next readable sample of the same source
    assert counter.count(reason="unreadable_sample") == 3  # truncated, wrong size, missing file: once each
    assert served[1].example.objects == [] and served[1].image.size == (W, H)
    assert served[0].image.mode == "RGB"
    assert dataset.sample(0) == dataset.sample(0)  # one seeded draw per sample, repeated exactly
    assert "unreadable_sample=3" in counter.summary_line()


def test_training_dataset_expands_refseg_and_gives_up_after_too_many_failures(tmp_path):
    from xsam_hf.training.data import ExampleSource
    from xsam_hf.training.data.masks import encode_mask
    from xsam_hf.training.data.schema import SegObject, XSamExample

    mask = encode_mask(box_mask(4, 4, 0, 0, 2, 2))
    records = [[["a", "b"], ["c"]], [["d"]], None]

    def build(record):
        if record is None:
            raise ValueError("broken annotation")
        return XSamExample(record_id="r", task="refseg", source="refs",
                           objects=[SegObject(mask=mask, texts=t) for t in record])

    counter = SkipCounter()
    dataset = XSamTrainingDataset(ExampleSource("refs", "refseg", records, build, counter), seed=0)
    assert dataset.index == [(0, 0), (0, 1), (1, 0)]  # min(2*1, 2+1) = 2 tuples, then 1
    assert counter.count(reason="build_failed") == 1
    assert {tuple(dataset[i].example.class_names) for i in range(2)} == {("a", "c"), ("b", "c")}

    always_broken = XSamTrainingDataset(ExampleSource("bad", "genseg", [None] * 3, build, SkipCounter()),
                                        max_retries=3)
    with pytest.raises(RuntimeError, match="3 consecutive unreadable samples"):
        always_broken[0]


def test_mixed_task_sources_give_single_task_global_batches():
    from xsam_hf.training.data import ExampleSource
    from xsam_hf.training.data.masks import encode_mask
    from xsam_hf.training.data.schema import SegObject, Turn, XSamExample

    mask = encode_mask(box_mask(4, 4, 0, 0, 2, 2))

    def chat(i):
        return XSamExample(record_id=f"c/{i}", task="chat", source="llava",
                           conversation=[Turn("user", "q"), Turn("assistant", "a")])

    def genseg(i):
        return XSamExample(record_id=f"g/{i}", task="genseg", source="coco", class_names=["a", "b"],
                           class_ids=[1, 2], objects=[SegObject(mask=mask, class_index=i % 2)])

    def refseg(i):
        return XSamExample(record_id=f"r/{i}", task="refseg", source="refcoco",
                           objects=[SegObject(mask=mask, texts=["x", "y"]), SegObject(mask=mask, texts=["z"])])

    sources = [ExampleSource("llava", "chat", list(range(40)), chat),
               ExampleSource("coco", "genseg", list(range(9)), genseg),
               ExampleSource("refcoco", "refseg", list(range(3)), refseg)]
    datasets = [XSamTrainingDataset(s, seed=0) for s in sources]
    assert [len(d) for d in datasets] == [40, 9, 6]  # refseg: min(2*1, 2+1) = 2 samples per image
    mixed = BalancedConcatDataset(datasets)
    for world_size in (1, 2, 4):
        per_rank = [list(SourceGroupedBatchSampler.for_dataset(mixed, 2, world_size=world_size, rank=r, seed=1))
                    for r in range(world_size)]
        for step in zip(*per_rank):
            tasks = {mixed[i].example.task for batch in step for i in batch}
            assert len(tasks) == 1
