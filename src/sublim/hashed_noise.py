"""Seeded sampling noise that is a pure function of (request seed, token position, token id).

vLLM 0.26's V1 model runner samples a seeded request with its own torch.Generator, one small kernel
per request and step (5 ms a step for 512 seeded rows against 0.75 ms without seeds, on an H200). Its
V2 runner, which vLLM uses unless a custom logits processor is loaded, draws seeded rows in one kernel
too; there this sampler is slower, since it needs such a processor (benchmarks/README.md, "Eleventh
session"; profiles/b200 leaves it off). Here every seeded row gets its noise from a counter-based hash
in one pass over the batch, and the token is the Gumbel-max draw argmax(logits / T + G): exactly a
sample of softmax(logits / T), as vLLM's exponential race is. A token's noise does not depend on the
batch it shares, the row it sits in or the engine's scheduling, so a rerun draws the same tokens
wherever it ran the same logits.

The hash is Wellons' lowbias32 on 32-bit words; a row's two keys come from (seed, position) by two
different mixes, so two rows share their noise only if both keys collide (~2^-64). The uniform has
23 bits, so that it is exact in float32 and strictly inside (0, 1). The CUDA path is one Triton
kernel; `gumbel_noise` is the same arithmetic in torch (the CPU path, and the kernel's reference in
tests and benchmarks).
"""

from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
LOWBIAS_MULTIPLIERS = (0x7FEB352D, 0x846CA68B)
POSITION_SALT = 0x9E3779B9  # keeps key 2 a different function of (seed, position) from key 1
# (k + 0.5) / 2^23 is exact in float32 for every k, so never 0 or 1 (with 24 bits the top word rounds
# to 1, whose noise is infinite)
UNIFORM_BITS = 23


def _times(x: torch.Tensor, constant: int) -> torch.Tensor:
    """(x * constant) mod 2^32 for int64 tensors holding 32-bit words, without int64 overflow."""
    low = (x & 0xFFFF) * constant
    high = (((x >> 16) * constant) & 0xFFFF) << 16
    return (low + high) & MASK32


def lowbias32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _times(x, LOWBIAS_MULTIPLIERS[0])
    x = x ^ (x >> 15)
    x = _times(x, LOWBIAS_MULTIPLIERS[1])
    return x ^ (x >> 16)


def row_keys(seeds: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 32-bit keys per row from its request seed and the position of the token it samples."""
    seeds, positions = seeds.to(torch.int64) & MASK32, positions.to(torch.int64) & MASK32
    first = lowbias32(seeds ^ lowbias32(positions))
    second = lowbias32(lowbias32(seeds ^ POSITION_SALT) ^ lowbias32(positions ^ POSITION_SALT))
    return first, second


def uniforms(seeds: torch.Tensor, positions: torch.Tensor, vocab: int) -> torch.Tensor:
    """[rows, vocab] float32 in (0, 1): one UNIFORM_BITS-bit uniform per (row, token id)."""
    first, second = row_keys(seeds, positions)
    tokens = torch.arange(vocab, dtype=torch.int64, device=seeds.device)
    return uniform_from_words(lowbias32(lowbias32(tokens[None, :] ^ first[:, None]) ^ second[:, None]))


def uniform_from_words(words: torch.Tensor) -> torch.Tensor:
    """The top UNIFORM_BITS of each 32-bit word as (k + 0.5) / 2^UNIFORM_BITS in float32."""
    return ((words >> (32 - UNIFORM_BITS)).to(torch.float32) + 0.5) * (2.0 ** -UNIFORM_BITS)


def gumbel_noise(seeds: torch.Tensor, positions: torch.Tensor, vocab: int) -> torch.Tensor:
    return -torch.log(-torch.log(uniforms(seeds, positions, vocab)))


def add_gumbel_(logits: torch.Tensor, rows: torch.Tensor, seeds: torch.Tensor, positions: torch.Tensor,
                inverse_temperatures: torch.Tensor) -> torch.Tensor:
    """logits[r] = logits[r] / T_r + G(seed_r, position_r) for each listed row r, in place; then
    argmax(logits[r]) is a sample of softmax(logits[r] / T_r). Other rows are left as they are."""
    if rows.numel() == 0:
        return logits
    if logits.is_cuda and triton is not None:
        _add_gumbel_triton(logits, rows, seeds, positions, inverse_temperatures)
        return logits
    noise = gumbel_noise(seeds, positions, logits.shape[1]).to(logits.device)
    scaled = logits[rows] * inverse_temperatures.to(logits.dtype)[:, None] + noise.to(logits.dtype)
    logits[rows] = scaled
    return logits


try:  # Triton ships with vLLM's CUDA wheels; without it (CPU) the torch path runs
    import triton
    import triton.language as tl
except ImportError:
    triton = None

if triton is not None:
    # a jitted function reads module globals only as constexpr
    _MULTIPLIER_1 = tl.constexpr(LOWBIAS_MULTIPLIERS[0])
    _MULTIPLIER_2 = tl.constexpr(LOWBIAS_MULTIPLIERS[1])
    _SALT = tl.constexpr(POSITION_SALT)
    _SHIFT = tl.constexpr(32 - UNIFORM_BITS)
    _SCALE = tl.constexpr(2.0 ** -UNIFORM_BITS)

    @triton.jit
    def _lowbias32_tl(x):
        x = x ^ (x >> 16)
        x = x * tl.full(x.shape, _MULTIPLIER_1, tl.uint32)
        x = x ^ (x >> 15)
        x = x * tl.full(x.shape, _MULTIPLIER_2, tl.uint32)
        return x ^ (x >> 16)

    @triton.jit
    def _add_gumbel_kernel(logits_ptr, row_stride, rows_ptr, seeds_ptr, positions_ptr, inverse_t_ptr, vocab,
                           BLOCK: tl.constexpr):
        r = tl.program_id(0)
        row = tl.load(rows_ptr + r).to(tl.int64)
        seed = tl.full((1,), 0, tl.uint32) + tl.load(seeds_ptr + r).to(tl.uint32)
        position = tl.full((1,), 0, tl.uint32) + tl.load(positions_ptr + r).to(tl.uint32)
        salt = tl.full((1,), _SALT, tl.uint32)
        first = _lowbias32_tl(seed ^ _lowbias32_tl(position))
        second = _lowbias32_tl(_lowbias32_tl(seed ^ salt) ^ _lowbias32_tl(position ^ salt))
        inverse_t = tl.load(inverse_t_ptr + r)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        inside = cols < vocab
        words = _lowbias32_tl(_lowbias32_tl(cols.to(tl.uint32) ^ first) ^ second)
        u = ((words >> _SHIFT).to(tl.float32) + 0.5) * _SCALE
        noise = -tl.log(-tl.log(u))
        pointers = logits_ptr + row * row_stride + cols
        values = tl.load(pointers, mask=inside)
        tl.store(pointers, (values * inverse_t + noise).to(values.dtype), mask=inside)


def _add_gumbel_triton(logits, rows, seeds, positions, inverse_temperatures, block: int = 4096) -> None:
    device = logits.device
    grid = (rows.numel(), triton.cdiv(logits.shape[1], block))
    _add_gumbel_kernel[grid](logits, logits.stride(0), rows.to(device, torch.int32), seeds.to(device, torch.int64),
                             positions.to(device, torch.int64), inverse_temperatures.to(device, torch.float32),
                             logits.shape[1], BLOCK=block)
