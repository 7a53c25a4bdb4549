"""Language tags to the template language of assay's own texts (judge prompts, attacks,
generation instructions): Chinese or English."""

from __future__ import annotations


def lang_key(lang: str) -> str:
    """Returns ``zh`` for a Chinese language tag (``zh``, ``zh-CN``, ``zh-Hans``, ``cmn``,
    ``yue``, ``wuu``), else ``en``."""
    primary = lang.strip().lower().replace("_", "-").split("-", 1)[0]
    return "zh" if primary in ("zh", "cmn", "yue", "wuu") else "en"
