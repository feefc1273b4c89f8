"""A learned inversion attack: read the tokens back from the activations a split sends.

The threat: the server holds the frozen base model and every adapter, so it can push public
text through any client's head and learn to map the activations at split k back to the tokens;
then it applies that decoder to what the device sends. `TokenInverter` is that decoder, trained
per split on (activation, token) pairs and scored on text it never saw.

The attack reads one position at a time: standardise the vector (each feature by its mean and
std over the training activations: the scale grows with depth and a few features carry massive
values), Linear(hidden, width) -> GELU -> Linear(width, V), a softmax over the V tokens of the
attacker's training text. Why no context: measured on SmolLM2-135M (splits 1,
5, 15), feeding the next position's vector too (it attends to this token) scored 2-6 points
lower: the vector at position t already holds token t. A token the attacker's text never
contained cannot be named, so accuracy is capped by the share of evaluated tokens in its
vocabulary (`coverage`), reported with every score.

Scores: token accuracy (the share of real positions whose token is recovered) and ROUGE-L F1 on
the words of the decoded text, per block, averaged over blocks, as the inversion literature
reports it (e.g. BiSR, CCS'24). ROUGE-L is written here (`lcs_length`, `rouge_l_f1`,
`rouge_words`, following the `rouge-score` package's default tokenisation: lowercase, runs of
[a-z0-9]) because no maintained ROUGE package is installed and the measure is a 15-line
longest-common-subsequence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

#: Corrupts blocks of activations ``[blocks, block_size, hidden]`` as the defence under test
#: would (noise, a wire codec), drawing any randomness from the generator.
Perturb = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class AttackSettings:
    """How hard the attacker trains.

    width : int (default: 128)
        Hidden width of the decoder.
    epochs : int (default: 3)
        Passes over the training tokens.
    batch_tokens : int (default: 512)
    learning_rate : float (default: 6e-3)
        AdamW's rate, constant. Chosen on SmolLM2-135M split 15 (20 k training tokens, width
        128, 3 epochs): batches of 512 at 6e-3 recovered 76.8 % of the tokens in 0.6x the CPU
        time of batches of 256 at 3e-3 (77.0 %); 1024 at 1e-2 gave 75.0 %, two epochs 64.9 %,
        and a linear decay of the rate to 0 69.1 % against 77.0 % (the attack is still learning
        when its budget ends).
    weight_decay : float (default: 0.01)
    seed : int (default: 0)
        Seeds the initial weights, the batch order and the training noise.
    """

    width: int = 128
    epochs: int = 3
    batch_tokens: int = 512
    learning_rate: float = 6e-3
    weight_decay: float = 0.01
    seed: int = 0


class TokenInverter(nn.Module):
    """Per-position decoder from activations to token ids (see the module docstring).

    Parameters
    ----------
    vocab : torch.Tensor
        int64 token ids the decoder can name (class i is ``vocab[i]``).
    mean, std : torch.Tensor
        ``[hidden]`` feature statistics of the training activations.
    width : int
    """

    def __init__(self, vocab: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 width: int) -> None:
        super().__init__()
        self.register_buffer("vocab", vocab)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net = nn.Sequential(nn.Linear(len(mean), width), nn.GELU(),
                                 nn.Linear(width, len(vocab)))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the vocabulary, ``[..., V]``."""
        return self.net((hidden - self.mean) / self.std)

    @torch.no_grad()
    def predict(self, hidden: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """The recovered token id at every position of ``[..., hidden]``."""
        rows = hidden.reshape(-1, hidden.shape[-1])
        classes = torch.cat([self(rows[i:i + chunk]).argmax(-1)
                             for i in range(0, len(rows), chunk)])
        return self.vocab[classes].reshape(hidden.shape[:-1])


def train_inverter(hidden: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                   settings: AttackSettings | None = None,
                   perturb: Perturb | None = None) -> TokenInverter:
    """Fit a `TokenInverter` to the activations of the attacker's text and its tokens.

    Parameters
    ----------
    hidden : torch.Tensor
        ``[blocks, block_size, hidden]`` clean activations of the attacker's text.
    tokens, mask : torch.Tensor
        ``[blocks, block_size]`` int64: the tokens, and 1 on real positions (0 on padding, left
        out of training).
    settings : AttackSettings, optional
    perturb : callable, optional
        The defence the attacker faces, applied to whole blocks (as a device sends them) afresh
        every epoch: the attacker trains on what the devices would send, fresh noise each time.

    Returns
    -------
    TokenInverter
    """
    s = settings or AttackSettings()
    generator = torch.Generator().manual_seed(s.seed)
    torch.manual_seed(s.seed)  # nn.Linear draws its initial weights from the global generator
    real = mask.bool()

    def rows() -> torch.Tensor:
        return (perturb(hidden, generator) if perturb else hidden)[real]

    vocab, target = torch.unique(tokens[real], return_inverse=True)
    seen = rows()
    model = TokenInverter(vocab, seen.mean(0), seen.std(0) + 1e-6, s.width)
    optimizer = torch.optim.AdamW(model.parameters(), s.learning_rate,
                                  weight_decay=s.weight_decay)
    for epoch in range(s.epochs):
        if epoch and perturb:
            seen = rows()
        order = torch.randperm(len(target), generator=generator)
        for start in range(0, len(target), s.batch_tokens):
            batch = order[start:start + s.batch_tokens]
            loss = nn.functional.cross_entropy(model(seen[batch]), target[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def token_accuracy(predicted: torch.Tensor, tokens: torch.Tensor,
                   mask: torch.Tensor) -> float:
    """Share of positions with ``mask == 1`` whose token was recovered."""
    real = mask.bool()
    return float((predicted[real] == tokens[real]).float().mean())


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence of two sequences (O(len(a) len(b)))."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_f1(candidate: Sequence, reference: Sequence) -> float:
    """ROUGE-L F1: the harmonic mean of LCS / len(candidate) and LCS / len(reference)."""
    lcs = lcs_length(candidate, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def rouge_words(text: str) -> list[str]:
    """Words as ROUGE counts them: lowercase runs of letters and digits."""
    return re.findall(r"[a-z0-9]+", text.lower())


def text_rouge_l(predicted: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                 tokenizer: PreTrainedTokenizerBase) -> float:
    """Mean over blocks of ROUGE-L F1 between the decoded recovered and true texts.

    Parameters
    ----------
    predicted, tokens, mask : torch.Tensor
        ``[blocks, block_size]``. Blocks whose true text has no word are skipped.
    tokenizer : PreTrainedTokenizerBase
    """
    scores = []
    for guess, truth, real in zip(predicted, tokens, mask.bool(), strict=True):
        reference = rouge_words(tokenizer.decode(truth[real].tolist()))
        if reference:
            scores.append(rouge_l_f1(rouge_words(tokenizer.decode(guess[real].tolist())),
                                     reference))
    return sum(scores) / len(scores) if scores else 0.0
