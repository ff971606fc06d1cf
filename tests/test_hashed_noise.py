"""sublim.hashed_noise: the Gumbel-max draw samples softmax(logits / T), draws at different seeds and
positions are independent, and a row's noise does not depend on the batch around it."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from scipy.stats import chi2, chisquare

from sublim import hashed_noise

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
DRAWS = 60_000
ALPHA = 1e-4  # the noise is a fixed function, so each test's outcome is fixed too; this bounds a false alarm


def draw(seeds, positions, logits=LOGITS, temperature=1.0):
    rows = torch.arange(len(seeds))
    batch = logits.repeat(len(seeds), 1)
    hashed_noise.add_gumbel_(batch, rows, seeds, positions, torch.full((len(seeds),), 1.0 / temperature))
    return batch.argmax(dim=1)


def softmax(logits, temperature=1.0):
    return torch.softmax(logits.double() / temperature, 0)


def fits(tokens, probabilities) -> bool:
    counts = torch.bincount(tokens, minlength=len(probabilities)).double()
    return chisquare(counts.numpy(), (probabilities * len(tokens)).numpy()).pvalue > ALPHA


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
def test_draws_across_seeds_follow_the_softmax(temperature):
    tokens = draw(torch.arange(DRAWS), torch.zeros(DRAWS, dtype=torch.int64), temperature=temperature)
    assert fits(tokens, softmax(LOGITS, temperature))


def test_draws_along_one_requests_positions_follow_the_softmax():
    tokens = draw(torch.full((DRAWS,), 7), torch.arange(DRAWS))
    assert fits(tokens, softmax(LOGITS))


def test_the_check_rejects_a_wrong_sampler():
    """Negative controls: uniform noise instead of Gumbel, and the wrong temperature, both fail."""
    seeds, positions = torch.arange(DRAWS), torch.zeros(DRAWS, dtype=torch.int64)
    uniform = hashed_noise.uniforms(seeds, positions, len(LOGITS))
    assert not fits((LOGITS + uniform).argmax(dim=1), softmax(LOGITS))
    assert not fits(draw(seeds, positions, temperature=1.0), softmax(LOGITS, 0.7))


def test_consecutive_positions_are_independent():
    """The joint counts of (token at position t, token at t + 1) of one request match the product."""
    logits = torch.zeros(4)  # uniform over 4 tokens: 16 joint cells of equal probability
    tokens = draw(torch.full((DRAWS,), 11), torch.arange(DRAWS), logits=logits)
    pairs = tokens[:-1] * 4 + tokens[1:]
    counts = torch.bincount(pairs, minlength=16).double()
    expected = torch.full((16,), len(pairs) / 16, dtype=torch.float64)
    statistic = float(((counts - expected) ** 2 / expected).sum())
    assert statistic < chi2.isf(ALPHA, 15)


def test_a_rows_noise_is_independent_of_its_batch():
    seeds = torch.tensor([5, 6, 7, 8])
    positions = torch.tensor([0, 3, 3, 9])
    alone = hashed_noise.gumbel_noise(seeds[2:3], positions[2:3], 1000)
    together = hashed_noise.gumbel_noise(seeds, positions, 1000)
    reordered = hashed_noise.gumbel_noise(seeds.flip(0), positions.flip(0), 1000)
    assert torch.equal(alone[0], together[2]) and torch.equal(together, reordered.flip(0))
    assert not torch.equal(together[1], together[2])  # same position, another seed
    assert not torch.equal(together[0], hashed_noise.gumbel_noise(seeds[:1], positions[:1] + 1, 1000)[0])


def test_only_the_listed_rows_change():
    logits = torch.randn(6, 50)
    before = logits.clone()
    rows = torch.tensor([1, 4])
    hashed_noise.add_gumbel_(logits, rows, torch.tensor([3, 4]), torch.tensor([0, 0]), torch.tensor([1.0, 0.5]))
    untouched = [0, 2, 3, 5]
    assert torch.equal(logits[untouched], before[untouched])
    noise = hashed_noise.gumbel_noise(torch.tensor([3, 4]), torch.tensor([0, 0]), 50)
    torch.testing.assert_close(logits[rows], before[rows] * torch.tensor([[1.0], [0.5]]) + noise)


def test_the_extreme_words_give_finite_noise():
    """A uniform of 1 (or 0) would make a token's noise infinite: it would win whatever its logit."""
    u = hashed_noise.uniform_from_words(torch.tensor([0, 0xFFFFFFFF, 0xFFFFFF00, 0x80000000], dtype=torch.int64))
    assert bool(((u > 0) & (u < 1)).all()) and bool(torch.isfinite(-torch.log(-torch.log(u))).all())
    noise = hashed_noise.gumbel_noise(torch.arange(64), torch.zeros(64, dtype=torch.int64), 151_936)
    assert bool(torch.isfinite(noise).all())


def test_the_multiply_stays_within_int64():
    """Words near 2^32 times the multipliers wrap mod 2^32, not into int64's sign."""
    words = torch.tensor([0xFFFFFFFF, 0x80000000, 0x12345678], dtype=torch.int64)
    for constant in hashed_noise.LOWBIAS_MULTIPLIERS:
        expected = [(int(w) * constant) & 0xFFFFFFFF for w in words]
        assert hashed_noise._times(words, constant).tolist() == expected


TRITON_CHECK = """
import torch
from sublim import hashed_noise
seeds = torch.tensor([1, 2, 2**31 - 1, 12345], dtype=torch.int64)
positions = torch.tensor([0, 1, 100, 2047], dtype=torch.int64)
base = torch.randn(6, 1000)
logits = base.clone()
rows = torch.tensor([0, 2, 3, 5])
inverse = torch.tensor([1.0, 0.5, 2.0, 1.0])
hashed_noise._add_gumbel_triton(logits, rows, seeds, positions, inverse, block=256)
expected = base.clone()
expected[rows] = base[rows] * inverse[:, None] + hashed_noise.gumbel_noise(seeds, positions, 1000)
torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
print("same")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_the_triton_kernel_computes_the_reference():
    """The CUDA kernel, run by Triton's interpreter on the CPU (set before Triton is imported, so in a
    fresh process), against the torch arithmetic."""
    result = subprocess.run([sys.executable, "-c", TRITON_CHECK], capture_output=True, text=True,
                            env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=300)
    assert result.stdout.strip() == "same", result.stderr[-3000:]
