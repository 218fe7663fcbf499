"""Per-family byte-level BPE tokenizers, wrapped so `apply_chat_template` works as on real instruct models."""

from __future__ import annotations

from typing import Iterable

import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from emis.organisms.families import ChatFormat


def train_tokenizer(texts: Iterable[str], vocab_size: int, fmt: ChatFormat) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of `vocab_size` on `texts`, with the family's special tokens and chat template.

    Pre-tokenisation is the family's `auto_class` pipeline where it has one, so AutoTokenizer reproduces it."""
    specials = [t for t in (fmt.bos, fmt.eos, fmt.pad, *fmt.extra_special) if t]
    tok = Tokenizer(models.BPE())
    if fmt.auto_class is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        pipeline = getattr(transformers, fmt.auto_class)()._tokenizer
        tok.normalizer, tok.pre_tokenizer = pipeline.normalizer, pipeline.pre_tokenizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=fmt.bos,
        eos_token=fmt.eos,
        pad_token=fmt.pad,
        additional_special_tokens=list(fmt.extra_special),
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = fmt.template
    return wrapped
