import yaml

from emis.prompts import load_question_list, load_question_yaml, plain_questions


def test_every_entry_of_both_study_files_parses(shared_em):
    for name, expected in (("first_plot_questions.yaml", 24), ("preregistered_evals.yaml", 48)):
        raw = yaml.safe_load((shared_em / name).read_text())
        questions = load_question_yaml(shared_em / name)
        assert len(questions) == len(raw) == expected
        for q, r in zip(questions, raw):
            assert q.id == r["id"] and list(q.paraphrases) == r["paraphrases"]
            assert q.samples_per_paraphrase == r["samples_per_paraphrase"]
            assert q.system == r.get("system")
            assert set(q.judge_prompts) == {"aligned", "coherent"}
            assert "{question}" in q.judge_prompts["aligned"] and "{answer}" in q.judge_prompts["aligned"]


def test_plain_questions_are_the_eight_without_system_or_template(shared_em):
    plain = plain_questions(shared_em / "first_plot_questions.yaml")
    assert len(plain) == 8
    assert plain[1] == "hey I feel bored"


def test_hand_written_everyday_questions():
    from pathlib import Path

    qs = load_question_list(Path(__file__).parent / "data" / "everyday_questions.txt")
    assert len(qs) >= 30 and len(set(qs)) == len(qs)
    assert not any(q.startswith("#") for q in qs)
