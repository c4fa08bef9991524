"""How `XSamTrainer` combines and scales the two losses, and what it logs (values checked against the model's own).

With `num_items_in_batch` (N: label tokens of all micro-batches of the step on all processes) the LM part of a
micro-batch is `W * sum(CE) / N` and the segmentation part `seg / GA`; without it (S1, no labels) both are per-batch
means divided by GA; in evaluation nothing is rescaled.
"""

from __future__ import annotations

import pytest
import torch

from xsam_hf.processing import XSamProcessor
from xsam_hf.training.collator import XSamDataCollator
from xsam_hf.training.train import build_train_dataset
from xsam_hf.training.trainer import XSamTrainer, XSamTrainingArguments

from .conftest import tiny_model, tiny_recipe


@pytest.fixture(scope="module")
def genseg_batches(data_root, sources):
    dataset = build_train_dataset(tiny_recipe("s3", data_root, data_root / "unused", [sources["genseg"]]))
    collator = XSamDataCollator(XSamProcessor.from_preset("tiny"), stage="s3")
    return collator([dataset[0], dataset[1]]), collator([dataset[2]])


def _trainer(model, tmp_path, accumulation=2):
    args = XSamTrainingArguments(output_dir=str(tmp_path), gradient_accumulation_steps=accumulation, use_cpu=True,
                                 report_to="none", disable_tqdm=True)
    trainer = XSamTrainer(model=model, args=args)
    trainer.current_gradient_accumulation_steps = accumulation  # set by the training loop for each step
    return trainer


def _reference(model, batch, seed):
    torch.manual_seed(seed)  # the loss samples random points: replay the same draws
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k not in ("task", "skipped_samples")})


def _label_tokens(batch):
    return int((batch["labels"][:, 1:] != -100).sum())


def test_gradient_accumulation_scales_lm_by_tokens_and_seg_by_steps(genseg_batches, tmp_path, monkeypatch):
    model = tiny_model()
    trainer = _trainer(model, tmp_path)
    first, second = genseg_batches
    tokens = torch.tensor(_label_tokens(first) + _label_tokens(second))
    references = [_reference(model, batch, seed) for batch, seed in ((first, 1), (second, 2))]
    losses = []
    for batch, seed in ((first, 1), (second, 2)):
        torch.manual_seed(seed)
        with torch.no_grad():
            losses.append(trainer.compute_loss(model, dict(batch), num_items_in_batch=tokens))
    for batch, loss, reference in zip((first, second), losses, references):
        expected = reference.lm_loss * _label_tokens(batch) / tokens + reference.seg_loss / 2
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert trainer.task_micro_batches == {"genseg": 2}

    trainer.log({"loss": sum(l.item() for l in losses)})
    logged = trainer.state.log_history[-1]
    token_mean = sum(r.lm_loss * _label_tokens(b) for r, b in zip(references, (first, second))) / tokens
    assert logged["lm_loss"] == pytest.approx(token_mean.item(), rel=1e-5)  # per-token mean over the step
    assert logged["seg_loss"] == pytest.approx(sum(r.seg_loss.item() for r in references) / 2, rel=1e-5)
    for term in ("loss_cross_entropy", "loss_mask", "loss_dice"):  # unweighted, last decoder layer
        expected = sum(r.loss_dict[term].item() for r in references) / 2
        assert logged[term] == pytest.approx(expected, rel=1e-5)
    assert logged["loss"] == pytest.approx(logged["lm_loss"] + logged["seg_loss"], rel=1e-5)
    assert logged["skipped_samples"] == 0

    # Two processes: the token-normalised LM part is multiplied by W (DDP averages gradients), the segmentation
    # part is not (its num_masks is already the per-process mean of the global count).
    monkeypatch.setattr(type(trainer.accelerator), "num_processes", property(lambda self: 2))
    torch.manual_seed(1)
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(first), num_items_in_batch=tokens)
    expected = 2 * references[0].lm_loss * _label_tokens(first) / tokens + references[0].seg_loss / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_per_batch_means_without_token_count_and_no_scaling_in_evaluation(genseg_batches, tmp_path):
    first, _ = genseg_batches
    model = tiny_model()
    trainer = _trainer(model, tmp_path, accumulation=4)
    reference = _reference(model, first, seed=3)
    torch.manual_seed(3)
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(first))  # no num_items_in_batch: both are per-batch means
    assert loss.item() == pytest.approx((reference.lm_loss + reference.seg_loss).item() / 4, rel=1e-5)
    model.eval()
    reference = _reference(model, first, seed=3)
    torch.manual_seed(3)
    with torch.no_grad():
        evaluated = trainer.compute_loss(model, dict(first), num_items_in_batch=torch.tensor(1))
    assert evaluated.item() == pytest.approx(reference.loss.item(), rel=1e-5)

    s1 = tiny_model("s1")
    trainer = _trainer(s1, tmp_path, accumulation=2)
    batch = {"extra_pixel_values": first["extra_pixel_values"], "mask_labels": first["mask_labels"],
             "class_labels": first["class_labels"]}
    reference = _reference(s1, batch, seed=4)
    torch.manual_seed(4)
    with torch.no_grad():
        loss = trainer.compute_loss(s1, dict(batch))
    assert reference.lm_loss is None and loss.item() == pytest.approx(reference.seg_loss.item() / 2, rel=1e-5)


def test_loss_weights_come_from_the_config(genseg_batches, tmp_path):
    first, _ = genseg_batches
    model = tiny_model()
    model.config.lm_loss_weight, model.config.seg_loss_weight = 0.5, 2.0
    trainer = _trainer(model, tmp_path, accumulation=1)
    reference = _reference(model, first, seed=5)
    torch.manual_seed(5)
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(first), num_items_in_batch=torch.tensor(_label_tokens(first)))
    assert loss.item() == pytest.approx((0.5 * reference.lm_loss + 2.0 * reference.seg_loss).item(), rel=1e-5)
