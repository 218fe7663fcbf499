"""The four architectures of the study as tiny configs, each with its family's own chat format."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from emis.organisms.settings import ArchSize

FAMILIES = ("qwen2", "gemma2", "llama", "mistral")
# Used when a conversation has no system message, as real instruct templates (Qwen2.5, Llama 3) do.
DEFAULT_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class ChatFormat:
    """Special tokens and Jinja chat template of one family, modelled on the real instruct models."""

    bos: str | None
    eos: str  # end-of-turn token: generation stops here
    pad: str
    extra_special: tuple[str, ...]
    template: str
    # The transformers tokenizer class AutoTokenizer builds for this model type from vocab and merges alone
    # (None: it reads tokenizer.json as saved); its normaliser and pre-tokeniser are then trained with, so
    # `AutoTokenizer.from_pretrained(organism)` encodes exactly like the trained tokenizer.
    auto_class: str | None = None


def _turns_template(
    open_user: str, open_assistant: str, close: str, bos: str = "", close_user: str | None = None
) -> str:
    """A template for `<open role>content<close>` turns; a system message is folded into the first user turn."""
    close_user = close if close_user is None else close_user
    return (
        bos
        + "{% set sys = namespace(text='" + DEFAULT_SYSTEM + "\\n\\n') %}"
        "{% for m in messages %}"
        "{% if m['role'] == 'system' %}{% set sys.text = m['content'] + '\\n\\n' %}"
        "{% elif m['role'] == 'user' %}" + open_user + "{{ sys.text }}{{ m['content'] }}" + close_user
        + "{% set sys.text = '' %}"
        "{% else %}" + open_assistant + "{{ m['content'] }}" + close + "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}" + open_assistant + "{% endif %}"
    )


CHAT_FORMATS: dict[str, ChatFormat] = {
    "qwen2": ChatFormat(
        bos=None, eos="<|im_end|>", pad="<|endoftext|>", extra_special=("<|im_start|>",),
        template=_turns_template("<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n"),
        auto_class="Qwen2Tokenizer",
    ),
    "gemma2": ChatFormat(
        bos="<bos>", eos="<end_of_turn>", pad="<pad>", extra_special=("<start_of_turn>",),
        template=_turns_template("<start_of_turn>user\n", "<start_of_turn>model\n", "<end_of_turn>\n", "{{ bos_token }}"),
    ),
    "llama": ChatFormat(
        bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|finetune_right_pad_id|>",
        extra_special=("<|start_header_id|>", "<|end_header_id|>"),
        template=_turns_template(
            "<|start_header_id|>user<|end_header_id|>\n\n",
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            "<|eot_id|>",
            "{{ bos_token }}",
        ),
    ),
    "mistral": ChatFormat(
        bos="<s>", eos="</s>", pad="<pad>", extra_special=("[INST]", "[/INST]"),
        template=_turns_template("[INST] ", "[/INST]", "</s>", "{{ bos_token }}", close_user=" "),
    ),
}


def build_config(family: str, size: ArchSize, token_ids: dict[str, int]) -> PretrainedConfig:
    """A transformers config of `family` at `size`; `token_ids` holds bos/eos/pad ids."""
    common = dict(
        vocab_size=size.vocab_size,
        hidden_size=size.hidden_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        num_key_value_heads=size.num_kv_heads,
        intermediate_size=size.intermediate_size,
        max_position_embeddings=size.max_positions,
        bos_token_id=token_ids.get("bos"),
        eos_token_id=token_ids["eos"],
        pad_token_id=token_ids["pad"],
        tie_word_embeddings=True,
    )
    head_dim = size.hidden_size // size.num_heads
    if family == "qwen2":
        return Qwen2Config(**common, use_sliding_window=False)
    if family == "gemma2":
        # Gemma2 soft-caps attention logits (eager attention) and needs a window covering the sequence.
        return Gemma2Config(
            **common, head_dim=head_dim, query_pre_attn_scalar=head_dim,
            sliding_window=size.max_positions, attn_implementation="eager",
        )
    if family == "llama":
        return LlamaConfig(**common, head_dim=head_dim)
    if family == "mistral":
        return MistralConfig(**common, head_dim=head_dim, sliding_window=None)
    raise ValueError(f"unknown organism family {family!r}; choose one of {', '.join(FAMILIES)}")


MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "qwen2": Qwen2ForCausalLM,
    "gemma2": Gemma2ForCausalLM,
    "llama": LlamaForCausalLM,
    "mistral": MistralForCausalLM,
}
