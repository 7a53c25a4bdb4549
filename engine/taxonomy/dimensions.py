"""The eight S-Eval L1 dimensions, the common axis every taxonomy is reported on."""

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
