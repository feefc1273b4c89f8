"""How records become token blocks: plain text is packed, a conversation fills one block of its
own with the loss on its responses only; and how a sample prompt is put to the model.

Conversations (instruction data becomes a user turn and an assistant turn) are rendered with the
tokenizer's own chat template, or with `PLAIN_CHAT_TEMPLATE` when it has none (base models, the
tiny test presets). The response tokens are found by rendering the conversation turn by turn:
the text an assistant turn adds after its generation prompt is the response (its end-of-turn
marker included, so the model learns to stop). transformers' own `return_assistant_tokens_mask`
needs `{% generation %}` markers that few templates have, hence this.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import chain

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from edgesplit.blocks import IGNORE, TokenBlocks
from edgesplit.corpus import Conversation

logger = logging.getLogger(__name__)

# "role: content" lines; an assistant turn ends with the end-of-text token.
PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.eos_token_id if tokenizer.pad_token_id is None else tokenizer.pad_token_id


def _blocks(ids: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> TokenBlocks:
    return TokenBlocks(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(labels))


def pack_text(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase,
              block_size: int) -> TokenBlocks:
    """Tokenise texts, end each with eos, concatenate, and cut into blocks.

    Parameters
    ----------
    texts : sequence of str
        Records in the order they are joined.
    tokenizer : PreTrainedTokenizerBase
        Any Hugging Face tokenizer; only its call, ``eos_token_id`` and ``pad_token_id``
        are used (``pad_token_id`` falls back to eos when unset).
    block_size : int
        Tokens per block.

    Returns
    -------
    TokenBlocks
        ``ceil(n_tokens / block_size)`` blocks; the last one right-padded with mask 0; every
        token is its own label except the padding. A tokenizer that starts every encoding with
        BOS (Gemma's) gets BOS first in every block, then ``block_size - 1`` tokens of the
        stream.
    """
    eos = tokenizer.eos_token_id
    token_lists = []
    if texts:  # tokenizers reject an empty batch
        encoded = tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)
        token_lists = encoded["input_ids"]
    stream = np.fromiter(chain.from_iterable(t + [eos] for t in token_lists), dtype=np.int64)
    bos = leading_bos(tokenizer)
    width = block_size - (bos is not None)
    n_blocks = -(-len(stream) // width)
    flat = np.full(n_blocks * width, _pad_id(tokenizer), dtype=np.int64)
    flat[: len(stream)] = stream
    mask = np.zeros_like(flat)
    mask[: len(stream)] = 1
    ids, mask = flat.reshape(n_blocks, width), mask.reshape(n_blocks, width)
    if bos is not None:
        ids = np.concatenate([np.full((n_blocks, 1), bos, dtype=np.int64), ids], axis=1)
        mask = np.concatenate([np.ones((n_blocks, 1), dtype=np.int64), mask], axis=1)
    return _blocks(ids, mask, np.where(mask == 1, ids, IGNORE))


def leading_bos(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """BOS if the tokenizer puts it before every text, else None. A model trained that way
    is lost without it: Gemma 3 270M scored perplexity 4892 on held-out Shakespeare blocks
    without BOS and 434 with it."""
    bos = tokenizer.bos_token_id
    first = tokenizer("a")["input_ids"][:1]
    return bos if bos is not None and first == [bos] else None


def render(tokenizer: PreTrainedTokenizerBase, turns: Conversation,
           add_generation_prompt: bool = False) -> str:
    """A conversation as text, by the tokenizer's chat template (or `PLAIN_CHAT_TEMPLATE`)."""
    return tokenizer.apply_chat_template(
        [{"role": role, "content": content} for role, content in turns], tokenize=False,
        add_generation_prompt=add_generation_prompt,
        chat_template=None if tokenizer.chat_template else PLAIN_CHAT_TEMPLATE)


def response_pieces(turns: Conversation, tokenizer: PreTrainedTokenizerBase
                    ) -> list[tuple[str, bool]]:
    """The rendered conversation cut into (text, is_response) pieces, up to its last assistant
    turn (later turns carry no loss and are left out).

    Raises
    ------
    ValueError
        When the template renders an earlier turn differently once later turns follow (some
        templates drop the reasoning of past answers): the responses cannot then be found.
    """
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, (role, _) in enumerate(turns):
        if role != "assistant":
            continue
        prompt = render(tokenizer, turns[:i], add_generation_prompt=True)
        full = render(tokenizer, turns[: i + 1])
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise ValueError(
                "the tokenizer's chat template renders a conversation's earlier turns "
                "differently once an answer follows, so the response tokens cannot be found; "
                "use single-turn data (data.format = \"instruction\")")
        pieces += [(prompt[len(done):], False), (full[len(prompt):], True)]
        done = full
    return pieces


def encode_conversations(conversations: Sequence[Conversation],
                         tokenizer: PreTrainedTokenizerBase, block_size: int) -> TokenBlocks:
    """One block per conversation: right-padded or truncated to ``block_size``, labels only on
    the assistant turns.

    A conversation whose responses all fall beyond ``block_size`` would carry no loss: it is
    dropped, and the number dropped is logged.

    Parameters
    ----------
    conversations : sequence of Conversation
        ``((role, content), ...)`` per example.
    tokenizer : PreTrainedTokenizerBase
    block_size : int
        Tokens per block.

    Returns
    -------
    TokenBlocks
        Labels are ``IGNORE`` on prompts, templates' user and system turns, and padding.
    """
    cut = [response_pieces(turns, tokenizer) for turns in conversations]
    texts = [text for pieces in cut for text, _ in pieces]
    ids_of = iter(tokenizer(texts, add_special_tokens=False,
                            return_attention_mask=False)["input_ids"] if texts else [])
    rows = []
    for pieces in cut:
        ids, labels = [], []
        for _, is_response in pieces:
            tokens = next(ids_of)
            ids += tokens
            labels += tokens if is_response else [IGNORE] * len(tokens)
        ids, labels = ids[:block_size], labels[:block_size]
        # The label at position 0 is never predicted (the loss shifts labels by one).
        if any(label != IGNORE for label in labels[1:]):
            rows.append((ids, labels))
    if len(rows) < len(conversations):
        logger.warning("%d of %d examples dropped: no response token within data.block-size %d",
                       len(conversations) - len(rows), len(conversations), block_size)
    shape = (len(rows), block_size)
    input_ids = np.full(shape, _pad_id(tokenizer), dtype=np.int64)
    mask, target = np.zeros(shape, dtype=np.int64), np.full(shape, IGNORE, dtype=np.int64)
    for row, (ids, labels) in enumerate(rows):
        input_ids[row, : len(ids)], mask[row, : len(ids)] = ids, 1
        target[row, : len(ids)] = labels
    return _blocks(input_ids, mask, target)


def prompt_ids(prompt: str, tokenizer: PreTrainedTokenizerBase, data_format: str) -> list[int]:
    """The tokens a sample generation starts from, as training presents a record: plain text
    after an end-of-text token (records are joined by one), instruction and chat data as a user
    turn followed by the template's generation prompt."""
    if data_format == "text":  # a block starts with BOS where the tokenizer uses one
        start = leading_bos(tokenizer)
        return [tokenizer.eos_token_id if start is None else start,
                *tokenizer(prompt, add_special_tokens=False)["input_ids"]]
    text = render(tokenizer, (("user", prompt),), add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
