"""The segmentation loss against transformers' own Mask2FormerLoss, and its normalisation by hand."""

import json
import subprocess
import sys
import textwrap

import torch
import torch.nn.functional as F
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss

from xsam_hf.modeling.loss import XSamSegmentationLoss

from .conftest import build_tiny, pad_batch, random_images, random_targets, synthetic_prompt

# Three samples with different class counts (3, 1, 2) and GT counts (2, 0, 3): one has no GT at all.
CLASS_COUNTS, GT_COUNTS = (3, 1, 2), (2, 0, 3)


def _batch():
    ids, mask = pad_batch([synthetic_prompt(c, seed=i) for i, c in enumerate(CLASS_COUNTS)])
    pixels, canvas = random_images(3, seed=1)
    targets = [random_targets(n, c, seed=10 + i) for i, (n, c) in enumerate(zip(GT_COUNTS, CLASS_COUNTS))]
    return dict(
        input_ids=ids,
        attention_mask=mask,
        pixel_values=pixels,
        extra_pixel_values=canvas,
        labels=ids.masked_fill(mask == 0, -100).masked_fill(ids < 0, -100),
        mask_labels=[t[0] for t in targets],
        class_labels=[t[1] for t in targets],
    )


def test_loss_equals_transformers_mask2former_loss_on_every_layer():
    torch.manual_seed(0)
    model = build_tiny(train_num_points=2048)  # the comparison holds for any point count; 12,544 costs seconds
    batch = _batch()
    torch.manual_seed(2024)
    with torch.no_grad():
        out = model(**batch)
    c_max = max(CLASS_COUNTS)
    assert out.class_queries_logits.shape == (3, 8, c_max + 1)

    decoder_config = model.config.decoder_config
    reference_config = Mask2FormerConfig(**{**decoder_config.to_dict(), "num_labels": c_max})
    reference = Mask2FormerLoss(reference_config, weight_dict={})
    torch.manual_seed(2024)
    expected = reference(
        masks_queries_logits=out.masks_queries_logits,
        class_queries_logits=out.class_queries_logits,
        mask_labels=batch["mask_labels"],
        class_labels=batch["class_labels"],
        auxiliary_predictions=out.auxiliary_logits,
    )
    assert set(out.loss_dict) == set(expected)
    assert len(expected) == 3 * 5  # three terms on the final and the 4 auxiliary layers
    for name, value in expected.items():
        torch.testing.assert_close(out.loss_dict[name], value, rtol=1e-6, atol=1e-7, msg=name)

    weights = {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    manual = sum(weights[next(k for k in weights if n.startswith(k))] * v for n, v in expected.items())
    torch.testing.assert_close(out.seg_loss, manual)
    torch.testing.assert_close(out.loss, out.lm_loss + out.seg_loss)


def test_cross_entropy_is_normalised_over_all_queries_of_the_batch():
    """One weighted CE over all N x Q queries (background weight 0.1), padded classes masked: not a mean of
    per-sample means."""
    torch.manual_seed(0)
    model = build_tiny(train_num_points=2048)
    batch = _batch()
    with torch.no_grad():
        out = model(**batch)
    criterion = XSamSegmentationLoss(model.config.decoder_config)
    logits = out.class_queries_logits
    torch.manual_seed(7)
    indices = criterion.matcher(out.masks_queries_logits, logits, batch["mask_labels"], batch["class_labels"])
    torch.manual_seed(7)
    terms = criterion(out.masks_queries_logits, logits, batch["mask_labels"], batch["class_labels"])

    num_classes = logits.shape[-1] - 1
    weighted_nll, weight_sum, per_sample = 0.0, 0.0, []
    for b, (src, tgt) in enumerate(indices):
        target = torch.full((logits.shape[1],), num_classes)
        target[src] = batch["class_labels"][b][tgt]
        log_probs = torch.log_softmax(logits[b].double(), dim=-1)
        w = torch.where(target == num_classes, 0.1, 1.0).double()
        nll = -log_probs[torch.arange(len(target)), target]
        weighted_nll += (w * nll).sum()
        weight_sum += w.sum()
        per_sample.append((w * nll).sum() / w.sum())
        # padded class columns never receive probability mass
        if CLASS_COUNTS[b] < num_classes:
            assert torch.softmax(logits[b], -1)[:, CLASS_COUNTS[b] : num_classes].max() < 1e-30
    global_ce = (weighted_nll / weight_sum).item()
    assert abs(terms["loss_cross_entropy"].item() - global_ce) < 1e-6
    assert abs(torch.stack(per_sample).mean().item() - global_ce) > 1e-4  # the two normalisations differ here


def test_num_masks_is_averaged_once_across_processes(tmp_path):
    """2 gloo processes with 3 and 1 GT masks: num_masks must be their mean, 2, on both ranks.

    Upstream 5.23 gets this wrong (under Trainer DDP it divides the mean by the world size again; under a bare
    torchrun it keeps each rank's local count), which is why the override exists."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, torch, torch.distributed as dist
        from accelerate import PartialState
        from transformers import Mask2FormerConfig
        from transformers.models.mask2former.modeling_mask2former import Mask2FormerLoss
        from xsam_hf.modeling.loss import XSamSegmentationLoss
        dist.init_process_group("gloo")
        PartialState()
        rank = dist.get_rank()
        labels = [torch.zeros(3 if rank == 0 else 1, dtype=torch.long)]
        config = Mask2FormerConfig(num_labels=2)
        ours = XSamSegmentationLoss(config).get_num_masks(labels, torch.device("cpu")).item()
        upstream = Mask2FormerLoss(config, weight_dict={{}}).get_num_masks(labels, torch.device("cpu")).item()
        with open(os.path.join({str(tmp_path)!r}, f"rank{{rank}}.json"), "w") as f:
            json.dump({{"ours": ours, "upstream": upstream}}, f)
        dist.barrier(); dist.destroy_process_group(); os._exit(0)
    """))
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517", str(script)],
        check=True, capture_output=True, timeout=120,
    )
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["ours"] for r in results] == [2.0, 2.0]
    assert [r["upstream"] for r in results] != [2.0, 2.0]  # still needed: upstream does not average correctly


def test_class_labels_out_of_range_are_rejected():
    criterion = XSamSegmentationLoss(Mask2FormerConfig())
    logits = torch.zeros(1, 4, 3)
    try:
        criterion(torch.zeros(1, 4, 8, 8), logits, [torch.zeros(1, 8, 8)], [torch.tensor([2])])
    except ValueError as error:
        assert "[0, 2)" in str(error)
    else:
        raise AssertionError("a class label equal to the background index must be rejected")
