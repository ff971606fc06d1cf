"""Variable-length ("padding-free") attention for training without flash-attn installed.

TRL's padding-free collator concatenates a batch's rows into one sequence and passes the row
boundaries (`cu_seq_lens_q`, `max_length_q`). transformers' `sdpa` then builds a dense
block-diagonal mask over the whole packed batch (quadratic in the batch's token count) and runs a
masked kernel. PyTorch's own `torch.nn.attention.varlen.varlen_attn` is FlashAttention over
concatenated rows: each row attends causally to itself only, with no padding and no mask. This
module registers it with transformers as attention implementation `sublim_varlen`.

Without row boundaries (a padded batch) it is plain causal `sdpa`, with the padding mask when
there is one; on a CPU, or a torch without `varlen_attn`, rows run one by one through `sdpa`,
which computes the same function.

A batch whose rows share their opening tokens once (`sublim.shared_prefix`) keeps its queries as
they are, each row's own positions (the first row's include the prefix), and gathers each whole row's
keys and values (the prefix's, then the row's own): a row's queries are the last of its keys, so the
causal mask is aligned to each row's end (FlashAttention's, for rows with fewer queries than keys).
Only the key/value heads are gathered (Qwen2.5 has 5-7 query heads to each), and the output is
already in the shared layout.
"""

from __future__ import annotations

import inspect
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

VARLEN = "sublim_varlen"

try:
    from torch.nn.attention.varlen import varlen_attn as _torch_varlen_attn
except ImportError:  # torch < 2.10
    _torch_varlen_attn = None

_VARLEN_PARAMS = set(inspect.signature(_torch_varlen_attn).parameters) if _torch_varlen_attn else set()


def _repeat_kv(states: torch.Tensor, groups: int, head_dim_axis: int) -> torch.Tensor:
    return states if groups == 1 else states.repeat_interleave(groups, dim=head_dim_axis)


def _flash_varlen(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scaling):
    """query (Tq, Hq, D), key/value (Tk, Hkv, D) → (Tq, Hq, D), causal within each row, aligned
    to the row's end where it has fewer queries than keys."""
    kwargs = {}
    # torch 2.11's varlen_attn has no GQA flag and passes key/value to FlashAttention as they are,
    # which takes fewer key/value heads natively (benchmarks/check_varlen.py checks it on the GPU)
    if "enable_gqa" in _VARLEN_PARAMS:
        kwargs["enable_gqa"] = key.shape[1] != query.shape[1]
    if "window_size" in _VARLEN_PARAMS:
        kwargs["window_size"] = (-1, 0)  # causal
    else:
        kwargs["is_causal"] = True
    if "scale" in _VARLEN_PARAMS:
        kwargs["scale"] = scaling
    return _torch_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, **kwargs)


def _rowwise_varlen(query, key, value, cu_seq_q, cu_seq_k, scaling):
    """The same function as `_flash_varlen`, one row at a time through `sdpa` (CPU and reference)."""
    groups = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, groups, 1), _repeat_kv(value, groups, 1)
    out = torch.empty_like(query)
    rows_q, rows_k = cu_seq_q.tolist(), cu_seq_k.tolist()
    for start, end, key_start, key_end in zip(rows_q[:-1], rows_q[1:], rows_k[:-1], rows_k[1:]):
        q = query[start:end].transpose(0, 1)
        k, v = (t[key_start:key_end].transpose(0, 1) for t in (key, value))
        queries, keys = end - start, key_end - key_start
        if queries == keys:
            row = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling)
        else:  # the queries are the row's last positions
            mask = torch.ones(queries, keys, dtype=torch.bool, device=q.device).tril(keys - queries)
            row = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)
        out[start:end] = row.transpose(0, 1)
    return out


def varlen_attention(query, key, value, cu_seq, max_len, scaling=None, use_flash: bool | None = None,
                     cu_seq_k=None, max_len_k: int | None = None):
    """Causal attention over rows concatenated along the first axis, (T, H, D) each. `cu_seq_k` and
    `max_len_k`: the keys' rows where they are longer than the queries' (default: the same)."""
    if cu_seq_k is None:
        cu_seq_k, max_len_k = cu_seq, max_len
    if use_flash is None:
        use_flash = query.is_cuda and _torch_varlen_attn is not None
    if use_flash:
        return _flash_varlen(query, key, value, cu_seq, cu_seq_k, max_len, max_len_k, scaling)
    return _rowwise_varlen(query, key, value, cu_seq, cu_seq_k, scaling)


def _padded_sdpa(module, query, key, value, attention_mask, scaling):
    groups = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, groups, 1), _repeat_kv(value, groups, 1)
    if attention_mask is None:
        out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling)
    else:  # a 2D padding mask (batch, kv); combine it with causality
        length = query.shape[2]
        causal = torch.ones(length, length, dtype=torch.bool, device=query.device).tril()
        mask = causal[None, None] & attention_mask[:, None, None, -length:].bool()
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)
    return out.transpose(1, 2).contiguous()


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention interface: query (B, Hq, T, D), key/value (B, Hkv, T, D) →
    (B, T, Hq, D). A packed batch (B = 1 with `cu_seq_lens_q`) takes the varlen path."""
    if dropout:
        raise ValueError("sublim_varlen attention has no dropout; the Qwen2.5 models train with attention_dropout 0")
    cu_seq = kwargs.get("cu_seq_lens_q")
    if cu_seq is None or query.shape[0] != 1:
        return _padded_sdpa(module, query, key, value, attention_mask, scaling), None
    max_len = kwargs.get("max_length_q") or int(cu_seq.diff().max())
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (T, H, D)
    cu_seq = cu_seq.to(device=q.device, dtype=torch.int32)
    expand = kwargs.get("shared_prefix_expand")
    if expand is None:
        return varlen_attention(q, k, v, cu_seq, int(max_len), scaling)[None], None
    # one copy of the rows' common prefix (sublim.shared_prefix): the whole rows' keys and values
    k, v = (t.index_select(0, expand) for t in (k, v))
    cu_seq_q = kwargs["shared_prefix_cu_seq_q"].to(device=q.device, dtype=torch.int32)
    out = varlen_attention(q, k, v, cu_seq_q, kwargs["shared_prefix_max_q"], scaling,
                           cu_seq_k=cu_seq, max_len_k=int(max_len))
    return out[None], None


def register() -> str:
    """Registers `sublim_varlen` with transformers (idempotent) and returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register(VARLEN, varlen_attention_forward)
    # Like FlashAttention: no 4D mask is built; a padded batch passes its 2D padding mask through.
    ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN, flash_attention_mask)
    return VARLEN
