"""The eight S-Eval L1 dimensions, the common axis every taxonomy is reported on, and the ninth
dimension YuFeng-XGuard adds to them."""

from __future__ import annotations

SEVAL_L1: tuple[str, ...] = (
    "Crimes_and_Illegal_Activities",
    "Cybersecurity",
    "Data_Privacy",
    "Ethics_and_Morality",
    "Physical_and_Mental_Health",
    "Hate_Speech",
    "Extremism",
    "Inappropriate_Suggestions",
)
"""The S-Eval L1 keys exactly as the ``risk_type`` field of S-Eval's data spells them, in order."""

MINORS_L1 = "Risks_Involving_Minors"
"""The ninth dimension, "Risks Involving Minors", that YuFeng-XGuard-Reason (Alibaba-AAIG, S-Eval's
authors) adds to S-Eval's eight in its category list. It is not in S-Eval's data: no S-Eval prompt
has it as ``risk_type``."""

EXTENDED_L1: tuple[str, ...] = (*SEVAL_L1, MINORS_L1)
"""The nine dimensions a category or tree node may count under: :data:`SEVAL_L1`, then
:data:`MINORS_L1`. Taxonomies listed by ``taxonomy_names()`` use only :data:`SEVAL_L1`."""
