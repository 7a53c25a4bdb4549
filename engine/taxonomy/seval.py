"""The built-in S-Eval risk tree: the published L1 dimensions and L2 categories.

S-Eval (arXiv 2405.14191) publishes only its L1 and L2 names; its 56 L3 and 52 L4 entries are not
public, so users add their own below L2 with a taxonomy file (see :mod:`.loader`). Keys follow the
data's ``Title_Case_With_Underscores`` style; the Chinese names are assay's translations.

YuFeng-XGuard-Reason (Alibaba-AAIG, S-Eval's authors) adds a ninth dimension, "Risks Involving
Minors", with three categories (model card, "Risk Definitions": Corruption of Minors, Minor Abuse
and Exploitation, Minor Delinquency). :func:`seval_extended_tree` is S-Eval's tree with it; the
plain :func:`seval_tree` stays as S-Eval publishes it. The ninth dimension has no S-Eval prompts
(no published counts); its Chinese names are assay's translations too.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from .tree import RiskNode, RiskTree


class _Entry(NamedTuple):
    key: str
    name: str
    name_zh: str
    published: int | None
    description: str


# L1 entries carry the published per-language total; their L2 counts sum to it.
_SEVAL: tuple[tuple[_Entry, tuple[_Entry, ...]], ...] = (
    (
        _Entry(
            "Crimes_and_Illegal_Activities",
            "Crimes and Illegal Activities",
            "犯罪与非法活动",
            2348,
            "Help with or encouragement of criminal or otherwise illegal conduct.",
        ),
        (
            _Entry(
                "Pornographic_Contraband",
                "Pornographic Contraband",
                "色情违禁品",
                533,
                "Producing, obtaining or spreading pornography and other prohibited obscene "
                "material.",
            ),
            _Entry(
                "Drug_Crimes",
                "Drug Crimes",
                "毒品犯罪",
                432,
                "Making, trafficking, buying or using illegal drugs.",
            ),
            _Entry(
                "Dangerous_Weapons",
                "Dangerous Weapons",
                "危险武器",
                487,
                "Making, acquiring or using firearms, explosives and other dangerous weapons.",
            ),
            _Entry(
                "Property_Infringement",
                "Property Infringement",
                "侵犯财产",
                400,
                "Theft, robbery, embezzlement and other infringements of others' property.",
            ),
            _Entry(
                "Economic_Crimes",
                "Economic Crimes",
                "经济犯罪",
                496,
                "Fraud, money laundering, tax evasion, counterfeiting and other financial crimes.",
            ),
        ),
    ),
    (
        _Entry(
            "Cybersecurity",
            "Cybersecurity",
            "网络安全",
            1002,
            "Attacks on computer systems, networks and the infrastructure they run on.",
        ),
        (
            _Entry(
                "Access_Control",
                "Access Control",
                "访问控制",
                228,
                "Bypassing authentication, authorisation or other access restrictions.",
            ),
            _Entry(
                "Hacker_Attack",
                "Hacker Attack",
                "黑客攻击",
                209,
                "Intrusion, exploitation and denial-of-service attacks on systems and networks.",
            ),
            _Entry(
                "Malicious_Code",
                "Malicious Code",
                "恶意代码",
                313,
                "Writing or spreading viruses, ransomware, trojans and other malware.",
            ),
            _Entry(
                "Physical_Security",
                "Physical Security",
                "物理安全",
                252,
                "Attacks on the hardware, facilities and devices that computing systems rely on.",
            ),
        ),
    ),
    (
        _Entry(
            "Data_Privacy",
            "Data Privacy",
            "数据隐私",
            1342,
            "Disclosure, collection or misuse of personal data and confidential business data.",
        ),
        (
            _Entry(
                "Personal_Privacy",
                "Personal Privacy",
                "个人隐私",
                668,
                "Collecting, exposing or misusing individuals' personal information.",
            ),
            _Entry(
                "Commercial_Secret",
                "Commercial Secret",
                "商业秘密",
                674,
                "Stealing or disclosing trade secrets and confidential business information.",
            ),
        ),
    ),
    (
        _Entry(
            "Ethics_and_Morality",
            "Ethics and Morality",
            "伦理道德",
            1000,
            "Content that violates social or scientific ethics and widely held moral norms.",
        ),
        (
            _Entry(
                "Social_Ethics",
                "Social Ethics",
                "社会伦理",
                493,
                "Violations of social norms such as honesty, fairness and family or work ethics.",
            ),
            _Entry(
                "Science_Ethics",
                "Science Ethics",
                "科学伦理",
                507,
                "Unethical research and technology use, such as unsafe human experiments.",
            ),
        ),
    ),
    (
        _Entry(
            "Physical_and_Mental_Health",
            "Physical and Mental Health",
            "身心健康",
            1002,
            "Content that endangers people's bodily safety or mental well-being.",
        ),
        (
            _Entry(
                "Physical_Harm",
                "Physical Harm",
                "身体伤害",
                519,
                "Content that leads to bodily injury, from dangerous acts to self-harm.",
            ),
            _Entry(
                "Mental_Health",
                "Mental Health",
                "心理健康",
                483,
                "Content that damages mental well-being or mishandles psychological distress.",
            ),
        ),
    ),
    (
        _Entry(
            "Hate_Speech",
            "Hate Speech",
            "仇恨言论",
            1193,
            "Abusive, bullying, defamatory or threatening language aimed at people or groups.",
        ),
        (
            _Entry(
                "Abusive_Curses",
                "Abusive Curses",
                "辱骂诅咒",
                296,
                "Insults, profanity and curses directed at people.",
            ),
            _Entry(
                "Cyberbullying",
                "Cyberbullying",
                "网络欺凌",
                303,
                "Harassing, humiliating or ganging up on people online.",
            ),
            _Entry(
                "Defamation",
                "Defamation",
                "诽谤",
                292,
                "False statements that damage the reputation of people or organisations.",
            ),
            _Entry(
                "Threaten_and_Intimidate",
                "Threaten and Intimidate",
                "威胁恐吓",
                302,
                "Threats of violence or other harm meant to frighten or coerce.",
            ),
        ),
    ),
    (
        _Entry(
            "Extremism",
            "Extremism",
            "极端主义",
            1097,
            "Terrorism, incitement to social unrest and the spread of extremist ideologies.",
        ),
        (
            _Entry(
                "Violent_Terrorist_Activities",
                "Violent Terrorist Activities",
                "暴力恐怖活动",
                207,
                "Planning, supporting or glorifying terrorist attacks.",
            ),
            _Entry(
                "Social_Disruption",
                "Social Disruption",
                "扰乱社会秩序",
                366,
                "Inciting riots, spreading rumours or otherwise disturbing public order.",
            ),
            _Entry(
                "Extremist_Ideological_Trends",
                "Extremist Ideological Trends",
                "极端主义思潮",
                524,
                "Promoting radical, separatist or otherwise extremist ideologies.",
            ),
        ),
    ),
    (
        _Entry(
            "Inappropriate_Suggestions",
            "Inappropriate Suggestions",
            "不当建议",
            1016,
            "Unqualified or harmful advice in high-stakes domains: finance, medicine and law.",
        ),
        (
            _Entry(
                "Finance",
                "Finance",
                "金融",
                341,
                "Irresponsible or unqualified advice on investing, borrowing and other money "
                "matters.",
            ),
            _Entry(
                "Medicine",
                "Medicine",
                "医疗",
                338,
                "Irresponsible or unqualified advice on diagnosis, treatment and medication.",
            ),
            _Entry(
                "Law",
                "Law",
                "法律",
                337,
                "Irresponsible or unqualified legal advice that may harm the user or others.",
            ),
        ),
    ),
)

# The ninth dimension (YuFeng-XGuard-Reason model card); no S-Eval data, so no counts.
_MINORS: tuple[_Entry, tuple[_Entry, ...]] = (
    _Entry(
        "Risks_Involving_Minors",
        "Risks Involving Minors",
        "涉及未成年人的风险",
        None,
        "Content that harms minors, leads them astray or helps them break the law.",
    ),
    (
        _Entry(
            "Corruption_of_Minors",
            "Corruption of Minors",
            "不良诱导未成年人",
            None,
            "Leading minors towards harmful, age-inappropriate or unhealthy behaviour and content.",
        ),
        _Entry(
            "Minor_Abuse_and_Exploitation",
            "Minor Abuse and Exploitation",
            "侵害与剥削未成年人",
            None,
            "Abuse, sexual exploitation, trafficking or other exploitation of minors.",
        ),
        _Entry(
            "Minor_Delinquency",
            "Minor Delinquency",
            "未成年人违法犯罪",
            None,
            "Helping or encouraging minors to commit offences or other delinquent acts.",
        ),
    ),
)

SEVAL_TREE_DESCRIPTION = (
    "S-Eval's published risk taxonomy: 8 dimensions (L1) and 25 categories (L2); "
    "base-prompt counts per language as released."
)
"""Description of the built-in tree."""


SEVAL_EXTENDED_TREE_DESCRIPTION = (
    "S-Eval's published risk taxonomy (8 dimensions, 25 categories) with the ninth dimension "
    "YuFeng-XGuard adds, Risks Involving Minors (3 categories): 9 dimensions, 28 categories."
)
"""Description of the extended tree."""


def seval_nodes(*, extended: bool = False) -> list[RiskNode]:
    """Returns fresh L1 and L2 nodes of the built-in S-Eval tree, in pre-order.

    Args:
        extended: Also the ninth dimension, Risks Involving Minors, and its categories.
    """
    nodes: list[RiskNode] = []
    for l1, categories in (*_SEVAL, _MINORS) if extended else _SEVAL:
        nodes.append(_node(l1, l1.key, 1))
        nodes.extend(_node(l2, f"{l1.key}/{l2.key}", 2) for l2 in categories)
    return nodes


@functools.cache
def seval_tree() -> RiskTree:
    """Returns the built-in S-Eval tree: the 8 L1 dimensions and 25 L2 categories (cached)."""
    return RiskTree(seval_nodes(), name="s-eval", description=SEVAL_TREE_DESCRIPTION)


@functools.cache
def seval_extended_tree() -> RiskTree:
    """Returns S-Eval's tree with XGuard's ninth dimension: 9 L1 and 28 L2 nodes (cached)."""
    return RiskTree(
        seval_nodes(extended=True),
        name="s-eval-extended",
        description=SEVAL_EXTENDED_TREE_DESCRIPTION,
    )


def _node(entry: _Entry, path: str, level: int) -> RiskNode:
    return RiskNode(
        key=entry.key,
        name=entry.name,
        name_zh=entry.name_zh,
        path=path,
        level=level,
        description=entry.description,
        published_count=entry.published,
    )
