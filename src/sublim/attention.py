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

A batch whose rows share their opening tokens once (`sublim.shared_prefix`) passes the index of
each whole row's positions in it: the attention gathers the whole rows, runs over them, and keeps
the outputs of the shared positions (the prefix's from the first row).
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


def _flash_varlen(query, key, value, cu_seq, max_len, scaling):
    """query (T, Hq, D), key/value (T, Hkv, D) → (T, Hq, D), causal within each row."""
    kwargs = {}
    if "enable_gqa" in _VARLEN_PARAMS:
        kwargs["enable_gqa"] = key.shape[1] != query.shape[1]
    else:  # torch 2.10/2.11: no GQA flag, so expand the key/value heads
        groups = query.shape[1] // key.shape[1]
        key, value = _repeat_kv(key, groups, 1), _repeat_kv(value, groups, 1)
    if "window_size" in _VARLEN_PARAMS:
        kwargs["window_size"] = (-1, 0)  # causal
    else:
        kwargs["is_causal"] = True
    if "scale" in _VARLEN_PARAMS:
        kwargs["scale"] = scaling
    return _torch_varlen_attn(query, key, value, cu_seq, cu_seq, max_len, max_len, **kwargs)


def _rowwise_varlen(query, key, value, cu_seq, scaling):
    """The same function as `_flash_varlen`, one row at a time through `sdpa` (CPU and reference)."""
    groups = query.shape[1] // key.shape[1]
    key, value = _repeat_kv(key, groups, 1), _repeat_kv(value, groups, 1)
    out = torch.empty_like(query)
    bounds = cu_seq.tolist()
    for start, end in zip(bounds[:-1], bounds[1:]):
        q, k, v = (t[start:end].transpose(0, 1) for t in (query, key, value))
        out[start:end] = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scaling).transpose(0, 1)
    return out


def varlen_attention(query, key, value, cu_seq, max_len, scaling=None, use_flash: bool | None = None):
    """Causal attention over rows concatenated along the first axis, (T, H, D) each."""
    if use_flash is None:
        use_flash = query.is_cuda and _torch_varlen_attn is not None
    if use_flash:
        return _flash_varlen(query, key, value, cu_seq, max_len, scaling)
    return _rowwise_varlen(query, key, value, cu_seq, scaling)


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
    expand = kwargs.get("shared_prefix_expand")
    if expand is not None:  # one copy of the rows' common prefix (sublim.shared_prefix): the whole rows
        q, k, v = (t.index_select(0, expand) for t in (q, k, v))
    out = varlen_attention(q, k, v, cu_seq.to(device=q.device, dtype=torch.int32), int(max_len), scaling)
    if expand is not None:
        out = out.index_select(0, kwargs["shared_prefix_output"])
    return out[None], None


def register() -> str:
    """Registers `sublim_varlen` with transformers (idempotent) and returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register(VARLEN, varlen_attention_forward)
    # Like FlashAttention: no 4D mask is built; a padded batch passes its 2D padding mask through.
    ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN, flash_attention_mask)
    return VARLEN
