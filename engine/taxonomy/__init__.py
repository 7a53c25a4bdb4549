"""Risk taxonomies: the S-Eval risk tree, guard-model and dataset taxonomies, and their mapping.

S-Eval's eight L1 dimensions (:data:`SEVAL_L1`) are the common reporting axis; YuFeng-XGuard's
ninth, Risks Involving Minors (:data:`MINORS_L1`), extends it (:data:`EXTENDED_L1`,
:func:`seval_extended_tree`, taxonomy ``xguard``). The S-Eval tree
(:func:`seval_tree`) holds them and the 25 published L2 categories; users extend it with their
own L3/L4 from a YAML file (:func:`load_risk_tree`). Flat taxonomies (:func:`get_taxonomy`: Aegis,
NemoGuard, MLCommons/Llama Guard, Qwen3Guard, HarmBench) map every category onto those
dimensions (:func:`to_seval_l1`). See ``docs/taxonomies.md``.
"""

from __future__ import annotations

from .catalog import (
    CRITICAL,
    SPARSE,
    XGUARD_PATHS,
    XGUARD_SAFE,
    get_taxonomy,
    taxonomy_names,
    to_seval_l1,
)
from .categories import LABEL, Category, Taxonomy
from .dimensions import EXTENDED_L1, MINORS_L1, SEVAL_L1
from .errors import TaxonomyError, TaxonomyFileError, UnknownRiskError, UnknownTaxonomyError
from .loader import (
    RiskEntrySpec,
    RiskNodeSpec,
    RiskTreeFile,
    load_risk_tree,
    risk_tree_from_dict,
    risk_tree_from_yaml,
)
from .seval import seval_extended_tree, seval_tree
from .tree import MAX_LEVEL, RiskNode, RiskTree

__all__ = [
    "CRITICAL",
    "EXTENDED_L1",
    "LABEL",
    "MAX_LEVEL",
    "MINORS_L1",
    "SEVAL_L1",
    "SPARSE",
    "XGUARD_PATHS",
    "XGUARD_SAFE",
    "Category",
    "RiskEntrySpec",
    "RiskNode",
    "RiskNodeSpec",
    "RiskTree",
    "RiskTreeFile",
    "Taxonomy",
    "TaxonomyError",
    "TaxonomyFileError",
    "UnknownRiskError",
    "UnknownTaxonomyError",
    "get_taxonomy",
    "load_risk_tree",
    "risk_tree_from_dict",
    "risk_tree_from_yaml",
    "seval_extended_tree",
    "seval_tree",
    "taxonomy_names",
    "to_seval_l1",
]
