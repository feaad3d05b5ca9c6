"""The one batch builder of every forward pass over token rows of uneven length: decoding, scoring, analysis."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, *, prefix: int = 0, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids [n, width], attention_mask [n, prefix + width], position_ids [n, width]) of `rows` left-padded
    to one width.

    Left padding puts every row's last token in the last column, so one step's logits are `logits[:, -1]`.
    `prefix` tokens already sit in the KV cache before the padding (a prefix shared by the batch): the mask
    covers them and positions continue after them, so a row's positions never count its padding.
    """
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), prefix + width), dtype=torch.long)
    mask[:, :prefix] = 1
    for row, ids in enumerate(rows):
        input_ids[row, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
        mask[row, prefix + width - len(ids) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix:]
    return input_ids.to(device), mask.to(device), positions.to(device)
