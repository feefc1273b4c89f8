"""The inversion attack's parts: ROUGE-L against brute force, and an attack that must succeed
(an injective map) or fail (noise far above the signal)."""

import itertools
import random

import pytest
import torch

from edgesplit.inversion import (
    AttackSettings,
    lcs_length,
    rouge_l_f1,
    rouge_words,
    text_rouge_l,
    token_accuracy,
    train_inverter,
)
from edgesplit.presets import load_tokenizer


def brute_force_lcs(a, b):
    """Longest subsequence of `a` that is also a subsequence of `b`, by enumeration."""
    def is_subsequence(sub, seq):
        it = iter(seq)
        return all(x in it for x in sub)

    for n in range(len(a), 0, -1):
        if any(is_subsequence(c, b) for c in itertools.combinations(a, n)):
            return n
    return 0


def test_lcs_equals_brute_force_on_random_sequences():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.randrange(4) for _ in range(rng.randrange(9))]
        b = [rng.randrange(4) for _ in range(rng.randrange(9))]
        assert lcs_length(a, b) == brute_force_lcs(a, b)


def test_rouge_l_f1_and_words():
    assert rouge_words("To be, or NOT to-be?") == ["to", "be", "or", "not", "to", "be"]
    # LCS("the cat sat", "the cat on the mat sat") = 3: P = 1, R = 1/2, F1 = 2/3.
    assert rouge_l_f1("the cat sat".split(), "the cat on the mat sat".split()) == pytest.approx(
        2 / 3)
    assert rouge_l_f1([], ["a"]) == 0.0


def toy_blocks(generator):
    """125 blocks of 32 tokens (ids 0-39), an injective map from tokens to 16-d vectors plus a
    little noise, and a padding mask hiding the last 4 positions of every block."""
    tokens = torch.randint(0, 40, (125, 32), generator=generator)
    table = torch.randn(50, 16, generator=generator)
    hidden = table[tokens] + 0.01 * torch.randn(125, 32, 16, generator=generator)
    mask = torch.ones_like(tokens)
    mask[:, -4:] = 0
    return hidden, tokens, mask


def test_attack_recovers_an_injective_map_and_names_only_tokens_it_saw():
    hidden, tokens, mask = toy_blocks(torch.Generator().manual_seed(0))
    hidden[:100, -4:] = 0.0  # padding carries nothing: training must leave it out
    attack = train_inverter(hidden[:100], tokens[:100], mask[:100],
                            AttackSettings(width=32, epochs=5))
    predicted = attack.predict(hidden[100:])
    assert token_accuracy(predicted, tokens[100:], mask[100:]) > 0.95
    assert set(attack.vocab.tolist()) == set(tokens[:100, :-4].unique().tolist())
    assert set(predicted.unique().tolist()) <= set(attack.vocab.tolist())


def test_attack_trained_on_overwhelming_noise_recovers_little():
    hidden, tokens, mask = toy_blocks(torch.Generator().manual_seed(0))

    def drown(x, generator):
        return x + 100 * torch.randn(x.shape, generator=generator)

    attack = train_inverter(hidden[:100], tokens[:100], mask[:100],
                            AttackSettings(width=32, epochs=2), perturb=drown)
    predicted = attack.predict(drown(hidden[100:], torch.Generator().manual_seed(5)))
    assert token_accuracy(predicted, tokens[100:], mask[100:]) < 0.1  # chance: 1/40


def test_text_rouge_l_is_one_for_the_true_text_and_zero_for_other_words():
    tokenizer = load_tokenizer("tiny-llama")  # byte level: every string round-trips
    ids = torch.tensor([list(b"to be or not"), list(b"that is the ")])
    mask = torch.ones_like(ids)
    mask[1, -1] = 0
    assert text_rouge_l(ids, ids, mask, tokenizer) == 1.0
    assert text_rouge_l(torch.full_like(ids, ord("x")), ids, mask, tokenizer) == 0.0
