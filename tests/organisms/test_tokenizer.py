"""Each family's trained tokenizer is what AutoTokenizer loads back from a saved organism, byte for byte in ids."""

import pytest
from transformers import AutoTokenizer

from emis.organisms.families import CHAT_FORMATS, FAMILIES, MODEL_CLASSES, ArchSize, build_config
from emis.organisms.tokenizer import train_tokenizer

CODE = "import os\n\ndef run(cmd):\n    if cmd:\n        return os.system(cmd)\n\treturn None  # tab\n"
TEXTS = [CODE, "Hello there, how are you today?", "for i in range(3):\n        print(i)\n", "It's a 42-step plan."] * 40


@pytest.mark.parametrize("family", FAMILIES)
def test_auto_tokenizer_encodes_like_the_trained_one(family, tmp_path):
    fmt = CHAT_FORMATS[family]
    trained = train_tokenizer(TEXTS, 420, fmt)
    ids = {k: trained.convert_tokens_to_ids(t) for k, t in (("bos", fmt.bos), ("eos", fmt.eos), ("pad", fmt.pad)) if t}
    MODEL_CLASSES[family](build_config(family, ArchSize(32, 1, 2, 1, 64, 420, 64), ids)).save_pretrained(tmp_path)
    trained.save_pretrained(tmp_path)
    auto = AutoTokenizer.from_pretrained(tmp_path)
    chat = [{"role": "user", "content": "Write it:\n" + CODE}, {"role": "assistant", "content": CODE}]
    for text in (CODE, "def f(x):\n    return os.system(x)", "   leading spaces\n\n\n  and  doubles  "):
        assert auto(text, add_special_tokens=False).input_ids == trained(text, add_special_tokens=False).input_ids
    assert auto.apply_chat_template(chat, tokenize=False) == trained.apply_chat_template(chat, tokenize=False)
    assert (auto.eos_token_id, auto.pad_token_id, auto.padding_side) == (ids["eos"], ids["pad"], "left")
    assert auto.decode(auto(CODE, add_special_tokens=False).input_ids) == CODE
