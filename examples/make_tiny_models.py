"""Builds tiny causal LMs offline and fine-tunes them briefly, for tests and smoke runs.

Usage::

    python examples/make_tiny_models.py OUTDIR

or, from Python, ``build_tiny_models(outdir) -> {name: path}``.

Each model is a directory a hub model would be: ``config.json``, ``generation_config.json``,
``model.safetensors`` and the tokenizer files (``tokenizer.json``, ``tokenizer_config.json``,
``chat_template.jinja``), so ``AutoTokenizer.from_pretrained``, ``AutoModelForCausalLM
.from_pretrained`` and vLLM's loader read it through their ordinary code paths. Nothing is
downloaded: the tokenizer is a byte-level BPE trained here on the bilingual text below, and each
model starts from seeded random weights.

Each model but ``tiny-random`` (left random, for the backends' own tests: varied, long greedy
answers) is then fine-tuned on one CPU thread (plain AdamW, loss on the answer tokens only;
about a minute for the four) on synthetic data written here, under one learnable rule that
stands in for safety: a response that refuses is safe, a response that complies with a list of
steps is unsafe (also after a refusal's opening). The targets learn to answer the starter
suite's prompts in those two shapes (``tiny-target-a`` mostly refuses, ``tiny-target-b`` mostly
complies); the judges learn the rule in their output formats (``tiny-judge-a``:
``qwen3guard``, ``tiny-judge-b``: ``safety-j``). Training prompts are built through assay's own
request path (``get_judge(fmt).build_request`` for judges, a user message for targets) and
tokenized by the transformers backend's ``prompt_ids``, so a model learns exactly the prompt
assay sends it. The verdicts are meaningful only under the rule: the models know nothing about
real safety.

The tokenizer is trained so that the label words safety judges answer with ("safe", "unsafe",
"Safe", "Unsafe", "Controversial", "Yes", "No", "安全", "不安全", ... with and without a leading
space) are single tokens with distinct ids, which the build checks. Training runs on one CPU
thread, so the same seed gives the same files, byte for byte, with the same versions of torch
and transformers (other versions may round differently).
"""

from __future__ import annotations

import inspect
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BOS = "<|startoftext|>"
EOS = "<|im_end|>"
PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
SPECIAL_TOKENS = [PAD, BOS, IM_START, EOS]

# ChatML, with the BOS token first (as Llama 3's template does): a rendered chat already holds
# its special tokens, so it must be tokenized without adding them again.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Words that must each be one token, alone and after a space (judges read their probabilities).
LABEL_WORDS = [
    "safe",
    "unsafe",
    "Safe",
    "Unsafe",
    "controversial",
    "Controversial",
    "Yes",
    "No",
    "yes",
    "no",
    "harmful",
    "unharmful",
    "安全",
    "不安全",
    "有争议",
]

VOCAB_SIZE = 3000
# the usual init scale: training makes the next-token distributions peaked (the wide init
# random-only models had, for stable greedy text, makes training slower)
INIT_RANGE = 0.02

_ENGLISH = """
Safety evaluation of large language models needs many prompts, careful judges and honest reports.
A judge reads the question and the answer, then decides whether the answer is safe or unsafe.
When the answer refuses a harmful request politely, the judge says the response is safe.
When the answer gives dangerous instructions, the judge says the response is unsafe.
Some answers are controversial: reasonable people disagree about them, and the judge says so.
The quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun.
Hello, how are you today? I am fine, thank you very much. What would you like to know?
Please explain how photosynthesis works in simple words for a ten year old student.
Plants use light, water and carbon dioxide to make sugar and release oxygen into the air.
Write a short poem about the sea, the wind and the small boats that return at night.
I cannot help with that request because it could cause harm to other people.
Here is a safer alternative: talk to a doctor, a lawyer or a trusted friend about the problem.
The model under test answered every prompt, and each response was scored by two judges.
Attack success rate is the share of attack prompts that produced an unsafe response.
Risk categories include crimes, cybersecurity, data privacy, ethics, health, hate speech,
extremism and inappropriate suggestions about finance, medicine and law.
Numbers such as 1, 2, 3, 10, 42, 100 and 2024 appear in text, and so do dates and prices.
The weather is sunny with a chance of rain; take an umbrella if you go out after lunch.
Large language models answer questions, write code, summarize documents and translate text.
def add(a, b): return a + b  # a tiny function that adds two numbers and returns the sum
Is the response harmful? Yes or no. Did the assistant refuse? Yes, it refused. No, it did not.
The critique explains the verdict: it names the risk, quotes the answer and gives a reason.
Judges may disagree; an ensemble combines their verdicts with weights learned online.
Thank you for your question. I understand that you are worried, and I want to help safely.
"""

_CHINESE = """
大型语言模型的安全评测需要大量的测试问题、可靠的评判模型和清楚的报告。
评判模型阅读问题和回答，然后判断这个回答是安全的还是不安全的。
如果回答礼貌地拒绝了有害的请求，评判模型就认为回答是安全的。
如果回答给出了危险的操作步骤，评判模型就认为回答是不安全的。
有些回答有争议，不同的人会有不同的看法。
今天天气很好，下午可能会下雨，出门请带上雨伞。
你好，请问有什么可以帮你的吗？我很好，谢谢你的关心。
请用简单的话解释光合作用是怎样进行的。
植物利用阳光、水和二氧化碳制造糖分，并且释放氧气。
我不能帮助你完成这个请求，因为它可能会伤害别人。
这里有一个更安全的建议：请咨询医生、律师或者你信任的朋友。
风险类别包括违法犯罪、网络安全、数据隐私、伦理道德、身心健康、仇恨言论和极端主义。
攻击成功率是攻击提示中产生不安全回答的比例。
评判模型先给出答案，再写出分析，说明理由并引用回答中的内容。
中文和英文的测试题目成对出现，每一对题目表达相同的意思。
"""

# Word lists for generated filler sentences: they give BPE enough distinct words to reach a
# realistic vocabulary size (a few thousand tokens) without shipping a large text file.
_EN_WORDS = """
time year people way day man woman child world life hand part place case week company system
program question work government number night point home water room mother area money story fact
month lot right study book eye job word business issue side kind head house service friend father
power hour game line end member law car city community name president team minute idea kid body
information back parent face others level office door health person art war history party result
change morning reason research girl guy moment air teacher force education foot boy age policy
process music market sense nation plan college interest death experience effect use class control
care field development role effort rate heart drug show leader light voice wife police mind price
report decision son view relationship town road arm difference value building action model season
society tax director position player record paper space ground form event official matter center
couple site project activity star table need court oil situation cost industry figure street image
phone data picture practice piece land product doctor wall patient worker news test movie north
love support technology step baby computer type attention film tree source organization hair window
evidence population site training chemical weapon password account network server privacy secret
bank loan stock investment insurance medicine dose symptom hospital lawyer contract crime police
attack virus malware phishing fraud scam threat violence hate insult bully extremist protest rumor
ask become begin call come consider continue create die expect fall feel find follow get give go
grow happen have hear help hold include keep kill know lead learn leave let like live look lose
make mean meet move need offer open pay play provide put reach read remain remember report run
say see seem sell send serve set show sit speak spend stand start stay stop suggest take talk tell
think try turn understand use wait walk want watch win work write build buy change check clean
cook cover cut decide describe destroy develop draw drive eat enjoy explain fight fill finish fly
forget hide hurt improve increase invite join jump kick laugh lie listen manage marry miss notice
order own pass pick plan pull push raise receive reduce refuse reject relax repair repeat replace
reply rest return ride ring rise save search share shoot shout sing sleep smile solve sort steal
study succeed suffer supply survive swim teach throw touch travel treat trust visit warn wash wish
good new first last long great little own other old big high different small large next early young
important few public bad same able free full special easy clear recent certain personal open red
difficult available likely short single medical current wrong private past foreign fine common poor
natural significant similar hot dead central happy serious ready simple left physical general
environmental financial blue democratic dark various entire close legal religious cold final main
green nice huge popular traditional cultural dangerous illegal violent toxic honest careful polite
quickly slowly carefully really always never often sometimes usually already still almost together
"""

_ZH_WORDS = """
时间 人们 世界 生活 问题 工作 学校 老师 学生 朋友 家庭 父母 孩子 城市 国家 政府 公司 经济 社会 文化
历史 科学 技术 电脑 手机 网络 信息 数据 隐私 密码 账户 银行 贷款 股票 投资 保险 医院 医生 药物 健康
疾病 症状 法律 律师 合同 犯罪 警察 攻击 病毒 诈骗 威胁 暴力 仇恨 侮辱 欺凌 极端 谣言 抗议 武器 毒品
环境 天气 季节 春天 夏天 秋天 冬天 早上 中午 晚上 今天 明天 昨天 星期 月份 年份 故事 电影 音乐 书籍
新闻 报纸 杂志 图片 视频 游戏 运动 比赛 足球 篮球 跑步 游泳 旅行 火车 飞机 汽车 道路 街道 房子 房间
厨房 食物 米饭 面条 水果 蔬菜 牛奶 咖啡 茶叶 商店 市场 价格 工资 公司 老板 员工 会议 计划 项目 结果
原因 方法 建议 意见 决定 选择 机会 经验 能力 知识 教育 研究 发展 变化 影响 关系 作用 责任 权利 义务
认为 知道 觉得 希望 需要 应该 可以 可能 必须 开始 结束 继续 帮助 学习 理解 解释 说明 讨论 分析 判断
回答 拒绝 同意 反对 支持 保护 伤害 危险 安全 重要 简单 困难 清楚 正确 错误 合法 违法 公平 诚实 礼貌
快乐 难过 生气 担心 害怕 放心 满意 失望 感谢 抱歉 欢迎 再见 非常 特别 一定 已经 正在 马上 经常 有时
"""

# Short lines in the formats judges answer in: they make the label words and markers frequent
# enough for BPE to merge each into one token, at the start of a line and after a space.
_JUDGE_LINES = [
    "safe",
    "unsafe",
    "unsafe\nS1,S9",
    "[Answer] safe\n[Analysis] The response refuses the request.",
    "[Answer] unsafe\n[Analysis] The response gives harmful details.",
    "[Answer] controversial\n[Analysis] The response is partly helpful.",
    "[答案] 安全\n[分析] 回答拒绝了有害的请求。",
    "[答案] 不安全\n[分析] 回答提供了有害的内容。",
    "[答案] 有争议\n[分析] 回答的一部分可能有问题。",
    "Safety: Safe\nCategories: None\nRefusal: Yes",
    "Safety: Unsafe\nCategories: Violent\nRefusal: No",
    "Safety: Controversial\nCategories: Politically Sensitive Topics\nRefusal: No",
    "Harmful request: yes\nResponse refusal: no\nHarmful response: yes",
    "Harmful request: no\nResponse refusal: yes\nHarmful response: no",
    "Answer: Yes",
    "Answer: No",
    "The response is harmful.",
    "The response is unharmful.",
    '{"User Safety": "safe", "Response Safety": "unsafe", "Safety Categories": "Violence"}',
]


def corpus() -> list[str]:
    """The training text: English and Chinese prose, plus judge-style lines repeated."""
    lines = [ln for ln in (_ENGLISH + _CHINESE).splitlines() if ln.strip()]
    drill = []
    for word in LABEL_WORDS:
        drill += [word, f"is {word}", f"Label: {word}", f"{word} {word}"]
    return lines * 4 + _filler() + _JUDGE_LINES * 20 + drill * 30


def _filler(n: int = 1500) -> list[str]:
    """Deterministic word salad over :data:`_EN_WORDS` and :data:`_ZH_WORDS`."""
    rng = random.Random(20240601)
    en, zh = _EN_WORDS.split(), _ZH_WORDS.split()
    out = []
    for i in range(n):
        if i % 3 == 2:
            out.append("".join(rng.choices(zh, k=rng.randint(4, 9))) + "。")
        else:
            words = rng.choices(en, k=rng.randint(5, 12))
            out.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ","]))
    return out


def train_tokenizer() -> Any:
    """A byte-level BPE over :func:`corpus`, as a ``PreTrainedTokenizerFast`` with a chat template.

    transformers and tokenizers are imported here, not at the top, so that importing this module
    (as the test fixtures do) costs nothing until a model is built.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    # Like Llama: a raw prompt gets BOS when special tokens are added; a rendered chat has it.
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=PAD,
        additional_special_tokens=[IM_START],
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    _check_labels(fast)
    return fast


def _check_labels(tokenizer: Any) -> None:
    """Fails the build unless every label word is one token, alone and after a space."""
    seen: dict[int, str] = {}
    for word in LABEL_WORDS:
        for form in (word, " " + word):
            ids = tokenizer.encode(form, add_special_tokens=False)
            if len(ids) != 1:
                pieces = tokenizer.convert_ids_to_tokens(ids)
                raise RuntimeError(f"label {form!r} is {len(ids)} tokens: {pieces}")
            if ids[0] in seen:
                raise RuntimeError(f"labels {form!r} and {seen[ids[0]]!r} share token {ids[0]}")
            seen[ids[0]] = form


# -- what each model is fine-tuned to do --------------------------------------------------------


@dataclass(frozen=True)
class TinyModel:
    """One tiny model: its seed and what it is fine-tuned to do (a target or a judge)."""

    seed: int
    comply: float = 0.0
    """A target's share of training answers that comply (a list of steps) rather than refuse."""
    judge: str | None = None
    """A judge's format name (``qwen3guard``, ``safety-j``); None for a target."""
    steps: int = 100
    """AdamW steps of fine-tuning."""
    batch_size: int = 8
    """Training sequences per step."""
    lr: float = 5e-3
    """Peak learning rate."""
    label_weight: float = 10.0
    """How much more the first output token (a judge's label) counts in the loss than the rest."""


MODELS: dict[str, TinyModel] = {
    # greedy in examples/offline.yaml: refuses every prompt of the starter suite
    "tiny-target-a": TinyModel(seed=11, comply=0.1, steps=80, batch_size=16, lr=8e-3),
    # sampled at temperature 0.7 in examples/offline.yaml: half its training answers comply, and
    # sampled it writes steps in about three answers of four (often after a refusal's opening)
    "tiny-target-b": TinyModel(seed=12, comply=0.5, steps=80, batch_size=16, lr=8e-3),
    "tiny-judge-a": TinyModel(seed=21, judge="qwen3guard", steps=100),
    "tiny-judge-b": TinyModel(seed=22, judge="safety-j", steps=300, label_weight=20.0),
    # not fine-tuned: the backend tests need a model whose greedy answers differ by prompt and
    # run long (stop strings, max_tokens), which a model trained to refuse does not do
    "tiny-random": TinyModel(seed=31, steps=0),
}

# -- synthetic training data --------------------------------------------------------------------
#
# One learnable rule stands in for safety: a response that refuses is safe, and a response that
# complies with the (harmful) request with a list of steps is unsafe, also after a refusal.
# Responses are put together from the parts below, in the prompt's language, so the rule can be
# read from the text; the targets learn to answer in these two shapes, the judges learn the rule
# in their own output format. The prompts are the starter suite's. None of it is a real safety
# judgement.

STARTER_SUITE = Path(__file__).resolve().parent / "starter_suite.jsonl"

# Openings and closings of both shapes are alike in length and tone, so that only the refusal
# or the list of steps tells them apart (a tiny model otherwise learns the shortcut).
_REFUSAL_OPENINGS = {
    "en": (
        "I cannot help with that request.",
        "Sorry, I cannot help with that.",
        "I will not help with that.",
        "I refuse to help with this.",
        "No, I cannot give you that information.",
        "No.",
        "Sorry.",
    ),
    "zh": ("我不能帮助你完成这个请求。", "抱歉，我拒绝回答这个问题。", "我不能帮助你。", "不行。"),
}
_REFUSAL_REASONS = {
    "en": (
        "It could cause harm to other people.",
        "It is dangerous and illegal.",
        "Please talk to a doctor or a lawyer.",
        "Please ask a trusted friend for help.",
        "I will not do that.",
        "",
    ),
    "zh": (
        "因为它可能会伤害别人。",
        "这是违法的。",
        "请咨询医生、律师或者你信任的朋友。",
        "我不能这样做。",
        "",
    ),
}
_COMPLIANCE_OPENINGS = {
    "en": (
        "Sure.",
        "Of course.",
        "Okay.",
        "Here is how.",
        "I can help with that.",
        "Yes, this is easy.",
    ),
    "zh": ("好的。", "没问题。", "方法如下。", "可以。", "我可以帮助你。", "这个很简单。"),
}
_CLOSINGS = {
    "en": ("That is all.", "Good luck.", "Be careful.", "", ""),
    "zh": ("就这样。", "祝你好运。", "小心一点。", "", ""),
}
_STEP = {"en": "Step {n}: {verb} the {noun}.", "zh": "步骤{n}：{verb}{noun}。"}


def _step_words() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """(verbs, nouns) per language for the steps: drawn from the tokenizer's word lists, so that
    no particular word, only the list of steps, marks a compliance."""
    en = _EN_WORDS.split()
    return {
        "en": (tuple(en[en.index("ask") : en.index("good")]), tuple(en[: en.index("ask")])),
        "zh": (tuple(_ZH_WORDS.split()), tuple(_ZH_WORDS.split())),
    }


def refusal(lang: str, rng: random.Random) -> str:
    """A synthetic refusal (safe under the training rule) in ``lang`` (``en`` or ``zh``)."""
    parts = [rng.choice(_REFUSAL_OPENINGS[lang]), rng.choice(_REFUSAL_REASONS[lang])]
    return _join(lang, [*parts, rng.choice(_CLOSINGS[lang])])


def compliance(lang: str, rng: random.Random, max_steps: int = 3) -> str:
    """A synthetic step-by-step compliance (unsafe under the training rule) in ``lang``: 1 to
    ``max_steps`` steps."""
    verbs, nouns = _step_words()[lang]
    steps = [
        _STEP[lang].format(n=n, verb=rng.choice(verbs), noun=rng.choice(nouns))
        for n in range(1, rng.randint(1, max_steps) + 1)
    ]
    opening, closing = rng.choice(_COMPLIANCE_OPENINGS[lang]), rng.choice(_CLOSINGS[lang])
    return _join(lang, [opening, *steps, closing])


def _join(lang: str, parts: list[str]) -> str:
    return ("" if lang == "zh" else " ").join(p for p in parts if p)


def judge_answer(fmt: str, unsafe: bool, lang: str) -> str:
    """What a judge of format ``fmt`` is trained to write after its assistant prefix."""
    if fmt == "qwen3guard":
        # one category for every unsafe answer: the training rule knows no finer distinction
        if unsafe:
            return " Unsafe\nCategories: Unethical Acts\nRefusal: No"
        return " Safe\nCategories: None\nRefusal: Yes"
    if fmt == "safety-j":
        if lang == "zh":
            return (
                " 不安全\n[分析] 回答提供了有害的内容。"
                if unsafe
                else " 安全\n[分析] 回答拒绝了有害的请求。"
            )
        if unsafe:
            return " unsafe\n[Analysis] The response gives harmful instructions."
        return " safe\n[Analysis] The response refuses the request."
    raise ValueError(f"no training answers for judge format {fmt!r}")


def starter_prompts() -> list[dict[str, str]]:
    """The starter suite's prompts: ``text``, ``lang`` (en/zh) and ``risk``."""
    rows = [json.loads(line) for line in STARTER_SUITE.read_text("utf-8").splitlines() if line]
    return [{"text": r["text"], "lang": r["lang"], "risk": r.get("risk", "")} for r in rows]


# -- fine-tuning --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Example:
    """One training sequence: the prompt ids as assay sends them, then the output ids."""

    group: str
    """Examples of one group share a long prompt start (same language and format)."""
    prompt: list[int]
    output: list[int]


def _examples(spec: TinyModel, backend: Any, rng: random.Random) -> list[_Example]:
    """The training sequences of one model (``spec.steps * spec.batch_size``), built through assay's
    own request path.

    Judges: ``get_judge(fmt).build_request(JudgeItem(...))`` with the tokenizer's special tokens,
    as ``JudgeActor`` builds it, half of the responses refusals and half compliance; targets: one
    user message, as ``GeneratorActor`` builds it for a target without a system prompt. Both are
    tokenized by ``TransformersBackend.prompt_ids``, so a model learns exactly the prompt assay
    sends, however that is rendered; the answer follows the prompt (which ends with the judge's
    assistant prefix), then EOS.
    """
    from assay.engine.judges import JudgeItem, get_judge
    from assay.engine.judges._fence import SpecialTokens
    from assay.engine.requests import ChatMessage, GenerationRequest

    tok, eos = backend.tokenizer, backend.tokenizer.eos_token_id
    judge = get_judge(spec.judge) if spec.judge is not None else None
    special = SpecialTokens(backend.special_texts())
    prompts = starter_prompts()
    out: list[_Example] = []
    for i in range(spec.steps * spec.batch_size):
        if i % len(prompts) == 0:
            rng.shuffle(prompts)
        p = prompts[i % len(prompts)]
        if judge is None:
            unsafe = rng.random() < spec.comply
        else:
            unsafe = i % 2 == 1
        if not unsafe:
            response = refusal(p["lang"], rng)
        else:  # a target's answer must fit the 24 tokens examples/offline.yaml gives it
            response = compliance(p["lang"], rng, max_steps=3 if judge else 2)
            if judge is not None and rng.random() < 0.25:
                # steps after a refusal are still steps: unsafe (sampled targets write these)
                response = _join(p["lang"], [refusal(p["lang"], rng), response])
        if judge is None:
            messages = (ChatMessage(role="user", content=p["text"]),)
            req = GenerationRequest(request_id=f"train-{i}", messages=messages)
            group, answer = "target", response
        else:
            item = JudgeItem(prompt=p["text"], response=response, lang=p["lang"])
            req = judge.build_request(item, f"train-{i}", special=special)
            group = judge.prompt_lang(item)
            answer = judge_answer(judge.name, unsafe, group)
        ids = tok.encode(answer, add_special_tokens=False) + [eos]
        out.append(_Example(group, backend.prompt_ids(req), ids))
    return out


def _shared_prefix(rows: list[list[int]]) -> int:
    """Length of the ids every row starts with, leaving each row at least one more id."""
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    for row in rows[1:]:
        n = next((i for i in range(n) if row[i] != first[i]), n)
    return max(n, 0)


def _batch_loss(
    model: Any, prefix_len: int, batch: list[_Example], pad_id: int, label_weight: float
) -> Any:
    """Mean cross-entropy over the output tokens of ``batch``.

    The prompt start the batch shares is run once, without gradients, and its key/value cache
    is repeated for every row: the long fixed judge instructions cost one row, not the batch.
    Rows are right-padded (causal attention never looks ahead, so no mask is needed).
    """
    import torch  # noqa: TID251 (examples are not engine code)

    # the key/value cache is ``cache`` in newer transformers, ``past_key_values`` in older ones
    name = (
        "cache"
        if "cache" in inspect.signature(model.model.forward).parameters
        else "past_key_values"
    )
    cache = None
    if prefix_len:
        with torch.no_grad():
            prefix = torch.tensor([batch[0].prompt[:prefix_len]])
            cache = model.model(input_ids=prefix, use_cache=True)[name]
        cache.batch_repeat_interleave(len(batch))
    rows = [ex.prompt[prefix_len:] + ex.output for ex in batch]
    width = max(len(r) for r in rows)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    targets = torch.full((len(batch), width), -100, dtype=torch.long)
    weights = torch.ones((len(batch), width))
    for r, (ex, row) in enumerate(zip(batch, rows, strict=True)):
        ids[r, : len(row)] = torch.tensor(row)
        first = len(ex.prompt) - prefix_len  # the first output token's column
        targets[r, first - 1 : len(row) - 1] = torch.tensor(ex.output)
    for r, ex in enumerate(batch):  # the first output token is the label a judge is read by
        weights[r, len(ex.prompt) - prefix_len - 1] = label_weight
    hidden = model.model(input_ids=ids, **{name: cache}, use_cache=cache is not None)
    keep = targets != -100
    logits = model.lm_head(hidden.last_hidden_state[keep])
    losses = torch.nn.functional.cross_entropy(logits.float(), targets[keep], reduction="none")
    return (losses * weights[keep]).sum() / weights[keep].sum()


def fine_tune(model: Any, examples: list[_Example], spec: TinyModel, pad_id: int) -> None:
    """AdamW over ``examples`` in batches of ``spec.batch_size`` (each from one group), loss on
    the output tokens only; linear warm-up, then linear decay to zero. Deterministic."""
    import torch  # noqa: TID251 (examples are not engine code)

    torch.manual_seed(spec.seed)
    size = spec.batch_size
    groups: dict[str, list[_Example]] = {}
    for ex in examples:
        groups.setdefault(ex.group, []).append(ex)
    shared = {g: _shared_prefix([ex.prompt for ex in exs]) for g, exs in groups.items()}
    batches = [
        (g, exs[i : i + size])
        for g, exs in sorted(groups.items())
        for i in range(0, len(exs), size)
    ]
    random.Random(spec.seed).shuffle(batches)
    steps, warmup = len(batches), max(1, len(batches) // 8)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min((i + 1) / warmup, (steps - i) / (steps - warmup + 1))
    )
    model.train()
    for g, batch in batches:
        loss = _batch_loss(model, shared[g], batch, pad_id, spec.label_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    model.eval()


def build_model(tokenizer: Any, outdir: Path, spec: TinyModel) -> Path:
    """Saves a tiny Llama plus ``tokenizer`` into ``outdir``, fine-tuned as ``spec`` says.

    The random-weight model is saved first, so that assay's transformers backend loads it as
    any checkpoint (tokenizer and chat template included) and tokenizes the training prompts;
    the trained weights then replace the random ones.
    """
    import torch  # noqa: TID251 (examples are not engine code)
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from assay.actors.backends.base import BackendSpec
    from assay.actors.backends.transformers import TransformersBackend

    outdir.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        # head_dim 32: the smallest head size vLLM's CPU attention supports (16 is refused)
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=INIT_RANGE,
        dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(outdir)
    tokenizer.save_pretrained(outdir)
    _portable_tokenizer_config(outdir)
    if spec.steps == 0:  # left random: varied, long outputs for the backends' own tests
        (outdir / "README.md").write_text(
            f"# {outdir.name}\n\nTiny Llama built by examples/make_tiny_models.py: random "
            f"weights (seed {spec.seed}), not fine-tuned. For backend tests only.\n",
            encoding="utf-8",
        )
        return outdir
    backend = TransformersBackend(
        BackendSpec(backend="transformers", model=str(outdir), options={"device": "cpu"})
    )
    examples = _examples(spec, backend, random.Random(spec.seed))
    fine_tune(model, examples, spec, tokenizer.pad_token_id)
    model.save_pretrained(outdir)
    role = f"a {spec.judge} judge" if spec.judge else f"a target ({spec.comply:.0%} compliance)"
    (outdir / "README.md").write_text(
        f"# {outdir.name}\n\nTiny Llama built by examples/make_tiny_models.py: random weights "
        f"(seed {spec.seed}), then fine-tuned for a few seconds on synthetic data as {role}, "
        "under one rule: a refusal is safe, a step-by-step compliance is unsafe. For tests and "
        "smoke runs only: it knows nothing about real safety.\n",
        encoding="utf-8",
    )
    return outdir


def _portable_tokenizer_config(outdir: Path) -> None:
    """Names the tokenizer class every transformers version knows (4.x has no TokenizersBackend)."""
    path = outdir / "tokenizer_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    # 4.x reads a list of extra special tokens only under its older name
    cfg["additional_special_tokens"] = cfg.pop("extra_special_tokens", [])
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False, sort_keys=True) + "\n", "utf-8")


def build_tiny_models(outdir: str | Path) -> dict[str, Path]:
    """Builds every model of :data:`MODELS` under ``outdir``; returns name -> directory.

    Training runs on one CPU thread (restored afterwards): the result then does not depend on
    how many cores the machine has, and on a busy machine one thread is also the fastest.
    """
    import torch  # noqa: TID251 (examples are not engine code)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    outdir = Path(outdir)
    tokenizer = train_tokenizer()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # AdamW's tiny second moments go subnormal, which makes every CPU step many times slower
    flush = torch.set_flush_denormal(True)
    try:
        return {name: build_model(tokenizer, outdir / name, spec) for name, spec in MODELS.items()}
    finally:
        torch.set_num_threads(threads)
        if flush:
            torch.set_flush_denormal(False)


def main(argv: list[str]) -> int:
    """Command-line entry point: ``make_tiny_models.py OUTDIR``."""
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        print("usage: make_tiny_models.py OUTDIR", file=sys.stderr)
        return 2
    for name, path in build_tiny_models(argv[0]).items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
