"""Builds tiny random-weight causal LMs offline, for tests and smoke runs.

Usage::

    python examples/make_tiny_models.py OUTDIR

or, from Python, ``build_tiny_models(outdir) -> {name: path}``.

Each model is a directory a hub model would be: ``config.json``, ``generation_config.json``,
``model.safetensors`` and the tokenizer files (``tokenizer.json``, ``tokenizer_config.json``,
``chat_template.jinja``), so ``AutoTokenizer.from_pretrained``, ``AutoModelForCausalLM
.from_pretrained`` and vLLM's loader read it through their ordinary code paths. Nothing is
downloaded: the tokenizer is a byte-level BPE trained here on the bilingual text below, the
weights are random (seeded), and the whole build takes a few seconds on a small CPU.

The tokenizer is trained so that the label words safety judges answer with ("safe", "unsafe",
"Safe", "Unsafe", "Controversial", "Yes", "No", "安全", "不安全", ... with and without a leading
space) are single tokens with distinct ids, which the build checks. The same seed gives the same
files, byte for byte.
"""

from __future__ import annotations

import json
import random
import sys
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

MODELS = {
    "tiny-target-a": 11,
    "tiny-target-b": 12,
    "tiny-judge-a": 21,
    "tiny-judge-b": 22,
}

VOCAB_SIZE = 3000

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


def build_model(tokenizer: Any, outdir: Path, seed: int) -> Path:
    """Saves a random-weight tiny Llama plus ``tokenizer`` into ``outdir``."""
    import torch  # noqa: TID251 (examples are not engine code)
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

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
        # a wide init gives peaked, far-from-uniform next-token distributions, so greedy text
        # is stable under padding and label log-probabilities differ clearly between labels
        initializer_range=0.3,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(outdir)
    tokenizer.save_pretrained(outdir)
    _portable_tokenizer_config(outdir)
    (outdir / "README.md").write_text(
        f"# {outdir.name}\n\nRandom-weight tiny Llama (seed {seed}) built by "
        "examples/make_tiny_models.py, for tests only: its outputs mean nothing.\n",
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
    """Builds every model of :data:`MODELS` under ``outdir``; returns name -> directory."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    outdir = Path(outdir)
    tokenizer = train_tokenizer()
    return {name: build_model(tokenizer, outdir / name, seed) for name, seed in MODELS.items()}


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
