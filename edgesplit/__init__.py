"""EdgeSplit's core library: a causal LM with LoRA run as device head + server tail, its data
and its wire format. It imports nothing of the packages above it (`allocation`, `strategies`,
`clients`, `fl_app`), and nothing heavy at import: the names below load on first use, so the
allocator can take `edgesplit.splits` without torch.

    from edgesplit import SplitModel, LoraSettings
    model = SplitModel("tiny-llama", LoraSettings(rank=4))
    hidden = model.head(input_ids, attention_mask, split=2)          # the device's part
    loss = model.tail(hidden, attention_mask, 2, labels).loss         # the server's part

Modules: `split_model` (head/body/tail with peft LoRA), `families` (how any decoder-only causal LM
is driven piecewise, read off the model), `presets` (built-in models, checkpoint folders,
tokenizers), `placement` (base dtype and device names), `hardware` (edge devices, servers and links
from published specifications), `corpus` (the built-in corpora),
`local_corpus` (the user's own data from a local path), `formats` (records -> token blocks: packed
text, conversations with the loss on responses), `blocks` (token blocks and their batch sampler),
`data` (the federated split), `generation` (greedy samples), `framing` (tensor frames of the
stream), `records` (tensors in Flower records, validated), `protocol` (every message, record and
frame name), `channel` (wireless channel models), `lora_routing` (per-row LoRA for batched tails),
`optim`, `settings`, `splits`.
"""

from importlib import import_module

#: The package version (pyproject's `version`): the device agent compares it with the app's.
__version__ = "0.1.0"

_EXPORTS = {
    "SplitModel": "edgesplit.split_model",
    "LoraSettings": "edgesplit.settings",
    "DataSettings": "edgesplit.settings",
    "Settings": "edgesplit.settings",
    "FederatedText": "edgesplit.data",
    "federated_text": "edgesplit.data",
    "load_corpus": "edgesplit.corpus",
    "PRESETS": "edgesplit.presets",
    "resolve_checkpoint": "edgesplit.presets",
    "load_tokenizer": "edgesplit.presets",
    "make_channel": "edgesplit.channel",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgesplit' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
