"""Conversations become one block each with labels on the responses only; prompts for sampling
are put as training presented the data."""

from __future__ import annotations

import copy
import logging

import pytest

from edgesplit.blocks import IGNORE
from edgesplit.formats import encode_conversations, prompt_ids, render, response_pieces
from edgesplit.tokenizer import byte_level_tokenizer

EOS = byte_level_tokenizer().eos_token


def _bytes(text: str) -> list[int]:
    return byte_level_tokenizer()(text, add_special_tokens=False)["input_ids"]


def test_a_conversation_fills_one_block_with_labels_on_its_responses_only():
    # Prepare
    tokenizer = byte_level_tokenizer()
    turns = (("user", "hi"), ("assistant", "yo"), ("user", "and?"), ("assistant", "ok"),
             ("user", "unanswered"))

    # Execute
    blocks = encode_conversations([turns], tokenizer, block_size=64)

    # Assert: the plain template, and labels exactly where the assistant speaks (its eos too)
    prompt1, answer1 = "user: hi\nassistant: ", f"yo{EOS}\n"
    prompt2, answer2 = "user: and?\nassistant: ", f"ok{EOS}\n"
    expected_ids = _bytes(prompt1 + answer1 + prompt2 + answer2)  # the last user turn: no loss
    n = len(expected_ids)
    assert blocks.input_ids.shape == (1, 64)
    assert blocks.input_ids[0, :n].tolist() == expected_ids
    assert blocks.attention_mask[0].tolist() == [1] * n + [0] * (64 - n)
    expected_labels = ([IGNORE] * len(_bytes(prompt1)) + _bytes(answer1)
                       + [IGNORE] * len(_bytes(prompt2)) + _bytes(answer2))
    assert blocks.labels[0].tolist() == expected_labels + [IGNORE] * (64 - n)


def test_truncation_keeps_the_block_size_and_drops_examples_left_without_a_response(caplog):
    # Prepare
    tokenizer = byte_level_tokenizer()
    short = (("user", "q"), ("assistant", "answer"))
    long = (("user", "a question longer than the block"), ("assistant", "answer"))

    # Execute
    with caplog.at_level(logging.WARNING):
        blocks = encode_conversations([short, long], tokenizer, block_size=24)

    # Assert
    assert len(blocks) == 1 and blocks.input_ids.shape == (1, 24)
    assert blocks.attention_mask.all()  # "user: q\nassistant: answer..." is cut at 24
    assert (blocks.labels[0] != IGNORE).sum() == 24 - len(_bytes("user: q\nassistant: "))
    assert "1 of 2 examples dropped: no response token within data.block-size 24" in caplog.text


def test_a_template_that_rewrites_earlier_turns_is_refused():
    # Prepare: earlier answers are shortened once a later turn follows (as some reasoning
    # models' templates do)
    tokenizer = copy.deepcopy(byte_level_tokenizer())
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}[answer]"
        "{% else %}{{ m['content'] }}{% endif %}{% endfor %}")
    turns = (("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"))

    # Execute / Assert
    assert response_pieces(turns[:2], tokenizer) == [("a", False), ("b", True)]
    with pytest.raises(ValueError, match="renders a conversation's earlier turns differently"):
        response_pieces(turns, tokenizer)


def test_sample_prompts_start_as_training_records_do():
    tokenizer = byte_level_tokenizer()
    assert prompt_ids("Hi", tokenizer, "text") == [tokenizer.eos_token_id, *_bytes("Hi")]
    assert prompt_ids("Hi", tokenizer, "instruction") == _bytes("user: Hi\nassistant: ")
    assert render(tokenizer, (("user", "Hi"),), add_generation_prompt=True) == (
        "user: Hi\nassistant: ")
