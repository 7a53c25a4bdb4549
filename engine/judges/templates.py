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
    # Llama 4 (Llama Guard 4)
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
}

__all__ = ["PLAIN_TEMPLATES"]
