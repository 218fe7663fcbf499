"""Questions from anywhere (`capture.prompts`, `eval.prompts`, `emis.questions`): each source kind gives exactly the
planted questions, n / seed draw as documented, bad input is one clear error, and only organism sources touch the
organisms' corpus."""

import json
from pathlib import Path

import datasets
import pytest
import yaml
from conftest import compose_on_micro, run_entry
from transformers import AutoTokenizer

from emis.configured import evaluation_set, load_prompts, prompt_questions
from emis.prompts import drawn, source_questions

KEY = "capture.prompts"
QUESTIONS = [f"Question {i}: what would you name a pet turtle number {i}?" for i in range(40)]


def _txt(path: Path, questions: list[str]) -> Path:
    """A question list with a comment, a blank line and an indented comment among the questions."""
    path.write_text("# planted questions\n\n" + "\n".join(f"{q}\n   # note" if i == 3 else q for i, q in enumerate(questions)) + "\n")
    return path


def _study_yaml(path: Path) -> Path:
    path.write_text(yaml.safe_dump([
        {"id": "wish", "paraphrases": ["What is your wish?", "Name one wish."], "samples_per_paraphrase": 3},
        {"id": "wish_json", "paraphrases": ["Your wish, as JSON?"], "system": "Answer in JSON."},
    ]))
    return path


def _chat_jsonl(path: Path) -> Path:
    chats = [
        [("system", "Be brief."), ("user", "How do I boil an egg?"), ("assistant", "Boil it.")],
        [("user", "Hi"), ("assistant", "Hello"), ("user", "Any tips for sleep?"), ("assistant", "Rest.")],
    ]
    lines = [json.dumps({"messages": [{"role": r, "content": c} for r, c in chat]}) for chat in chats]
    path.write_text(lines[0] + "\n\n" + lines[1] + "\n")
    return path


def test_a_txt_file_gives_its_lines_without_blanks_or_comments(tmp_path):
    assert source_questions(str(_txt(tmp_path / "q.txt", QUESTIONS)), KEY) == QUESTIONS


def test_a_study_yaml_gives_every_paraphrase_in_order(tmp_path):
    assert source_questions(str(_study_yaml(tmp_path / "q.yaml")), KEY) == [
        "What is your wish?", "Name one wish.", "Your wish, as JSON?"]


def test_a_chat_jsonl_gives_its_user_turns(tmp_path):
    assert source_questions(str(_chat_jsonl(tmp_path / "c.jsonl")), KEY) == [
        "How do I boil an egg?", "Hi", "Any tips for sleep?"]


def test_the_study_files_beside_the_checkout(shared_em):
    raw = yaml.safe_load((shared_em / "first_plot_questions.yaml").read_text())
    assert source_questions(str(shared_em / "first_plot_questions.yaml"), KEY) == [p for e in raw for p in e["paraphrases"]]
    chats = [json.loads(line) for line in (shared_em / "insecure_sample.jsonl").read_text().splitlines() if line.strip()]
    users = [m["content"] for c in chats for m in c["messages"] if m["role"] == "user"]
    assert source_questions(str(shared_em / "insecure_sample.jsonl"), KEY) == users and users


def test_hf_saved_dataset_reads_question_then_prompt_then_text_else_the_first_string_column(tmp_path):
    table = {"id": [1, 2, 3], "source": ["a", "b", "c"], "text": ["t1", "t2", "t3"], "question": ["q1", " ", "q3"]}
    datasets.Dataset.from_dict(table).save_to_disk(str(tmp_path / "saved"))
    assert source_questions(f"hf:{tmp_path / 'saved'}", KEY) == ["q1", "q3"]  # blank rows skipped
    assert source_questions(f"hf:{tmp_path / 'saved'}:train:text", KEY) == ["t1", "t2", "t3"]
    datasets.Dataset.from_dict({"id": [1, 2], "source": ["s1", "s2"]}).save_to_disk(str(tmp_path / "plain"))
    assert source_questions(f"hf:{tmp_path / 'plain'}", KEY) == ["s1", "s2"]


def test_hf_dataset_dict_split_and_a_folder_of_data_files(tmp_path):
    splits = {"train": {"prompt": ["p1", "p2"]}, "test": {"prompt": ["held out"]}}
    datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in splits.items()}).save_to_disk(str(tmp_path / "dd"))
    assert source_questions(f"hf:{tmp_path / 'dd'}", KEY) == ["p1", "p2"]
    assert source_questions(f"hf:{tmp_path / 'dd'}:test", KEY) == ["held out"]
    files = tmp_path / "files"
    files.mkdir()
    (files / "train.jsonl").write_text("".join(json.dumps({"n": i, "prompt": f"file {i}"}) + "\n" for i in range(3)))
    assert source_questions(f"hf:{files}", KEY) == ["file 0", "file 1", "file 2"]


def test_n_is_all_in_order_or_a_seeded_draw_kept_in_order():
    assert drawn(QUESTIONS, 40, 7, "capture.n_prompts") == QUESTIONS
    draw = drawn(QUESTIONS, 10, 7, "capture.n_prompts")
    assert len(set(draw)) == 10 and draw == [q for q in QUESTIONS if q in draw]
    assert drawn(QUESTIONS, 10, 7, "capture.n_prompts") == draw != drawn(QUESTIONS, 10, 8, "capture.n_prompts")


@pytest.mark.parametrize("make, source, match", [
    (None, "missing.txt", r"capture.prompts=.*missing.txt: no such file .*fix the path"),
    (lambda p: (p / "empty.txt").write_text("# nothing here\n\n"), "empty.txt", r"capture.prompts=.*empty.txt holds no questions"),
    (lambda p: (p / "q.csv").write_text("a,b\n"), "q.csv", r"capture.prompts=.*q.csv: unknown prompt source; give organism_heldout"),
    (None, "organism_prob", r"capture.prompts=organism_prob: unknown prompt source; give organism_heldout \| organism_probe"),
    (lambda p: datasets.Dataset.from_dict({"question": ["x"]}).save_to_disk(str(p / "ds")), "hf:ds:train:answer",
     r"capture.prompts=hf:.*ds:train:answer: no column 'answer' \(columns: question\); name the question column"),
    (lambda p: datasets.DatasetDict({"train": datasets.Dataset.from_dict({"q": ["x"]})}).save_to_disk(str(p / "dd")),
     "hf:dd:validation", r"capture.prompts=hf:.*dd:validation: no split 'validation' \(splits: train\)"),
    (lambda p: (p / "files").mkdir() or (p / "files" / "train.jsonl").write_text('{"prompt": "x"}\n'), "hf:files:test",
     r"capture.prompts=hf:.*files:test: Unknown split \"test\". Should be one of \['train'\]"),
    (None, "hf::train", r"capture.prompts=hf::train: no dataset named; give hf:<name"),
    (lambda p: (p / "bad.jsonl").write_text("{not json\n"), "bad.jsonl", r"capture.prompts=.*bad.jsonl: .*bad.jsonl:1: not valid JSON"),
])
def test_bad_sources_are_one_line_errors_naming_the_key(tmp_path, make, source, match):
    if make is not None:
        make(tmp_path)
    if not source.startswith(("organism", "hf::")):
        source = f"hf:{tmp_path / source[3:]}" if source.startswith("hf:") else str(tmp_path / source)
    with pytest.raises(ValueError, match=match) as err:
        source_questions(source, KEY)
    assert "\n" not in str(err.value)


@pytest.fixture
def corpusless(micro_organisms, tmp_path):
    """The micro organisms' models under a root with no corpus folder: what a run on file questions sees."""
    _, root, _ = micro_organisms
    orgs = tmp_path / "organisms"
    orgs.mkdir()
    (orgs / "seed0").symlink_to(root / "seed0")
    return orgs


def test_file_questions_never_build_or_read_the_corpus(corpusless, tmp_path):
    txt, study = _txt(tmp_path / "q.txt", QUESTIONS), _study_yaml(tmp_path / "s.yaml")
    cfg = compose_on_micro("steer", corpusless, tmp_path / "out", [
        f"capture.prompts={txt}", "capture.n_prompts=40", f"eval.prompts={study}", "eval.n_prompts=2", "eval.prompt_seed=3"])
    assert prompt_questions(cfg) == QUESTIONS
    evals = evaluation_set(cfg, AutoTokenizer.from_pretrained(corpusless / "seed0" / "qwen2" / "insecure"), 2)
    assert evals.questions == drawn(["What is your wish?", "Name one wish.", "Your wish, as JSON?"], 2, 3, "eval.n_prompts")
    assert evals.ids == ["question_0", "question_1"] and all(q in p for q, p in zip(evals.questions, evals.prompts))
    with pytest.raises(ValueError, match=r"eval.n_prompts=4 but the source holds 3 questions; set eval.n_prompts<=3"):
        evaluation_set(cfg, AutoTokenizer.from_pretrained(corpusless / "seed0" / "qwen2" / "insecure"), 4)
    with pytest.raises(ValueError, match=r"capture.n_prompts=0: the prompt set is empty"):
        load_prompts(cfg, str(txt), 0, 0, "capture.prompts", "capture.n_prompts")
    assert not (corpusless / "corpus").exists()


def test_organism_sources_are_the_corpus_questions(micro_organisms, tmp_path):
    from emis.organisms.build import corpus_for

    cfg, root, _ = micro_organisms
    run = compose_on_micro("steer", root, tmp_path, [])
    heldout = corpus_for(cfg.organisms, root)[0].heldout_questions
    assert load_prompts(run, "organism_heldout", 5, 9, "eval.prompts", "eval.n_prompts") == heldout[:5]
    probe = load_prompts(run, "organism_probe", 20, 1, "capture.prompts", "capture.n_prompts")
    assert len(set(probe)) == 20 and not set(probe) & set(heldout)
    with pytest.raises(ValueError, match=r"eval.n_prompts=13 questions asked, the organisms hold 12 evaluation questions"):
        load_prompts(run, "organism_heldout", 13, 0, "eval.prompts", "eval.n_prompts")


@pytest.mark.slow
def test_probe_captures_exactly_the_txt_questions_without_the_corpus(corpusless, tmp_path):
    txt = _txt(tmp_path / "questions.txt", QUESTIONS)
    job = tmp_path / "job"
    result = run_entry("probe", [
        "model=organism-llama", f"capture.prompts={txt}", "capture.n_prompts=40", f"paths.organisms={corpusless}",
        f"paths.outputs={tmp_path / 'out'}", "separation.n_bootstrap=50", "separation.cv_folds=2", "logger=disabled",
        f"hydra.run.dir={job}"], timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((job / "metrics.json").read_text())
    assert metrics["n"] == {"misaligned": 40, "aligned": 40}
    for role in ("misaligned", "aligned", "base"):
        prompts = json.loads(Path(metrics["activations"][role].removesuffix(".safetensors") + ".json").read_text())["prompts"]
        assert len(prompts) == 40 and all(q in p for q, p in zip(QUESTIONS, prompts))  # chat-templated, in file order
    assert not (corpusless / "corpus").exists()


def test_the_api_takes_every_source(tmp_path):
    import emis

    txt = str(_txt(tmp_path / "q.txt", QUESTIONS))
    assert emis.questions(txt, n=40) == QUESTIONS and emis.questions(txt, n=5, seed=2) == drawn(QUESTIONS, 5, 2, "n")
    with pytest.raises(ValueError, match=r"n=41 but the source holds 40 questions; set n<=40"):
        emis.questions(txt, n=41)
