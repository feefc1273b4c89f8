"""Inversion attacks: read the text back from what a device sends (activations, gradients).

Three attacks, each by the threat model's honest-but-curious server (docs/privacy.md), which
knows the public base model and the last global adapter and sees every frame:

- `train_inverter`: a learned per-position decoder from activations to tokens, trained on
  public text sent the way the devices send theirs (below);
- `relaxed_inversion`: white-box, no training: optimise continuous input embeddings until the
  head's output (through the same clipping) matches what was received, then read the nearest
  token embedding at each position;
- `loss_rows` and `gradient_labels`: the U-shaped split's backward channel, where the gradient a
  device returns at the body's output shows which rows carry a loss (it is exactly zero on rows
  the loss ignores) and, through the LM head's Jacobian, which token each row's label is.

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

from edgesplit.dp import clip_around
from edgesplit.split_model import SplitModel

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
    depth : int (default: 1)
        Hidden layers of the decoder (each Linear(width) -> GELU).
    """

    width: int = 128
    depth: int = 1
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
    depth : int (default: 1)
        Hidden layers.
    """

    def __init__(self, vocab: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 width: int, depth: int = 1) -> None:
        super().__init__()
        self.register_buffer("vocab", vocab)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(len(mean) if i == 0 else width, width), nn.GELU()]
        self.net = nn.Sequential(*layers, nn.Linear(width, len(vocab)))

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
    model = TokenInverter(vocab, seen.mean(0), seen.std(0) + 1e-6, s.width, s.depth)
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


@dataclass(frozen=True)
class Received:
    """What the server received from a device at a split, and how it was sent.

    hidden : torch.Tensor
        ``[blocks, block_size, hidden]`` the activations as received.
    mask : torch.Tensor
        ``[blocks, block_size]`` the padding mask sent with them.
    clip : float or None
        Per-token clip norm around `centre` the device applied (None: no clipping).
    centre : torch.Tensor or None
    """

    hidden: torch.Tensor
    mask: torch.Tensor
    clip: float | None = None
    centre: torch.Tensor | None = None


def relaxed_inversion(model: SplitModel, split: int, received: Received, vocab: torch.Tensor,
                      iterations: int = 200, learning_rate: float = 0.1) -> torch.Tensor:
    """White-box inversion of head activations by optimising relaxed inputs, no training.

    The attacker holds the head (base + the adapter the device started from, bound by the
    caller with `model.using_lora`). Each position's input is a softmax over `vocab` (the
    tokens the attacker considers, as the learned attack's) mixing their embeddings; Adam fits
    the logits until the head's output, clipped as the device clips, is nearest in squared
    error to what was received (the maximum likelihood fit under Gaussian noise), each
    position's error scaled by the received vector's distance from the centre (position 0
    carries massive features). The recovered token is the largest logit. Measured on
    SmolLM2-135M (4 blocks, 200 steps): 48 % of the tokens at split 1; free embeddings read
    back by nearest cosine gave 36 %. Returns ``[blocks, block_size]`` ids.
    """
    vocab = vocab.to(model.device)
    blocks, length = received.mask.shape
    embed = model.architecture.embed
    zeros = torch.zeros(1, length, dtype=torch.long, device=model.device)
    ones = torch.ones_like(zeros)
    with torch.no_grad():  # token embeddings, and what each position adds (learned tables)
        table = embed(model.base_model, vocab[:, None], torch.ones_like(vocab)[:, None],
                      torch.zeros_like(vocab)[:, None])[:, 0]
        offset = (embed(model.base_model, zeros, ones,
                        torch.arange(length)[None].to(model.device))
                  - embed(model.base_model, zeros, ones, zeros))[0]
    target = received.hidden.to(model.device, torch.float32)
    centre = received.centre.to(target.device) if received.centre is not None \
        else target.mean(0)
    scale = (target - centre).norm(dim=-1, keepdim=True).clamp_min(1e-6)
    logits = torch.zeros(blocks, length, len(vocab), requires_grad=True, device=model.device)
    optimizer = torch.optim.Adam([logits], lr=learning_rate)
    for _ in range(iterations):
        inputs = torch.softmax(logits, -1) @ table.float() + offset.float()
        out = model.body(inputs.to(model.dtype), received.mask, 0, split).float()
        if received.clip is not None:
            out = clip_around(out, received.clip, received.centre)
        loss = ((out - target) / scale).pow(2).sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return vocab[logits.detach().argmax(-1)].cpu()


def loss_rows(grad: torch.Tensor, threshold: float) -> torch.Tensor:
    """The rows the attacker takes to carry a loss: squared L2 norm above `threshold` (0 for
    an unclipped, noise-free gradient: rows the loss ignores are exactly zero)."""
    return grad.float().pow(2).sum(-1) > threshold


def loss_row_threshold(grad: torch.Tensor, carries_loss: torch.Tensor) -> float:
    """The squared-norm threshold that best separates loss rows from the others on the
    attacker's own public simulation (balanced accuracy over the candidate cuts)."""
    norms = grad.float().pow(2).sum(-1).flatten()
    truth = carries_loss.flatten().bool()
    if truth.all() or not truth.any():
        return 0.0
    best, best_score = 0.0, -1.0
    for cut in torch.unique(torch.quantile(norms, torch.linspace(0, 1, 201))):
        guess = norms > cut
        score = 0.5 * (float((guess & truth).sum()) / float(truth.sum())
                       + float((~guess & ~truth).sum()) / float((~truth).sum()))
        if score > best_score:
            best, best_score = float(cut), score
    return best


def balanced_accuracy(guess: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean of the recall on each class (0.5 = chance; 1 when a class is absent and the other
    is all right)."""
    guess, truth = guess.flatten().bool(), truth.flatten().bool()
    recalls = [float((guess[truth == c] == c).float().mean()) for c in (True, False)
               if (truth == c).any()]
    return sum(recalls) / len(recalls)


def gradient_labels(model: SplitModel, tail_from: int, body_output: torch.Tensor,
                    mask: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """White-box label recovery from the gradient a U-shaped device returns at the body's
    output `body_output` (which the server computed itself).

    Row t's gradient is, up to the later rows' terms through attention, J_t^T (p_t - e_y) / N
    with J_t the Jacobian of row t's logits and y its label (the next token). The attacker
    runs the device tail's layers (base + adapter, bound by the caller) to their output u_t and
    takes the directional derivative of the logits at u_t along -grad_t: J (J^T (e_y - p_t)),
    largest at y (a Gram matrix's diagonal) where the model did not already predict y. Returns
    ``[blocks, block_size]`` predicted labels (row t: the token at t + 1).
    """
    with torch.no_grad():
        top = model.body(body_output.to(model.device), mask, tail_from, model.num_layers)

    def logits(hidden: torch.Tensor) -> torch.Tensor:
        return model.architecture.logits(model.base_model, hidden)

    predicted = []
    for block in range(len(top)):  # one block at a time: logits are [block_size, V]
        _, direction = torch.func.jvp(logits, (top[block:block + 1].float(),),
                                      (-grad[block:block + 1].to(model.device).float(),))
        predicted.append(direction[0].argmax(-1).cpu())
    return torch.stack(predicted)
