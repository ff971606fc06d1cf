"""Training rows that begin alike share the computation of their common beginning.

Every student row opens with the same tokens: the chat template's default system prompt and the
user turn's opening (23 shared tokens of a ~138-token row for Qwen2.5). In a causal model those positions see
only each other, so their hidden states, keys and values are identical in every row of a batch.
`share_prefix` turns TRL's padding-free batch of K rows into one sequence holding that prefix
once, followed by each row's remainder, and `shared_prefix_expand` / `shared_prefix_cu_seq_q` let the
attention (sublim.attention) give every remainder the prefix's keys and values. The linear layers, the bulk
of a step, then run over T - (K - 1)·P tokens instead of T.

Forward values are those of the K rows; gradients too, since the prefix's single copy receives the
sum of what the K copies would have received (the same function at the same inputs), and its own
loss terms (full-text loss) are weighted K times (`prefix_loss_weight`). The trainer normalises
by the whole rows' label count (`shared_prefix_repeated_labels`). Only the summation order changes.
"""

from __future__ import annotations

import torch

# The shared batch's integers; the loss pops them before the model sees the batch (its two index
# tensors go on to the attention).
PREFIX_KEYS = ("shared_prefix_length", "shared_prefix_copies", "shared_prefix_repeated_labels")


def common_prefix_length(rows: list[torch.Tensor]) -> int:
    """How many leading positions all rows have equal (ids or labels, 1-D each)."""
    shortest = min(len(row) for row in rows)
    stacked = torch.stack([row[:shortest] for row in rows])
    differs = (stacked != stacked[0]).any(dim=0).nonzero()
    return int(differs[0]) if len(differs) else shortest


def shared_length(ids: list[torch.Tensor], labels: list[torch.Tensor]) -> int:
    """The prefix length P to share. The last position of the prefix predicts the next token, so
    that token must be common too (its label is then weighted K times with the prefix's): P is one
    less than the rows' common (id, label) prefix, and every row keeps at least one token of its
    own. 0 (nothing shared) for a single row or rows that differ at once."""
    if len(ids) < 2:
        return 0
    common = min(common_prefix_length(ids), common_prefix_length(labels))
    return max(0, min(common - 1, min(len(row) for row in ids) - 1))


def share_prefix(batch: dict) -> dict:
    """TRL's padding-free batch (input_ids, labels, position_ids of shape (1, T), cu_seq_lens_q) as
    one sequence with the rows' common prefix once. The result carries:
    - input_ids, labels, position_ids of shape (1, T'), T' = T - (K - 1)·P; a remainder keeps its
      positions (P, P+1, …); the label of each remainder's first token after the first is -100
      (the token before it belongs to another row; the prefix's last position predicts it);
    - cu_seq_lens_q/k and max_length_q/k of the K whole rows (attention runs over those);
    - shared_prefix_expand: for each position of the K whole rows, its index in the shared
      sequence (where the attention gathers a row's keys and values);
    - shared_prefix_cu_seq_q and shared_prefix_max_q: the rows' own positions in the shared
      sequence (the first row's include the prefix), the attention's queries;
    - shared_prefix_length P and shared_prefix_copies K (the loss weight), and
      shared_prefix_repeated_labels: the labels the whole rows count beyond this batch's (the
      prefix's, K - 1 more times), which the loss's normaliser adds.
    A batch without a shareable prefix is returned unchanged."""
    bounds = batch["cu_seq_lens_q"].tolist()
    flat_ids, flat_labels = batch["input_ids"][0], batch["labels"][0]
    if len(bounds) < 3 or bounds[-1] != flat_ids.numel():  # one row, or trailing padding
        return batch
    ids = [flat_ids[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    labels = [flat_labels[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    prefix = shared_length(ids, labels)
    if prefix == 0:
        return batch
    rest_labels = [row[prefix:].clone() for row in labels]
    for row in rest_labels[1:]:
        row[0] = -100
    expand, rest_start = [], prefix
    for row in ids:
        rest = len(row) - prefix
        expand.extend(range(prefix))
        expand.extend(range(rest_start, rest_start + rest))
        rest_start += rest
    own = [len(ids[0])] + [len(row) - prefix for row in ids[1:]]  # the queries of each row
    shared = {key: value for key, value in batch.items() if key not in ("seq_idx",)}
    shared["input_ids"] = torch.cat([ids[0][:prefix]] + [row[prefix:] for row in ids])[None]
    shared["labels"] = torch.cat([labels[0][:prefix]] + rest_labels)[None]
    shared["position_ids"] = torch.cat([torch.arange(prefix)] + [torch.arange(prefix, len(row)) for row in ids])[None]
    shared["shared_prefix_expand"] = torch.tensor(expand)
    shared["shared_prefix_cu_seq_q"] = torch.tensor([0] + own, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    shared["shared_prefix_max_q"] = max(own)
    shared["shared_prefix_length"], shared["shared_prefix_copies"] = prefix, len(ids)
    # the fused LM head's shifted positions 0..P-1 predict labels 1..P
    shared["shared_prefix_repeated_labels"] = (len(ids) - 1) * int((shared["labels"][0, 1:prefix + 1] != -100).sum())
    return shared


def prefix_loss_weight(shape: torch.Size, prefix: int, copies: int, device=None) -> torch.Tensor:
    """Weights of the shifted label positions (the fused LM head's (1, T'-1)): the prefix's P
    predictions stand for K rows' each."""
    weight = torch.ones(shape, device=device)
    weight[:, :prefix] = copies
    return weight


def row_tokens(length: int, batch: dict) -> int:
    """The whole rows' token count of a batch whose sequence has `length` tokens (known on the host)."""
    return length + (batch.get("shared_prefix_copies", 1) - 1) * batch.get("shared_prefix_length", 0)


class SharedPrefixCollator:
    """Wraps TRL's padding-free collator: its batch, with the rows' common prefix shared."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):
        return share_prefix(self.collator(examples))

    def __getattr__(self, name):  # the trainer reads the wrapped collator's settings
        return getattr(self.collator, name)
