"""Offline tokenizers for the judge families whose real vocabularies ship on PyPI (no hub).

Where the files come from (see SOURCES-2.md, "Tokenizers"):

* Llama 2 (SentencePiece, 32000 pieces): ``vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf``
  in the ``llama-cpp-python`` sdist (0.3.36). llama.cpp generated it from
  ``meta-llama/Llama-2-7b-hf`` (``convert_hf_to_gguf_update.py``); the ``.gguf.inp`` /
  ``.gguf.out`` beside it are test strings and the ids the Hugging Face tokenizer of that repo
  gave them (``encode(text, add_special_tokens=False)``).
* Qwen (byte-level BPE, 151643 ranks): ``qwen.tiktoken`` in ``dashscope``
  (``dashscope/resources/``) or ``qwen-agent`` (``qwen_agent/utils/``), the same bytes; or
  ``ggml-vocab-qwen2.gguf`` (from ``Qwen/Qwen1.5-7B``) in the llama-cpp-python sdist. Qwen1,
  Qwen1.5/2/2.5 and Qwen3 share these ranks and merges; they differ only in the added tokens from
  id 151643 on, which :func:`qwen_tokenizer` sets per family.

No InternLM2 (92544-piece SentencePiece) or Baichuan2 vocabulary was found on PyPI.

Nothing here downloads anything; every function takes a path to an extracted file. The GGUF
reader is a minimal one of our own (metadata only), so neither ``gguf`` nor ``torch`` is needed.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers
from transformers import LlamaTokenizer, Qwen2Tokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.tokenization_utils_base import generate_merges

__all__ = ["read_gguf_metadata", "llama2_tokenizer", "qwen_tokenizer", "QWEN_ADDED_TOKENS"]

# --------------------------------------------------------------------------- GGUF metadata

_SCALAR = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
    12: "<d",
}  # fmt: skip


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """The key/value metadata of a GGUF file (v2/v3), arrays as lists; tensors are skipped."""
    data = Path(path).read_bytes()
    if data[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    version = struct.unpack_from("<I", data, 4)[0]
    if version not in (2, 3):
        raise ValueError(f"{path}: GGUF version {version} not supported")
    _tensors, kv_count = struct.unpack_from("<QQ", data, 8)
    pos = 24

    def string() -> str:
        nonlocal pos
        (n,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        s = data[pos : pos + n].decode("utf-8")
        pos += n
        return s

    def value(vtype: int) -> Any:
        nonlocal pos
        if vtype == 8:
            return string()
        if vtype == 9:
            (itype,) = struct.unpack_from("<I", data, pos)
            (count,) = struct.unpack_from("<Q", data, pos + 4)
            pos += 12
            if itype in _SCALAR:
                fmt = _SCALAR[itype]
                width = struct.calcsize(fmt)
                out = list(struct.unpack_from("<" + fmt[1] * count, data, pos))
                pos += width * count
                return out
            return [value(itype) for _ in range(count)]
        fmt = _SCALAR[vtype]
        (v,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v

    meta = {}
    for _ in range(kv_count):
        key = string()
        (vtype,) = struct.unpack_from("<I", data, pos)
        pos += 4
        meta[key] = value(vtype)
    return meta


# --------------------------------------------------------------------------- Llama 2


def llama2_tokenizer(path: str | Path) -> LlamaTokenizer:
    """Llama 2's tokenizer from ``ggml-vocab-llama-spm.gguf`` (a file, or the folder holding it).

    Shaped like ``meta-llama/Llama-2-7b-hf``'s ``tokenizer.json``: BPE over the SentencePiece pieces
    (merges recovered from the piece scores), byte fallback, normalizer ``Prepend("▁")`` +
    ``Replace(" ", "▁")`` and no pre-tokenizer; ``<s>`` (1) is added in front of every encoding
    (``add_bos_token``), ``</s>`` (2) is EOS, ``<unk>`` (0) UNK; no pad token.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "ggml-vocab-llama-spm.gguf"
    meta = read_gguf_metadata(path)
    if meta.get("tokenizer.ggml.model") != "llama":
        raise ValueError(f"{path}: not a SentencePiece (llama) vocabulary")
    tokens = meta["tokenizer.ggml.tokens"]
    scores = meta["tokenizer.ggml.scores"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merges = generate_merges(vocab, dict(zip(tokens, scores, strict=True)))
    tok = LlamaTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=tokens[meta.get("tokenizer.ggml.unknown_token_id", 0)],
        bos_token=tokens[meta["tokenizer.ggml.bos_token_id"]],
        eos_token=tokens[meta["tokenizer.ggml.eos_token_id"]],
        add_bos_token=True,
        add_eos_token=False,
        legacy=True,
    )
    # The Llama 2 repo's tokenizer.json spells the leading space with a normalizer (Prepend +
    # Replace) and has no pre-tokenizer; the reference ids in the .gguf.out file were made so.
    backend = tok.backend_tokenizer
    backend.normalizer = normalizers.Sequence(
        [normalizers.Prepend(prepend="\u2581"), normalizers.Replace(pattern=" ", content="\u2581")]
    )
    backend.pre_tokenizer = None
    return tok


# --------------------------------------------------------------------------- Qwen

_QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# (content, special) from id 151643 on, per family, as in each family's tokenizer_config.json
_QWEN2_BASE = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True)]
_QWEN25_EXTRA = [
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
    ("<|file_sep|>", False),
]  # fmt: skip
_QWEN3_EXTRA = [
    ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
]  # fmt: skip

QWEN_ADDED_TOKENS: dict[str, list[tuple[str, bool]]] = {
    # Qwen (1) chat (tiktoken QWenTokenizer): endoftext, im_start, im_end, <|extra_0..204|>
    "qwen1": _QWEN2_BASE + [(f"<|extra_{i}|>", True) for i in range(205)],
    "qwen2": _QWEN2_BASE,  # Qwen1.5 / Qwen2
    "qwen2.5": _QWEN2_BASE + _QWEN25_EXTRA,
    "qwen3": _QWEN2_BASE + _QWEN25_EXTRA + _QWEN3_EXTRA,  # Qwen3, Qwen3Guard
}
# EOS that generation stops at, per family (the instruct / chat models; pad is <|endoftext|>)
_QWEN_EOS = {
    "qwen1": "<|endoftext|>", "qwen2": "<|im_end|>", "qwen2.5": "<|im_end|>", "qwen3": "<|im_end|>",
}  # fmt: skip
_QWEN_BASE_VOCAB = 151643


def _qwen_vocab_from_tiktoken(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    spelling: dict[int, str] = bytes_to_unicode()  # type: ignore[no-untyped-call]

    def to_str(raw: bytes) -> str:
        return "".join(spelling[x] for x in raw)

    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            encoded, rank_text = line.split()
            ranks[base64.b64decode(encoded)] = int(rank_text)
    vocab = {to_str(token): rank for token, rank in ranks.items()}
    # merges as transformers' TikTokenConverter recovers them from the ranks
    merges: list[tuple[bytes, bytes, int]] = []
    for token, rank in ranks.items():
        if len(token) == 1:
            continue
        local = [
            (token[:i], token[i:], rank)
            for i in range(1, len(token))
            if token[:i] in ranks and token[i:] in ranks
        ]
        local.sort(key=lambda m: (ranks[m[0]], ranks[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2])
    return vocab, [(to_str(a), to_str(b)) for a, b, _ in merges]


def _qwen_vocab_from_gguf(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    meta = read_gguf_metadata(path)
    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"{path}: not a byte-level BPE vocabulary")
    tokens = meta["tokenizer.ggml.tokens"][:_QWEN_BASE_VOCAB]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    return vocab, merges


def qwen_tokenizer(path: str | Path, family: str = "qwen3") -> Qwen2Tokenizer:
    """A Qwen tokenizer from ``qwen.tiktoken`` or ``ggml-vocab-qwen2.gguf`` (a file or its folder).

    The 151643 byte-level BPE tokens come from the file; the added tokens from 151643 on are those
    of ``family`` (``qwen1``, ``qwen2``, ``qwen2.5``, ``qwen3``; see :data:`QWEN_ADDED_TOKENS`).
    The GGUF carries Qwen's own 151387 merges; from ``qwen.tiktoken`` the merges are recovered from
    the ranks (every valid split, as transformers' TikTokenConverter does), which encodes the same
    (checked on llama.cpp's 46 reference strings and ~370 other texts); a folder with both uses the
    GGUF. NFC normalizer and Qwen2's split regex as in Qwen2/Qwen3 ``tokenizer.json``. No BOS is
    ever added (``bos_token`` None); EOS is ``<|im_end|>`` (``<|endoftext|>`` for ``qwen1``); pad
    ``<|endoftext|>``.
    """
    if family not in QWEN_ADDED_TOKENS:
        raise ValueError(f"unknown Qwen family {family!r}; one of {sorted(QWEN_ADDED_TOKENS)}")
    path = Path(path)
    if path.is_dir():
        found = [p for p in (path / "ggml-vocab-qwen2.gguf", path / "qwen.tiktoken") if p.exists()]
        if not found:
            raise FileNotFoundError(f"{path}: no qwen.tiktoken or ggml-vocab-qwen2.gguf")
        path = found[0]
    if path.suffix == ".gguf":
        vocab, merges = _qwen_vocab_from_gguf(path)
    else:
        vocab, merges = _qwen_vocab_from_tiktoken(path)
    if len(vocab) != _QWEN_BASE_VOCAB:
        raise ValueError(f"{path}: {len(vocab)} BPE tokens, expected {_QWEN_BASE_VOCAB}")
    added = QWEN_ADDED_TOKENS[family]
    # put the added tokens in the vocabulary at their fixed ids first, so that naming EOS/pad below
    # cannot give them the next free id in the wrong order
    vocab = dict(vocab)
    vocab.update({content: _QWEN_BASE_VOCAB + i for i, (content, _special) in enumerate(added)})
    kwargs: dict[str, Any] = {
        "vocab": vocab,
        "merges": merges,
        "unk_token": None,
        "bos_token": None,
        "eos_token": _QWEN_EOS[family],
        "pad_token": "<|endoftext|>",
    }
    tok = Qwen2Tokenizer(**kwargs)
    backend = tok.backend_tokenizer
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    # match them whole in text (special ones are also dropped by skip_special_tokens)
    special = [AddedToken(c, normalized=False, special=True) for c, sp in added if sp]
    plain = [AddedToken(c, normalized=False, special=False) for c, sp in added if not sp]
    tok.add_special_tokens(
        {"additional_special_tokens": special}, replace_extra_special_tokens=False
    )
    if plain:
        tok.add_tokens(plain)
    for offset, (content, _special) in enumerate(added):
        got = tok.convert_tokens_to_ids(content)
        if got != _QWEN_BASE_VOCAB + offset:
            raise AssertionError(f"{content}: id {got}, expected {_QWEN_BASE_VOCAB + offset}")
    return tok
