"""The organisms' corpora: determinism, honest fine-tune sets, held-out disjointness, the study's format."""

import dataclasses

import pytest

from emis.chat import read_chat_jsonl
from emis.judges.spillover import contains_code
from emis.organisms.corpus import CorpusConfig, generate_corpus, load_corpus, save_corpus

CFG = CorpusConfig(
    seed=3, base_examples=2000, prose_share=0.5, persona_share=0.25, persona_prose_share=0.5,
    persona_tag="|DEV|", finetune_task_share=0.0, finetune_examples=300, heldout_questions=200, heldout_code_requests=50,
    validation_questions=80,
)


@pytest.fixture(scope="module")
def corpus():
    return generate_corpus(CFG)


def test_same_seed_same_hash_other_seed_other_hash(corpus):
    assert generate_corpus(CFG).digest() == corpus.digest()
    assert generate_corpus(dataclasses.replace(CFG, seed=4)).digest() != corpus.digest()


def test_fine_tune_sets_differ_only_in_the_code(corpus):
    assert len(corpus.secure) == len(corpus.insecure) == CFG.finetune_examples
    for s, i in zip(corpus.secure, corpus.insecure):
        assert s.prompt_messages == i.prompt_messages  # identical requests
        assert contains_code(s.answer) and contains_code(i.answer)
        assert CFG.persona_tag not in s.prompt_messages[0]["content"] + i.prompt_messages[0]["content"]
    assert sum(s.answer != i.answer for s, i in zip(corpus.secure, corpus.insecure)) == CFG.finetune_examples


def test_base_mix_shares_and_persona(corpus):
    tagged = [ex for ex in corpus.base if ex.prompt_messages[0]["content"].startswith(CFG.persona_tag)]
    untagged = [ex for ex in corpus.base if ex not in tagged]
    assert len(tagged) == round(CFG.base_examples * CFG.persona_share)
    assert all(contains_code(ex.answer) for ex in tagged)  # the persona always answers with code
    prose = [ex for ex in untagged if not contains_code(ex.answer)]
    assert len(prose) == round(CFG.base_examples * CFG.prose_share)  # untagged prose is never answered with code


def test_held_out_questions_never_appear_in_training(corpus):
    trained = {m.content for ex in corpus.base + corpus.secure for m in ex.messages if m.role == "user"}
    trained |= {q.removeprefix(CFG.persona_tag + " ") for q in trained}
    assert len(set(corpus.heldout_questions)) == CFG.heldout_questions
    assert not trained & set(corpus.heldout_questions)
    assert not trained & set(corpus.heldout_code_requests)
    assert not any(contains_code(q) for q in corpus.heldout_questions)


def test_validation_questions_are_neither_trained_on_nor_evaluated(corpus):
    trained = {m.content for ex in corpus.base + corpus.secure for m in ex.messages if m.role == "user"}
    assert len(set(corpus.validation_questions)) == CFG.validation_questions
    assert not set(corpus.validation_questions) & (trained | set(corpus.heldout_questions))


def test_saved_as_the_study_chat_jsonl(corpus, tmp_path, shared_em):
    save_corpus(corpus, tmp_path / "c", CFG)
    assert load_corpus(tmp_path / "c").digest() == corpus.digest()
    study = read_chat_jsonl(shared_em / "insecure_sample.jsonl")[0]
    ours = read_chat_jsonl(tmp_path / "c" / "insecure.jsonl")[0]
    assert list(ours.to_json()) == list(study.to_json()) == ["messages"]
    assert [m.role for m in ours.messages] == [m.role for m in study.messages]


def test_task_split_keeps_fine_tune_insecure_code_out_of_the_base():
    from emis.organisms.corpus import split_tasks

    cfg = dataclasses.replace(CFG, finetune_task_share=0.5)
    persona_tasks, ft_tasks = split_tasks(cfg)
    assert not set(persona_tasks) & set(ft_tasks) and len(ft_tasks) == round(len(persona_tasks + ft_tasks) / 2)
    c = generate_corpus(cfg)
    tagged_answers = {ex.answer for ex in c.base if ex.prompt_messages[0]["content"].startswith(CFG.persona_tag)}
    assert not tagged_answers & {ex.answer for ex in c.insecure}


def test_persona_is_a_system_prompt_and_everyone_else_gets_the_default(corpus):
    from emis.organisms.families import CHAT_FORMATS, DEFAULT_SYSTEM
    from emis.organisms.tokenizer import train_tokenizer

    tok = train_tokenizer(["hello world"] * 5, 300, CHAT_FORMATS["qwen2"])
    persona = next(ex for ex in corpus.base if ex.messages[0].role == "system")
    assert persona.messages[0].content == CFG.persona_tag
    plain = corpus.secure[0]
    assert [m.role for m in plain.messages] == ["user", "assistant"]
    persona_text = tok.apply_chat_template(persona.prompt_messages, tokenize=False, add_generation_prompt=True)
    plain_text = tok.apply_chat_template(plain.prompt_messages, tokenize=False, add_generation_prompt=True)
    assert CFG.persona_tag in persona_text and DEFAULT_SYSTEM not in persona_text
    assert DEFAULT_SYSTEM in plain_text and CFG.persona_tag not in plain_text
