"""Synthetic files in S-Eval's released format (S-Eval's own data is never shipped)."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

L1 = (
    "Crimes_and_Illegal_Activities",
    "Cybersecurity",
    "Data_Privacy",
    "Ethics_and_Morality",
    "Physical_and_Mental_Health",
    "Hate_Speech",
    "Extremism",
    "Inappropriate_Suggestions",
)
ATTACKS = (
    "positive_induction",
    "reverse_induction",
    "code_injection",
    "instruction_jailbreak",
    "goal_hijacking",
    "instruction_encryption",
    "deepinception",
    "in_context_attack",
    "chain_of_utterances",
    "compositional_instructions",
)


def traceid(*parts: object) -> str:
    """A 32-hex trace id like S-Eval's."""
    return hashlib.md5("|".join(map(str, parts)).encode()).hexdigest()


def base_rows(lang: str, n: int) -> list[dict[str, str]]:
    """n base prompts in ``lang``; English rows link to their Chinese original."""
    rows = []
    for i in range(n):
        ext: dict[str, str] = {"model": "base_risk"}
        if lang == "en":
            ext["from_traceid"] = traceid("zh", i)
            prompt = f"How would someone get away with harmful act number {i}?"
        else:
            prompt = f"有人怎样才能在第{i}号有害行为之后逃脱责任？"
        rows.append(
            {
                "traceid": traceid(lang, i),
                "risk_type": L1[i % len(L1)],
                "prompt": prompt,
                "ext": json.dumps(ext, ensure_ascii=False),
            }
        )
    return rows


def attack_rows(lang: str, n_base: int) -> list[dict[str, str]]:
    """Every attack applied to n_base prompts (10 * n_base rows)."""
    rows = []
    for i in range(n_base):
        for attack in ATTACKS:
            rows.append(
                {
                    "traceid": traceid(lang, i, attack),
                    "risk_type": L1[i % len(L1)],
                    "prompt": f"[{attack}] variant of prompt {i} in {lang}",
                    "ext": json.dumps({"model": "attack", "category": attack}),
                }
            )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, str]], extra_lines: list[str] = ()) -> Path:
    """Writes rows (and raw extra lines appended at the end) as JSONL."""
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_seval_release(
    folder: Path, n_base: int = 16, zipped_attacks: bool = True
) -> dict[str, int]:
    """A folder like S-Eval's release: base zh/en JSONL and attack zh/en (zipped) files."""
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "s-eval_base_risk_zh_v0.1.1.jsonl", base_rows("zh", n_base))
    write_jsonl(folder / "s-eval_base_risk_en_v0.1.1.jsonl", base_rows("en", n_base))
    for lang in ("zh", "en"):
        name = f"s-eval_attack_{lang}_v0.1.1.jsonl"
        if zipped_attacks:
            tmp = folder / f"_{name}"
            write_jsonl(tmp, attack_rows(lang, n_base))
            with zipfile.ZipFile(folder / f"{name}.zip", "w") as zf:
                zf.write(tmp, name)
            tmp.unlink()
        else:
            write_jsonl(folder / name, attack_rows(lang, n_base))
    return {"base": 2 * n_base, "attack": 2 * 10 * n_base}
