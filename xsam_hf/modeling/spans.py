"""Where the conditions and `<SEG>` tokens sit in a token sequence.

One place derives them from token ids, so the model (teacher-forced or generated text) and the processor (the
official `cond_ids` / `seg_ids` tensors) agree by construction.
"""

from __future__ import annotations

import torch


def condition_ids(input_ids: torch.Tensor, phrase_start_id: int, phrase_end_id: int) -> torch.Tensor:
    """Mark the k-th `<p> ... </p>` span of each row with k, both tags included; -1 elsewhere.

    An unclosed `<p>` marks nothing (the official encoder only counts complete pairs); a stray `</p>` is ignored.

    Args:
        input_ids: `(batch, length)` token ids (placeholders such as -200 are allowed).
    Returns:
        `(batch, length)` long tensor.
    """
    out = torch.full_like(input_ids, -1)
    for row, ids in enumerate(input_ids.tolist()):
        k, start = 0, None
        for pos, tok in enumerate(ids):
            if tok == phrase_start_id:
                start = pos
            elif tok == phrase_end_id and start is not None:
                out[row, start : pos + 1] = k
                k, start = k + 1, None
    return out


def seg_ids(input_ids: torch.Tensor, seg_token_id: int) -> torch.Tensor:
    """Mark the j-th `<SEG>` token of each row with j; -1 elsewhere. `(batch, length)` long tensor."""
    is_seg = input_ids == seg_token_id
    order = is_seg.long().cumsum(dim=1) - 1
    return torch.where(is_seg, order, torch.full_like(order, -1))
