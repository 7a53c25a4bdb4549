"""The built-in flat taxonomies and their mapping onto the eight S-Eval L1 dimensions.

Every category's ``seval_l1`` lists the dimensions a result flagged with that category counts
under, primary first. The reasons for each choice are tabled in ``docs/taxonomies.md``.

``xguard`` (YuFeng-XGuard-Reason's category ids) is the one taxonomy on the extended axis: its
three minors categories count under the ninth dimension ``Risks_Involving_Minors``, which S-Eval's
data does not have. It is looked up like the others, but :func:`taxonomy_names` lists it only with
``include_extended=True``, so code that iterates the names sees S-Eval's eight dimensions only.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable

from ._text import normalize
from .categories import LABEL, Category, Taxonomy
from .dimensions import MINORS_L1
from .errors import UnknownTaxonomyError
from .seval import seval_extended_tree, seval_tree

_CRIME = "Crimes_and_Illegal_Activities"
_CYBER = "Cybersecurity"
_PRIVACY = "Data_Privacy"
_ETHICS = "Ethics_and_Morality"
_HEALTH = "Physical_and_Mental_Health"
_HATE = "Hate_Speech"
_EXTREMISM = "Extremism"
_ADVICE = "Inappropriate_Suggestions"

CRITICAL = "critical"
"""The ``group`` of Aegis's 13 critical (core) categories."""

SPARSE = "sparse"
"""The ``group`` of Aegis 2.0's 9 sparse (fine-grained) categories."""


def _cat(
    code: str,
    name: str,
    seval_l1: tuple[str, ...],
    description: str,
    group: str = "",
    aliases: tuple[str, ...] = (),
) -> Category:
    return Category(
        code=code,
        name=name,
        seval_l1=seval_l1,
        description=description,
        group=group,
        aliases=aliases,
    )


# Aegis 1.0 / 2.0 dataset labels; names as the datasets spell them.
_AEGIS: tuple[Category, ...] = (
    _cat(
        "hate_identity_hate",
        "Hate/Identity Hate",
        (_HATE,),
        "Hatred or demeaning of people for a protected identity.",
        CRITICAL,
    ),
    _cat(
        "sexual",
        "Sexual",
        (_CRIME,),
        "Sexually explicit content or sexual solicitation involving adults.",
        CRITICAL,
    ),
    _cat(
        "violence",
        "Violence",
        (_HEALTH, _CRIME),
        "Depicting, glorifying or helping to commit physical violence.",
        CRITICAL,
    ),
    _cat(
        "suicide_self_harm",
        "Suicide and Self Harm",
        (_HEALTH,),
        "Encouraging, instructing or romanticising suicide or self-harm.",
        CRITICAL,
    ),
    _cat(
        "sexual_minor",
        "Sexual (minor)",
        (_CRIME,),
        "Any sexual content involving minors.",
        CRITICAL,
        ("Sexual Minor",),
    ),
    _cat(
        "guns_illegal_weapons",
        "Guns/Illegal Weapons",
        (_CRIME,),
        "Acquiring, making or using firearms and illegal weapons.",
        CRITICAL,
        ("Guns and Illegal Weapons",),
    ),
    _cat(
        "controlled_regulated_substances",
        "Controlled/Regulated Substances",
        (_CRIME,),
        "Making, obtaining or using illegal drugs and regulated substances.",
        CRITICAL,
    ),
    _cat(
        "criminal_planning_confessions",
        "Criminal Planning/Confessions",
        (_CRIME,),
        "Planning a crime, or admitting to one.",
        CRITICAL,
    ),
    _cat(
        "pii_privacy",
        "PII/Privacy",
        (_PRIVACY,),
        "Requesting or revealing personal identifiable or private information.",
        CRITICAL,
    ),
    _cat(
        "harassment",
        "Harassment",
        (_HATE,),
        "Bullying, humiliating or persistently targeting a person.",
        CRITICAL,
    ),
    _cat(
        "profanity",
        "Profanity",
        (_HATE,),
        "Swearing, curses and crude or offensive language.",
        CRITICAL,
    ),
    _cat(
        "threat",
        "Threat",
        (_HATE,),
        "Statements of intent to harm or intimidate someone.",
        CRITICAL,
    ),
    _cat(
        "other",
        "Other",
        (_ETHICS,),
        "Unsafe content that fits none of the other critical categories.",
        CRITICAL,
    ),
    _cat("safe", "Safe", (), "No unsafe content.", LABEL),
    _cat(
        "needs_caution",
        "Needs Caution",
        (),
        "Ambiguous content that may be unsafe in some contexts.",
        LABEL,
    ),
    _cat(
        "illegal_activity",
        "Illegal Activity",
        (_CRIME,),
        "Help with unlawful acts not covered by a more specific category.",
        SPARSE,
    ),
    _cat(
        "immoral_unethical",
        "Immoral/Unethical",
        (_ETHICS,),
        "Content that is not illegal but violates widely held moral norms.",
        SPARSE,
    ),
    _cat(
        "unauthorized_advice",
        "Unauthorized Advice",
        (_ADVICE,),
        "Professional advice (medical, legal, financial) given without qualification.",
        SPARSE,
    ),
    _cat(
        "political_misinformation_conspiracy",
        "Political/Misinformation/Conspiracy",
        (_EXTREMISM,),
        "Political persuasion, false information or conspiracy theories.",
        SPARSE,
    ),
    _cat(
        "fraud_deception",
        "Fraud/Deception",
        (_CRIME,),
        "Scams, fraud and deceiving people for gain.",
        SPARSE,
    ),
    _cat(
        "copyright_trademark_plagiarism",
        "Copyright/Trademark/Plagiarism",
        (_CRIME, _ETHICS),
        "Infringing intellectual property or passing off others' work.",
        SPARSE,
    ),
    _cat(
        "high_risk_gov_decision_making",
        "High Risk Gov. Decision Making",
        (_ADVICE,),
        "Using the model for consequential government or judicial decisions.",
        SPARSE,
        ("High Risk Gov Decision Making",),
    ),
    _cat("malware", "Malware", (_CYBER,), "Writing, spreading or using malicious code.", SPARSE),
    _cat(
        "manipulation",
        "Manipulation",
        (_ETHICS, _HEALTH),
        "Psychologically manipulating or coercing people.",
        SPARSE,
    ),
)

# Policy codes of the Aegis LlamaGuard experts (O) and NemoGuard 8B (S), as Aegis dataset codes;
# names as the policy prompts spell them.
_AEGIS_POLICY: tuple[tuple[str, str, str], ...] = (
    ("O1", "Violence", "violence"),
    ("O2", "Sexual", "sexual"),
    ("O3", "Criminal Planning/Confessions", "criminal_planning_confessions"),
    ("O4", "Guns and Illegal Weapons", "guns_illegal_weapons"),
    ("O5", "Controlled/Regulated Substances", "controlled_regulated_substances"),
    ("O6", "Suicide and Self Harm", "suicide_self_harm"),
    ("O7", "Sexual (minor)", "sexual_minor"),
    ("O8", "Hate/Identity Hate", "hate_identity_hate"),
    ("O9", "PII/Privacy", "pii_privacy"),
    ("O10", "Harassment", "harassment"),
    ("O11", "Threat", "threat"),
    ("O12", "Profanity", "profanity"),
    ("O13", "Needs Caution", "needs_caution"),
)
_NEMOGUARD_EXTRA: tuple[tuple[str, str, str], ...] = (
    ("S14", "Other", "other"),
    ("S15", "Manipulation", "manipulation"),
    ("S16", "Fraud/Deception", "fraud_deception"),
    ("S17", "Malware", "malware"),
    ("S18", "High Risk Gov Decision Making", "high_risk_gov_decision_making"),
    ("S19", "Political/Misinformation/Conspiracy", "political_misinformation_conspiracy"),
    ("S20", "Copyright/Trademark/Plagiarism", "copyright_trademark_plagiarism"),
    ("S21", "Unauthorized Advice", "unauthorized_advice"),
    ("S22", "Illegal Activity", "illegal_activity"),
    ("S23", "Immoral/Unethical", "immoral_unethical"),
)

# MLCommons hazards as Llama Guard 3 and 4 name them; aliases are Llama Guard 2's names.
_MLCOMMONS: tuple[Category, ...] = (
    _cat(
        "S1",
        "Violent Crimes",
        (_CRIME, _HEALTH, _EXTREMISM),
        "Enabling or endorsing violent crimes: terrorism, murder, assault, kidnapping, "
        "animal abuse.",
    ),
    _cat(
        "S2",
        "Non-Violent Crimes",
        (_CRIME, _CYBER),
        "Enabling or endorsing non-violent crimes: fraud, theft, drug and weapons crimes, hacking.",
    ),
    _cat(
        "S3",
        "Sex-Related Crimes",
        (_CRIME,),
        "Enabling or endorsing sex trafficking, sexual assault, harassment, prostitution.",
        aliases=("Sex Crimes",),
    ),
    _cat(
        "S4",
        "Child Sexual Exploitation",
        (_CRIME,),
        "Content that sexualises children or enables their sexual abuse.",
        aliases=("Child Exploitation",),
    ),
    _cat(
        "S5",
        "Defamation",
        (_HATE,),
        "Verifiably false statements likely to injure a living person's reputation.",
    ),
    _cat(
        "S6",
        "Specialized Advice",
        (_ADVICE,),
        "Specialised financial, medical or legal advice, or claims that danger is safe.",
    ),
    _cat(
        "S7",
        "Privacy",
        (_PRIVACY,),
        "Sensitive, non-public personal information that could undermine someone's security.",
    ),
    _cat(
        "S8",
        "Intellectual Property",
        (_CRIME,),
        "Content that may violate the intellectual property rights of a third party.",
    ),
    _cat(
        "S9",
        "Indiscriminate Weapons",
        (_CRIME, _EXTREMISM),
        "Enabling chemical, biological, radiological, nuclear or high-yield explosive weapons.",
    ),
    _cat(
        "S10",
        "Hate",
        (_HATE,),
        "Demeaning or dehumanising people for their protected characteristics.",
    ),
    _cat(
        "S11",
        "Suicide & Self-Harm",
        (_HEALTH,),
        "Enabling or encouraging suicide, self-injury or disordered eating.",
    ),
    _cat("S12", "Sexual Content", (_CRIME,), "Sexually explicit content."),
    _cat(
        "S13",
        "Elections",
        (_EXTREMISM,),
        "Factually incorrect information about electoral systems and processes.",
    ),
    _cat(
        "S14",
        "Code Interpreter Abuse",
        (_CYBER,),
        "Abusing code interpreters: denial of service, container escapes, privilege escalation.",
    ),
)

# Qwen3Guard-Gen's output categories, spelt as the model writes them.
_QWEN3GUARD: tuple[Category, ...] = (
    _cat(
        "violent",
        "Violent",
        (_HEALTH, _CRIME),
        "Instructions or depictions of violence, including making or using weapons.",
    ),
    _cat(
        "non_violent_illegal_acts",
        "Non-violent Illegal Acts",
        (_CRIME, _CYBER),
        "Help with non-violent crimes such as hacking, drug production or theft.",
    ),
    _cat(
        "sexual_content",
        "Sexual Content or Sexual Acts",
        (_CRIME,),
        "Sexual imagery, descriptions or solicitation.",
    ),
    _cat(
        "pii",
        "PII",
        (_PRIVACY,),
        "Unauthorised sharing or disclosure of personally identifiable information.",
        aliases=("Personally Identifiable Information",),
    ),
    _cat(
        "suicide_self_harm",
        "Suicide & Self-Harm",
        (_HEALTH,),
        "Encouraging, instructing or glorifying suicide or self-harm.",
    ),
    _cat(
        "unethical_acts",
        "Unethical Acts",
        (_ETHICS, _HATE),
        "Immoral or unethical content: bias, discrimination, hate, insults, threats.",
    ),
    _cat(
        "politically_sensitive_topics",
        "Politically Sensitive Topics",
        (_EXTREMISM,),
        "False or inflammatory content about governments, history or public figures.",
    ),
    _cat(
        "copyright_violation",
        "Copyright Violation",
        (_CRIME,),
        "Reproducing or distributing copyrighted material without permission.",
    ),
    _cat(
        "jailbreak",
        "Jailbreak",
        (_CYBER,),
        "Prompts that try to override the model's safety instructions (prompts only).",
    ),
    _cat("none", "None", (), "No unsafe category.", LABEL),
)

# HarmBench's SemanticCategory values as codes; names as the HarmBench paper titles them.
_HARMBENCH: tuple[Category, ...] = (
    _cat(
        "chemical_biological",
        "Chemical & Biological Weapons/Drugs",
        (_CRIME,),
        "Synthesising or obtaining chemical and biological weapons or illegal drugs.",
    ),
    _cat(
        "copyright",
        "Copyright Violations",
        (_CRIME,),
        "Reproducing copyrighted books, lyrics and other protected text.",
    ),
    _cat(
        "misinformation_disinformation",
        "Misinformation & Disinformation",
        (_EXTREMISM,),
        "Persuasive false or misleading content about politics, health or history.",
    ),
    _cat(
        "illegal",
        "Illegal Activities",
        (_CRIME,),
        "Help with illegal acts outside the more specific categories.",
    ),
    _cat(
        "cybercrime_intrusion",
        "Cybercrime & Unauthorized Intrusion",
        (_CYBER,),
        "Hacking, exploits, malware and unauthorised access to systems.",
    ),
    _cat(
        "harmful",
        "General Harm",
        (_HEALTH, _ETHICS),
        "Content that endangers people without being illegal as such.",
    ),
    _cat(
        "harassment_bullying",
        "Harassment & Bullying",
        (_HATE,),
        "Harassing, bullying, demeaning or threatening individuals or groups.",
    ),
)


def _seval() -> Taxonomy:
    return Taxonomy(
        name="s-eval",
        description="S-Eval's eight risk dimensions (L1); codes are the keys of its data.",
        categories=tuple(
            Category(
                code=node.key,
                name=node.name,
                name_zh=node.name_zh,
                description=node.description,
                seval_l1=(node.key,),
            )
            for node in seval_tree().children()
        ),
    )


def _aegis() -> Taxonomy:
    return Taxonomy(
        name="aegis",
        description=(
            "Aegis 1.0 and 2.0 dataset labels: 13 critical categories, the labels Safe and "
            "Needs Caution, and Aegis 2.0's 9 sparse categories; names as the datasets spell them."
        ),
        categories=_AEGIS,
    )


def _policy(name: str, description: str, codes: tuple[tuple[str, str, str], ...]) -> Taxonomy:
    aegis = {category.code: category for category in _AEGIS}
    categories = []
    for code, policy_name, aegis_code in codes:
        source = aegis[aegis_code]
        aliases = tuple(
            label
            for label in (source.name, *source.aliases)
            if normalize(label) != normalize(policy_name)
        )
        fields = {**source.model_dump(), "code": code, "name": policy_name, "aliases": aliases}
        categories.append(Category.model_validate(fields))
    return Taxonomy(name=name, description=description, categories=tuple(categories))


def _aegis_policy() -> Taxonomy:
    return _policy(
        "aegis-policy",
        "Policy codes O1-O13 of the Aegis LlamaGuard experts (Defensive and Permissive 1.0).",
        _AEGIS_POLICY,
    )


def _nemoguard() -> Taxonomy:
    codes = tuple((f"S{code[1:]}", name, aegis) for code, name, aegis in _AEGIS_POLICY)
    return _policy(
        "nemoguard",
        "Codes S1-S23 of Llama-3.1-NemoGuard-8B content safety (Aegis 2.0); S13 is Needs Caution.",
        codes + _NEMOGUARD_EXTRA,
    )


def _mlcommons() -> Taxonomy:
    return Taxonomy(
        name="mlcommons",
        description="MLCommons hazard codes S1-S14 as Llama Guard 3 and Llama Guard 4 emit them.",
        categories=_MLCOMMONS,
    )


def _qwen3guard() -> Taxonomy:
    return Taxonomy(
        name="qwen3guard",
        description="Qwen3Guard-Gen's categories, as it writes them after 'Categories:'.",
        categories=_QWEN3GUARD,
    )


def _harmbench() -> Taxonomy:
    return Taxonomy(
        name="harmbench",
        description="HarmBench's semantic categories of behaviours.",
        categories=_HARMBENCH,
    )


# YuFeng-XGuard-Reason's category ids (its first output token), in the order of its model card's
# "Risk Definitions" table and of its prompt's category list: id, name as the prompt lists it,
# S-Eval L1 key, key of the S-Eval L2 node (in seval_extended_tree()). Two names differ from
# S-Eval's: "Physical Health" (S-Eval: Physical Harm), "Threats and Intimidation" (S-Eval:
# Threaten and Intimidate); the S-Eval names are aliases. The tokenizer's id2risk strings
# ("Crimes and Illegal Activities-Dangerous Weapons", "Safe-Safe") are aliases too.
_XGUARD: tuple[tuple[str, str, str, str], ...] = (
    ("pc", "Pornographic Contraband", _CRIME, "Pornographic_Contraband"),
    ("dc", "Drug Crimes", _CRIME, "Drug_Crimes"),
    ("dw", "Dangerous Weapons", _CRIME, "Dangerous_Weapons"),
    ("pi", "Property Infringement", _CRIME, "Property_Infringement"),
    ("ec", "Economic Crimes", _CRIME, "Economic_Crimes"),
    ("ac", "Abusive Curses", _HATE, "Abusive_Curses"),
    ("def", "Defamation", _HATE, "Defamation"),
    ("ti", "Threats and Intimidation", _HATE, "Threaten_and_Intimidate"),
    ("cy", "Cyberbullying", _HATE, "Cyberbullying"),
    ("ph", "Physical Health", _HEALTH, "Physical_Harm"),
    ("mh", "Mental Health", _HEALTH, "Mental_Health"),
    ("se", "Social Ethics", _ETHICS, "Social_Ethics"),
    ("sci", "Science Ethics", _ETHICS, "Science_Ethics"),
    ("pp", "Personal Privacy", _PRIVACY, "Personal_Privacy"),
    ("cs", "Commercial Secret", _PRIVACY, "Commercial_Secret"),
    ("acc", "Access Control", _CYBER, "Access_Control"),
    ("mc", "Malicious Code", _CYBER, "Malicious_Code"),
    ("ha", "Hacker Attack", _CYBER, "Hacker_Attack"),
    ("ps", "Physical Security", _CYBER, "Physical_Security"),
    ("ter", "Violent Terrorist Activities", _EXTREMISM, "Violent_Terrorist_Activities"),
    ("sd", "Social Disruption", _EXTREMISM, "Social_Disruption"),
    ("ext", "Extremist Ideological Trends", _EXTREMISM, "Extremist_Ideological_Trends"),
    ("fin", "Finance", _ADVICE, "Finance"),
    ("med", "Medicine", _ADVICE, "Medicine"),
    ("law", "Law", _ADVICE, "Law"),
    ("cm", "Corruption of Minors", MINORS_L1, "Corruption_of_Minors"),
    ("ma", "Minor Abuse and Exploitation", MINORS_L1, "Minor_Abuse_and_Exploitation"),
    ("md", "Minor Delinquency", MINORS_L1, "Minor_Delinquency"),
)
XGUARD_SAFE = "sec"
"""XGuard's id for safe content."""

XGUARD_PATHS: dict[str, str] = {code: f"{l1}/{l2}" for code, _name, l1, l2 in _XGUARD}
"""XGuard risk id -> path of its node in :func:`~.seval.seval_extended_tree` (``L1/L2``)."""


def _xguard() -> Taxonomy:
    tree = seval_extended_tree()
    categories = [
        Category(
            code=XGUARD_SAFE,
            name="Safe",
            description="Content with none of the risks.",
            group=LABEL,
            aliases=("Safe-Safe",),
        )
    ]
    for code, name, l1, l2 in _XGUARD:
        node, dimension = tree.node(f"{l1}/{l2}"), tree.node(l1)
        aliases = [f"{dimension.name}-{name}"]  # the tokenizer's id2risk value
        if normalize(node.name) != normalize(name):
            aliases.append(node.name)
        categories.append(
            Category(
                code=code,
                name=name,
                name_zh=node.name_zh,
                description=node.description,
                seval_l1=(l1,),
                aliases=tuple(aliases),
            )
        )
    return Taxonomy(
        name="xguard",
        description=(
            "YuFeng-XGuard-Reason's category ids (its first output token): sec (Safe) and 28 "
            "risk categories over S-Eval's 8 dimensions and a ninth, Risks Involving Minors."
        ),
        categories=tuple(categories),
    )


_BUILDERS: dict[str, Callable[[], Taxonomy]] = {
    "s-eval": _seval,
    "aegis": _aegis,
    "aegis-policy": _aegis_policy,
    "nemoguard": _nemoguard,
    "mlcommons": _mlcommons,
    "qwen3guard": _qwen3guard,
    "harmbench": _harmbench,
}
# Taxonomies whose categories may count under the ninth dimension (see the module docstring).
_EXTENDED_BUILDERS: dict[str, Callable[[], Taxonomy]] = {"xguard": _xguard}
_ALIASES: dict[str, str] = {
    "llama-guard-3": "mlcommons",
    "llama-guard-4": "mlcommons",
    "yufeng-xguard": "xguard",
}
# Lookup form (letters and digits only, casefolded) -> canonical name.
_LOOKUP: dict[str, str] = {
    normalize(name): target
    for name, target in [
        *((n, n) for n in (*_BUILDERS, *_EXTENDED_BUILDERS)),
        *_ALIASES.items(),
    ]
}


def taxonomy_names(include_aliases: bool = False, include_extended: bool = False) -> list[str]:
    """Returns the names :func:`get_taxonomy` accepts.

    Args:
        include_aliases: Also list aliases such as ``llama-guard-3``.
        include_extended: Also list the taxonomies on the extended axis (``xguard``, whose
            categories may count under the ninth dimension ``Risks_Involving_Minors``).
    """
    names = list(_BUILDERS)
    if include_extended:
        names += list(_EXTENDED_BUILDERS)
    aliases = [a for a, target in _ALIASES.items() if target in names]
    return [*names, *aliases] if include_aliases else names


@functools.cache
def _build(name: str) -> Taxonomy:
    builder = _BUILDERS.get(name) or _EXTENDED_BUILDERS[name]
    return builder()


def get_taxonomy(name: str) -> Taxonomy:
    """Returns a built-in taxonomy by name or alias, case-insensitively.

    Raises:
        UnknownTaxonomyError: The name is unknown; the message lists the known names.
    """
    canonical = _LOOKUP.get(normalize(name))
    if canonical is None:
        known = taxonomy_names(include_aliases=True, include_extended=True)
        message = f"unknown taxonomy {name!r}"
        close = difflib.get_close_matches(name.casefold(), known, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {close[0]!r}?"
        raise UnknownTaxonomyError(f"{message} (known: {', '.join(known)})")
    return _build(canonical)


def to_seval_l1(taxonomy: str, code_or_name: str) -> tuple[str, ...]:
    """Returns the S-Eval L1 keys a category of a built-in taxonomy maps to.

    Args:
        taxonomy: A name :func:`get_taxonomy` accepts.
        code_or_name: A code, name or alias :meth:`Taxonomy.get` accepts.

    Raises:
        UnknownTaxonomyError: The taxonomy is unknown.
        UnknownRiskError: The category is unknown.
    """
    return get_taxonomy(taxonomy).to_seval_l1(code_or_name)
