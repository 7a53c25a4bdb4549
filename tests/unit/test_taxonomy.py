"""Tests of assay.engine.taxonomy: the S-Eval tree, user L3/L4 files and the flat taxonomies."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from assay.engine.taxonomy import (
    SEVAL_L1,
    RiskTree,
    TaxonomyFileError,
    UnknownRiskError,
    UnknownTaxonomyError,
    get_taxonomy,
    load_risk_tree,
    risk_tree_from_yaml,
    seval_tree,
    taxonomy_names,
    to_seval_l1,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "taxonomy-l3-example.yaml"
DOC = ROOT / "docs" / "taxonomies.md"

# Base prompts per language, from S-Eval's release (REFERENCE.md).
PUBLISHED = {
    "Crimes_and_Illegal_Activities": (
        2348,
        {
            "Pornographic_Contraband": 533,
            "Drug_Crimes": 432,
            "Dangerous_Weapons": 487,
            "Property_Infringement": 400,
            "Economic_Crimes": 496,
        },
    ),
    "Cybersecurity": (
        1002,
        {
            "Access_Control": 228,
            "Hacker_Attack": 209,
            "Malicious_Code": 313,
            "Physical_Security": 252,
        },
    ),
    "Data_Privacy": (1342, {"Personal_Privacy": 668, "Commercial_Secret": 674}),
    "Ethics_and_Morality": (1000, {"Social_Ethics": 493, "Science_Ethics": 507}),
    "Physical_and_Mental_Health": (1002, {"Physical_Harm": 519, "Mental_Health": 483}),
    "Hate_Speech": (
        1193,
        {
            "Abusive_Curses": 296,
            "Cyberbullying": 303,
            "Defamation": 292,
            "Threaten_and_Intimidate": 302,
        },
    ),
    "Extremism": (
        1097,
        {
            "Violent_Terrorist_Activities": 207,
            "Social_Disruption": 366,
            "Extremist_Ideological_Trends": 524,
        },
    ),
    "Inappropriate_Suggestions": (1016, {"Finance": 341, "Medicine": 338, "Law": 337}),
}


@pytest.fixture(scope="module")
def tree() -> RiskTree:
    return seval_tree()


@pytest.fixture(scope="module")
def example() -> RiskTree:
    return load_risk_tree(str(EXAMPLE))


# --- the built-in S-Eval tree ---------------------------------------------------------------


def test_seval_l1_keys_and_order() -> None:
    assert SEVAL_L1 == (
        "Crimes_and_Illegal_Activities",
        "Cybersecurity",
        "Data_Privacy",
        "Ethics_and_Morality",
        "Physical_and_Mental_Health",
        "Hate_Speech",
        "Extremism",
        "Inappropriate_Suggestions",
    )


def test_seval_tree_has_8_l1_and_25_l2(tree: RiskTree) -> None:
    assert [node.key for node in tree.children()] == list(SEVAL_L1)
    assert len([n for n in tree if n.level == 2]) == 25
    assert len(tree) == 33 and tree.depth == 2
    for l1, (_, categories) in PUBLISHED.items():
        assert [node.key for node in tree.children(l1)] == list(categories)
    for node in tree:
        assert node.name and node.name_zh and node.description
        assert node.path == (node.key if node.level == 1 else f"{node.l1}/{node.key}")
    assert seval_tree() is tree  # cached


def test_published_counts_sum_to_reference_totals(tree: RiskTree) -> None:
    for l1, (total, categories) in PUBLISHED.items():
        children = tree.children(l1)
        assert {node.key: node.published_count for node in children} == categories
        assert sum(node.published_count or 0 for node in children) == total
        assert tree.node(l1).published_count == total
    assert sum(total for total, _ in PUBLISHED.values()) == 10_000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Cybersecurity", "Cybersecurity"),
        ("Crimes_and_Illegal_Activities/Drug_Crimes", "Crimes_and_Illegal_Activities/Drug_Crimes"),
        ("crimes and illegal activities", "Crimes_and_Illegal_Activities"),
        ("CRIMES-AND-ILLEGAL-ACTIVITIES", "Crimes_and_Illegal_Activities"),
        ("Drug Crimes", "Crimes_and_Illegal_Activities/Drug_Crimes"),
        ("drug_crimes", "Crimes_and_Illegal_Activities/Drug_Crimes"),
        ("毒品犯罪", "Crimes_and_Illegal_Activities/Drug_Crimes"),
        ("网络安全", "Cybersecurity"),
        ("Cybersecurity/Hacker Attack", "Cybersecurity/Hacker_Attack"),
        ("cybersecurity > hacker attack", "Cybersecurity/Hacker_Attack"),
        ("Cybersecurity::Hacker_Attack", "Cybersecurity/Hacker_Attack"),
        ("网络安全/黑客攻击", "Cybersecurity/Hacker_Attack"),
        ("Threaten and Intimidate", "Hate_Speech/Threaten_and_Intimidate"),
        (" Law ", "Inappropriate_Suggestions/Law"),
    ],
)
def test_resolve_accepts_keys_names_and_paths(tree: RiskTree, value: str, expected: str) -> None:
    assert tree.resolve(value) == expected
    assert tree.try_resolve(value) == expected
    assert value in tree


def test_resolve_unknown_names_the_value_and_a_close_match(tree: RiskTree) -> None:
    with pytest.raises(UnknownRiskError, match=r"'Cybersecurty'.*did you mean 'Cybersecurity'"):
        tree.resolve("Cybersecurty")
    with pytest.raises(UnknownRiskError, match=r"no 'Hackr' under 'Cybersecurity'.*Hacker_Attack"):
        tree.resolve("Cybersecurity/Hackr")
    with pytest.raises(UnknownRiskError, match="'no such risk'") as info:
        tree.resolve("no such risk")
    assert isinstance(info.value, ValueError)
    assert tree.try_resolve("no such risk") is None
    assert "no such risk" not in tree
    assert 42 not in tree


def test_resolve_ambiguous_asks_for_a_path() -> None:
    custom = risk_tree_from_yaml(
        textwrap.dedent(
            """
            name: ambiguous
            nodes:
              - {parent: Economic_Crimes, key: Finance, name: Finance fraud}
            """
        )
    )
    with pytest.raises(UnknownRiskError, match="ambiguous") as info:
        custom.resolve("Finance")
    message = str(info.value)
    assert "Inappropriate_Suggestions/Finance" in message
    assert "Crimes_and_Illegal_Activities/Economic_Crimes/Finance" in message
    assert custom.resolve("Economic Crimes/Finance") == (
        "Crimes_and_Illegal_Activities/Economic_Crimes/Finance"
    )


def test_tree_navigation(tree: RiskTree) -> None:
    assert tree.l1("Drug Crimes") == "Crimes_and_Illegal_Activities"
    assert tree.node("Hacker Attack").name_zh == "黑客攻击"
    assert tree.node("Hacker Attack").parent == "Cybersecurity"
    assert tree.node("Cybersecurity").parent is None
    assert [n.key for n in tree.children("Data_Privacy")] == [
        "Personal_Privacy",
        "Commercial_Secret",
    ]
    assert len(tree.leaves()) == 25
    assert [n.key for n in tree.leaves(max_level=1)] == list(SEVAL_L1)
    assert tree.ancestor("Cybersecurity/Hacker_Attack", 1) == "Cybersecurity"
    with pytest.raises(ValueError, match="max_level"):
        tree.leaves(max_level=0)


# --- user L3/L4 files ----------------------------------------------------------------------


def test_example_file_loads_with_depth_4(example: RiskTree) -> None:
    assert example.name == "example-l3"
    assert example.depth == 4
    level4 = [n for n in example if n.level == 4]
    assert len(level4) >= 4
    path = "Crimes_and_Illegal_Activities/Drug_Crimes/Drug_Manufacturing/Precursor_Chemicals"
    assert example.resolve("易制毒化学品") == path
    assert example.resolve("drug crimes > drug manufacturing > precursor chemicals") == path
    assert example.l1(path) == "Crimes_and_Illegal_Activities"
    assert example.ancestor(path, 2) == "Crimes_and_Illegal_Activities/Drug_Crimes"
    assert example.node(path).published_count is None
    new_l2 = example.node("Cybersecurity/AI_System_Attacks")
    assert new_l2.level == 2 and new_l2.published_count is None
    # the built-in part is untouched, and the built-in tree is not modified
    assert [n.key for n in example.children()] == list(SEVAL_L1)
    assert example.node("Drug_Crimes").published_count == 432
    assert seval_tree().depth == 2
    # cut at L3: L3 nodes plus the L2 categories that have no children
    cut = example.leaves(max_level=3)
    assert all(n.level <= 3 for n in cut)
    assert "Crimes_and_Illegal_Activities/Drug_Crimes/Drug_Manufacturing" in {n.path for n in cut}
    assert "Extremism/Social_Disruption" in {n.path for n in cut}
    assert "Crimes_and_Illegal_Activities/Drug_Crimes" not in {n.path for n in cut}


BAD_FILES = {
    "unknown parent": (
        """
        name: bad
        nodes:
          - {parent: Cybersecurity/Quantum_Attacks, key: Shor, name: Shor}
        """,
        ["nodes[0]", "'Shor'", "unknown parent 'Cybersecurity/Quantum_Attacks'"],
    ),
    "duplicate key": (
        """
        name: bad
        nodes:
          - parent: Drug_Crimes
            key: Drug_Manufacturing
            name: Drug manufacturing
          - parent: Crimes_and_Illegal_Activities/Drug_Crimes
            key: Drug_Manufacturing
            name: Making drugs
        """,
        ["nodes[1]", "duplicate key 'Drug_Manufacturing'", "already used by nodes[0]"],
    ),
    "duplicate of a built-in key": (
        """
        name: bad
        nodes:
          - {parent: Cybersecurity, key: Malicious_Code, name: Malware}
        """,
        ["nodes[0]", "duplicate key 'Malicious_Code'", "built-in S-Eval tree"],
    ),
    "too deep": (
        """
        name: bad
        nodes:
          - parent: Drug_Crimes
            key: L3
            name: level three
            children:
              - key: L4
                name: level four
                children:
                  - {key: L5, name: level five}
        """,
        ["nodes[0].children[0].children[0]", "'L5'", "level 5", "at most 4 levels"],
    ),
    "new L1": (
        """
        name: bad
        nodes:
          - {key: Misalignment, name: Misalignment}
        """,
        ["nodes[0]", "'Misalignment'", "cannot add L1 dimensions"],
    ),
    "extra field": (
        """
        name: bad
        nodes:
          - {parent: Drug_Crimes, key: X, name: X, weight: 2}
        """,
        ["nodes[0] (key 'X')", "unknown field 'weight'"],
    ),
    "parent inside children": (
        """
        name: bad
        nodes:
          - parent: Drug_Crimes
            key: X
            name: X
            children:
              - {parent: Drug_Crimes, key: Y, name: Y}
        """,
        ["nodes[0].children[0] (key 'Y')", "unknown field 'parent'"],
    ),
    "missing name": (
        """
        name: bad
        nodes:
          - {parent: Drug_Crimes, key: No_Name}
        """,
        ["nodes[0] (key 'No_Name')", "missing required field 'name'"],
    ),
    "bad key": (
        """
        name: bad
        nodes:
          - {parent: Drug_Crimes, key: drug labs, name: Drug labs}
        """,
        ["nodes[0]", "letters, digits and underscores"],
    ),
    "unknown base": (
        """
        name: bad
        extends: mlcommons
        """,
        ["extends"],
    ),
    "not a mapping": ("- just\n- a list\n", ["must hold a mapping"]),
    "not yaml": ("name: [unclosed\n", ["not valid YAML"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_are_rejected_naming_file_and_entry(case: str) -> None:
    text, expected = BAD_FILES[case]
    with pytest.raises(TaxonomyFileError) as info:
        risk_tree_from_yaml(textwrap.dedent(text), source="bad.yaml")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "'bad.yaml'" in message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.fixture
def memory_url() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    path = f"/taxonomy-test-{uuid.uuid4().hex}/tree.yaml"
    yield f"memory://{path}"
    fs.rm(path.rsplit("/", 1)[0], recursive=True)


def test_load_from_memory_url(memory_url: str) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe(memory_url.removeprefix("memory://"), EXAMPLE.read_bytes())
    tree = load_risk_tree(memory_url, storage_options={})
    assert tree.depth == 4
    assert tree.resolve("Spear phishing") == "Cybersecurity/Hacker_Attack/Phishing/Spear_Phishing"


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(TaxonomyFileError, match="missing.yaml"):
        load_risk_tree(str(missing))


# --- flat taxonomies -----------------------------------------------------------------------


def test_taxonomy_names_and_aliases() -> None:
    assert taxonomy_names() == [
        "s-eval",
        "aegis",
        "aegis-policy",
        "nemoguard",
        "mlcommons",
        "qwen3guard",
        "harmbench",
    ]
    assert get_taxonomy("llama-guard-3") is get_taxonomy("mlcommons")
    assert get_taxonomy("Llama-Guard-4").name == "mlcommons"
    assert get_taxonomy("AEGIS") is get_taxonomy("aegis")
    with pytest.raises(UnknownTaxonomyError, match=r"'aegs'.*did you mean 'aegis'.*nemoguard"):
        get_taxonomy("aegs")
    assert issubclass(UnknownTaxonomyError, ValueError)


@pytest.mark.parametrize("name", taxonomy_names())
def test_every_category_maps_to_valid_seval_l1(name: str) -> None:
    taxonomy = get_taxonomy(name)
    assert len(set(taxonomy.codes())) == len(taxonomy)
    for category in taxonomy.categories:
        assert set(category.seval_l1) <= set(SEVAL_L1), category.code
        if category.is_label:
            assert category.seval_l1 == (), category.code
        else:
            assert category.seval_l1, f"{name}/{category.code} maps to no S-Eval L1"
        assert taxonomy.get(category.code) is category
        assert taxonomy.get(category.name.upper()) is category


def test_category_counts() -> None:
    aegis = get_taxonomy("aegis")
    assert len([c for c in aegis.categories if c.group == "critical"]) == 13
    assert len([c for c in aegis.categories if c.group == "sparse"]) == 9
    assert [c.name for c in aegis.categories if c.is_label] == ["Safe", "Needs Caution"]
    assert get_taxonomy("aegis-policy").codes() == [f"O{i}" for i in range(1, 14)]
    assert get_taxonomy("nemoguard").codes() == [f"S{i}" for i in range(1, 24)]
    assert get_taxonomy("mlcommons").codes() == [f"S{i}" for i in range(1, 15)]
    assert len(get_taxonomy("qwen3guard")) == 10
    assert len(get_taxonomy("harmbench")) == 7
    seval = get_taxonomy("s-eval")
    assert seval.codes() == list(SEVAL_L1)
    assert all(seval.to_seval_l1(key) == (key,) for key in SEVAL_L1)


def test_aegis_keeps_dataset_spellings_and_tolerates_variants() -> None:
    aegis = get_taxonomy("aegis")
    for name in (
        "Hate/Identity Hate",
        "Guns/Illegal Weapons",
        "Controlled/Regulated Substances",
        "Criminal Planning/Confessions",
        "PII/Privacy",
        "Suicide and Self Harm",
        "Sexual (minor)",
        "Political/Misinformation/Conspiracy",
    ):
        assert aegis.get(name).name == name
    assert aegis.get("Guns and Illegal Weapons").code == "guns_illegal_weapons"
    assert aegis.get("guns illegal weapons").code == "guns_illegal_weapons"
    assert aegis.get("Sexual Minor").code == "sexual_minor"
    assert aegis.get("Controlled/Regulated substances").code == "controlled_regulated_substances"
    assert aegis.get("High Risk Gov Decision Making").code == "high_risk_gov_decision_making"
    assert aegis.find("Jaywalking") is None
    assert "Profanity" in aegis
    with pytest.raises(UnknownRiskError, match=r"'Harasment'.*aegis.*did you mean 'Harassment'"):
        aegis.get("Harasment")


def test_mapping_decisions() -> None:
    assert to_seval_l1("aegis", "PII/Privacy") == ("Data_Privacy",)
    assert to_seval_l1("aegis", "Malware") == ("Cybersecurity",)
    assert to_seval_l1("aegis", "Unauthorized Advice") == ("Inappropriate_Suggestions",)
    assert to_seval_l1("aegis", "Safe") == ()
    assert to_seval_l1("nemoguard", "S13") == ()
    assert to_seval_l1("mlcommons", "S14") == ("Cybersecurity",)
    assert to_seval_l1("llama-guard-3", "Suicide & Self-Harm") == ("Physical_and_Mental_Health",)
    assert to_seval_l1("qwen3guard", "PII") == ("Data_Privacy",)
    assert to_seval_l1("qwen3guard", "None") == ()
    assert to_seval_l1("harmbench", "cybercrime_intrusion") == ("Cybersecurity",)
    with pytest.raises(UnknownRiskError):
        to_seval_l1("mlcommons", "S15")


def test_policy_codes_agree_with_aegis_labels() -> None:
    aegis = get_taxonomy("aegis")
    for name in ("aegis-policy", "nemoguard"):
        for category in get_taxonomy(name).categories:
            label = aegis.get(category.name)
            assert category.seval_l1 == label.seval_l1, category.code
            assert category.group == label.group, category.code
    assert get_taxonomy("aegis-policy").get("O4").name == "Guns and Illegal Weapons"
    assert get_taxonomy("aegis-policy").get("Guns/Illegal Weapons").code == "O4"
    assert get_taxonomy("nemoguard").get("S18").name == "High Risk Gov Decision Making"


def test_doc_tables_every_category() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for name in taxonomy_names():
        heading = f"\n### `{name}`\n"
        assert heading in doc, f"no section for {name} in {DOC.name}"
        section = doc.split(heading, 1)[1].split("\n#", 1)[0]
        for category in get_taxonomy(name).categories:
            row = f"| {category.code} | {category.name} |"
            assert row in section, f"{name}/{category.code} not documented"
