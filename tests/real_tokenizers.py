"""Offline Llama 3 and Llama 4 tokenizers, built from the tiktoken BPE files in Meta's
``llama-models`` wheel (a test dependency: ``pip install llama-models``; nothing is downloaded).

Where the files come from (see SOURCES.md, "Tokenizers"): ``pip download --no-deps llama-models``
gives ``llama_models-0.3.0-py3-none-any.whl`` (6.6 MB). Inside it:

* ``llama_models/llama3/tokenizer.model``: 2,183,982 bytes, 128,000 lines ``<base64 bytes> <rank>``,
  sha256 ``82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55`` (Llama 3 / 3.1 / 3.2 /
  3.3, so Llama Guard 3 and NemoGuard-8B, which is a LoRA on Llama-3.1-8B-Instruct);
* ``llama_models/llama4/tokenizer.model``: 3,622,230 bytes, 200,000 lines, sha256
  ``d0bdbaf59b0762c8c807617e2d8ea51420eb1b1de266df2495be755c8e0ed6ed`` (Llama 4, so Llama Guard 4,
  which "shares the same tokenizer ... as Llama 4 Scout and Maverick").

(The same files are also under ``models/llama3/`` and ``models/llama4/`` in that wheel.)
Extract them with ``unzip llama_models-0.3.0-py3-none-any.whl 'llama_models/llama3/tokenizer.model'
'llama_models/llama4/tokenizer.model' -d DIR`` and pass ``DIR`` (or the ``.model`` file) below.

The special-token lists, their order (ids from ``len(ranks)`` on) and the pre-tokenizer regexes are
those of ``llama_models/llama3/tokenizer.py`` and ``llama_models/llama4/tokenizer.py`` in the same
wheel. The conversion is the one ``transformers.convert_slow_tokenizer.TikTokenConverter`` does; the
rank file is parsed here so ``tiktoken`` is not needed. Nothing downloads anything. No chat template
is set: assay renders its own, and the judges' published templates are in this folder's goldens.
"""

from __future__ import annotations

import base64
from pathlib import Path

from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

__all__ = [
    "LLAMA3_PATTERN",
    "LLAMA4_PATTERN",
    "llama3_special_tokens",
    "llama4_special_tokens",
    "llama3_tokenizer",
    "llama4_tokenizer",
    "load_bpe_ranks",
]

# llama_models/llama3/tokenizer.py, Tokenizer.pat_str
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# llama_models/llama4/tokenizer.py, Tokenizer.O200K_PATTERN
LLAMA4_PATTERN = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def llama3_special_tokens() -> list[str]:
    """The 256 Llama 3 special tokens in id order (128000 ... 128255)."""
    named = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|reserved_special_token_0|>",
        "<|reserved_special_token_1|>",
        "<|finetune_right_pad_id|>",
        "<|step_id|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eom_id|>",
        "<|eot_id|>",
        "<|python_tag|>",
        "<|image|>",
    ]
    return named + [f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(named))]


def llama4_special_tokens() -> list[str]:
    """The 2048 Llama 4 special tokens in id order (200000 ... 202047)."""

    def reserved(name: str, count: int, start: int = 0) -> list[str]:
        return [f"<|{name}_reserved_special_token_{i}|>" for i in range(start, start + count)]

    text_post_train = [
        "<|header_start|>",
        "<|header_end|>",
        "<|eom|>",
        "<|eot|>",
        "<|step|>",
        *reserved("text_post_train", 6),
        "<|python_start|>",
        "<|python_end|>",
        "<|finetune_right_pad|>",
        *reserved("text_post_train", 61, 8),
    ]
    vision = [
        "<|image_start|>",
        "<|image_end|>",
        "<|vision_reserved_special_token_0|>",
        "<|vision_reserved_special_token_1|>",
        "<|tile_x_separator|>",
        "<|tile_y_separator|>",
        *reserved("vision", 4, 2),
        "<|image|>",
        "<|vision_reserved_special_token_6|>",
        "<|patch|>",
        *reserved("vision", 1041, 7),
    ]
    reasoning = [
        *reserved("reasoning", 8),
        "<|reasoning_thinking_start|>",
        "<|reasoning_thinking_end|>",
    ]
    basic = [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
    ]
    named = basic + text_post_train + vision + reasoning
    assert len(set(named)) == len(named)
    return named + [f"<|reserved_special_token_{i}|>" for i in range(2048 - len(named))]


def _model_file(path: str | Path, family: str) -> Path:
    p = Path(path)
    if p.is_dir():
        for candidate in (
            p / "llama_models" / family / "tokenizer.model",
            p / family / "tokenizer.model",
            p / "tokenizer.model",
        ):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"no {family}/tokenizer.model under {p}")
    return p


def load_bpe_ranks(path: str | Path) -> dict[bytes, int]:
    """Parses a tiktoken rank file (``base64 rank`` per line), as llama_models' loader does."""
    ranks: dict[bytes, int] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


class _RankFileConverter(TikTokenConverter):
    """TikTokenConverter reading the rank file itself (no ``tiktoken`` import)."""

    @staticmethod
    def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
        return load_bpe_ranks(tiktoken_url)


def _build(
    model_file: Path, pattern: str, specials: list[str], bos: str, eos: str, pad: str | None
):
    ranks_len = sum(
        1 for line in model_file.read_text(encoding="utf-8").splitlines() if line.strip()
    )
    backend = _RankFileConverter(
        vocab_file=str(model_file), pattern=pattern, extra_special_tokens=specials
    ).converted()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        clean_up_tokenization_spaces=False,
        model_max_length=131072,
    )
    # The special tokens must sit right after the ranks, in Meta's order.
    first = tok.convert_tokens_to_ids(specials[0])
    last = tok.convert_tokens_to_ids(specials[-1])
    if first != ranks_len or last != ranks_len + len(specials) - 1:
        raise ValueError(f"special token ids {first}..{last} do not follow the {ranks_len} ranks")
    return tok


def llama3_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The Llama 3 tokenizer (128256 ids); ``path``: the wheel's folder or its tokenizer.model.

    BOS ``<|begin_of_text|>`` (128000) is not added automatically (call sites add it as text or
    via the chat template, as the Llama 3 templates do); EOS is ``<|eot_id|>`` (128009) as in the
    instruct models, with ``<|end_of_text|>`` (128001) still a special token.
    """
    return _build(
        _model_file(path, "llama3"),
        LLAMA3_PATTERN,
        llama3_special_tokens(),
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
    )


def llama4_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The Llama 4 tokenizer (202048 ids); ``path``: the wheel's folder or its tokenizer.model.

    BOS ``<|begin_of_text|>`` (200000); EOS ``<|eot|>`` (200008); ``<|header_start|>`` 200005,
    ``<|header_end|>`` 200006, ``<|finetune_right_pad|>`` 200018 (pad).
    """
    return _build(
        _model_file(path, "llama4"),
        LLAMA4_PATTERN,
        llama4_special_tokens(),
        bos="<|begin_of_text|>",
        eos="<|eot|>",
        pad="<|finetune_right_pad|>",
    )


if __name__ == "__main__":  # python load_meta_tokenizers.py DIR
    import sys

    root = sys.argv[1]
    for build in (llama3_tokenizer, llama4_tokenizer):
        t = build(root)
        print(
            build.__name__,
            len(t),
            t.encode("<|begin_of_text|>Hello world", add_special_tokens=False),
        )


def installed_llama_models() -> Path | None:
    """The folder of the installed ``llama_models`` package (it holds both rank files), if any."""
    try:
        import llama_models
    except ImportError:
        return None
    return Path(llama_models.__file__).parent
