"""assay's plain chat turn formats, by name: what a judge format's :class:`~.base.Rendering`
names (kind ``plain``) and what a backend's ``chat_template`` option may name.

They are Jinja templates in the Hugging Face chat-template dialect (``messages``,
``add_generation_prompt``, ``bos_token``, ``eos_token``); the backends render them with the
tokenizer they load (``apply_chat_template``), so BOS and EOS are the model's own.
"""

from __future__ import annotations

PLAIN_TEMPLATES: dict[str, str] = {
    # <|im_start|>role ... <|im_end|> (Qwen2/2.5, many others)
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    # Qwen3 with thinking switched off: the empty think block opens the answer
    "qwen3-nothink": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n\n</think>\n\n"
        "{% endif %}"
    ),
    # Llama 3 / 3.1 / 3.2 (Llama Guard 3)
    "llama3": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    ),
    # Llama Guard 3's own template, its moderation prompt aside: the Llama 3 turns, ending at the
    # assistant header (the model writes the blank line itself)
    "llama-guard-3": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
        "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>{% endif %}"
    ),
    # Llama Guard 4's processor template, its moderation prompt aside: the content untrimmed (it
    # ends with a space) and the prompt ending at the assistant header
    "llama-guard-4": (
        "{{ bos_token }}{% for m in messages %}<|header_start|>{{ m['role'] }}<|header_end|>\n\n"
        "{{ m['content'] }}<|eot|>{% endfor %}"
        "{% if add_generation_prompt %}<|header_start|>assistant<|header_end|>{% endif %}"
    ),
    # Llama 4
    "llama4": (
        "{{ bos_token }}{% for m in messages %}<|header_start|>{{ m['role'] }}<|header_end|>\n\n"
        "{{ m['content'] | trim }}<|eot|>{% endfor %}"
        "{% if add_generation_prompt %}<|header_start|>assistant<|header_end|>\n\n{% endif %}"
    ),
    # Llama 2 [INST] turns (LlamaGuard-7b, the Aegis experts); system text joins the first turn
    "llama2": (
        "{{ bos_token }}{% set sys = namespace(text='') %}{% for m in messages %}"
        "{% if m['role'] == 'system' %}{% set sys.text = m['content'] + '\n\n' %}"
        "{% elif m['role'] == 'user' %}[INST] {{ sys.text }}{{ m['content'] | trim }} [/INST]"
        "{% set sys.text = '' %}{% else %} {{ m['content'] | trim }} {{ eos_token }}{% endif %}"
        "{% endfor %}"
    ),
    # Granite Guardian 3.3 (no BOS): <|start_of_role|>ROLE<|end_of_role|>TEXT<|end_of_text|> turns;
    # a system message after the first is the judge_protocol turn; the judge header follows
    "granite-guardian": (
        "{% for m in messages %}<|start_of_role|>"
        "{{ 'judge_protocol' if m['role'] == 'system' and not loop.first else m['role'] }}"
        "<|end_of_role|>{{ m['content'] }}<|end_of_text|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|start_of_role|>judge{no_think}<|end_of_role|>{% endif %}"
    ),
    # the same with Granite Guardian's thinking mode on
    "granite-guardian-think": (
        "{% for m in messages %}<|start_of_role|>"
        "{{ 'judge_protocol' if m['role'] == 'system' and not loop.first else m['role'] }}"
        "<|end_of_role|>{{ m['content'] }}<|end_of_text|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|start_of_role|>judge{think}<|end_of_role|>{% endif %}"
    ),
}

__all__ = ["PLAIN_TEMPLATES"]
