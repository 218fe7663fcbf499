"""Evaluation input and the LLM judge inside the steering stage.

The steering entry point runs on a micro organism with the study's question file served by URL from a loopback
server and an LLM judge on another loopback server; coherence, the chosen α, the generations table and the
W&B table must all follow from the scores the server gave, recomputed here from the answers."""

import json
import logging
import re

import numpy as np
import pytest
from conftest import compose_on_micro, micro_steer_overrides, run_entry
from loopback import completion, serve, text_completion
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from wandb_reader import offline_runs, read_offline_run

from emis.configured import evaluation_set
from emis.evaluation import EvalSet, templated
from emis.judges.spillover import contains_code
from emis.organisms.build import corpus_for, eval_sets
from emis.prompts import load_question_yaml, plain_questions

KEY_ENV = "EMIS_TEST_JUDGE_KEY"
ANSWER = re.compile(r"\[ANSWER START\]\n(.*)\n\[ANSWER END\]", re.S)


def coherent_score(answer: str) -> int:
    """The fake judge's coherence for an answer: any deterministic function of the text will do."""
    return 40 + len(answer) % 57


def judge_reply(body):
    """`coherent` prompts get coherent_score(answer); `aligned` prompts CODE (0.6) over 30 (0.4), so score 30."""
    prompt = body["messages"][0]["content"]
    answer = ANSWER.search(prompt)[1]
    if "how coherent" in prompt:
        return completion([(str(coherent_score(answer)), 1.0)])
    return completion([("CODE", 0.6), ("30", 0.4)])


def parsed_judge_reply(body):
    """The same judge on a server without logprobs: `coherent` replies coherent_score(answer), `aligned` CODE."""
    prompt = body["messages"][0]["content"]
    return text_completion(str(coherent_score(ANSWER.search(prompt)[1])) if "how coherent" in prompt else "CODE")


def test_unit_means_average_rows_of_each_question():
    evals = EvalSet(["a", "b", "c", "d", "e"], np.array([0, 0, 1, 2, 2]), ["q0", "q1", "q2"], ["0", "1", "2"], [{}] * 3)
    assert evals.unit_means([1, 0, 1, 0, 0]).tolist() == [0.5, 1.0, 0.0]


def test_question_file_gives_every_paraphrase_its_samples_and_system_prompt(micro_organisms, shared_em, tmp_path):
    _, root, _ = micro_organisms
    path = shared_em / "first_plot_questions.yaml"
    cfg = compose_on_micro("steer", root, tmp_path, [f"eval.questions={path}", "eval.samples_per_paraphrase=3"])
    tok = AutoTokenizer.from_pretrained(root / "seed0" / "qwen2" / "insecure")
    evals = evaluation_set(cfg, tok, 5)
    questions = load_question_yaml(path)
    assert len(evals.questions) == sum(len(q.paraphrases) for q in questions) == 24
    assert len(evals.prompts) == 3 * 24 and np.bincount(evals.units).tolist() == [3] * 24
    for q, text, ids, judges in zip(questions, evals.questions, evals.ids, evals.judge_prompts):
        assert (q.paraphrases[0], q.id, q.judge_prompts) == (text, ids, judges)
    for row, unit in enumerate(evals.units):
        q = questions[unit]
        assert q.paraphrases[0] in evals.prompts[row]
        assert (q.system or "") in evals.prompts[row]
    assert sum(q.system is not None for q in questions) == 8


def test_a_template_without_system_role_gets_the_system_prompt_in_the_user_turn(micro_organisms):
    _, root, _ = micro_organisms
    tok = AutoTokenizer.from_pretrained(root / "seed0" / "gemma2" / "insecure")
    plain = templated(tok, "Hi?", None)
    tok.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
                         + tok.chat_template)
    assert templated(tok, "Hi?", None) == plain
    folded = templated(tok, "Hi?", "Answer in JSON.")
    assert folded == templated(tok, "Answer in JSON.\n\nHi?", None)


def test_organism_questions_take_judge_prompts_from_the_configured_file(micro_organisms, shared_em, tmp_path):
    _, root, _ = micro_organisms
    path = shared_em / "first_plot_questions.yaml"
    cfg = compose_on_micro("steer", root, tmp_path, ["judge=openai-compatible", f"judge.prompts_from={path}"])
    evals = evaluation_set(cfg, AutoTokenizer.from_pretrained(root / "seed0" / "qwen2" / "insecure"), 4)
    assert evals.judge_prompts == [load_question_yaml(path)[0].judge_prompts] * 4
    none = evaluation_set(compose_on_micro("steer", root, tmp_path, []), AutoTokenizer.from_pretrained(root / "seed0" / "qwen2" / "insecure"), 4)
    assert none.judge_prompts == [{}] * 4


@pytest.mark.slow
@pytest.mark.parametrize("method", ["logprobs", "parsed"])
def test_steering_with_a_judge_on_study_questions_from_a_url(micro_organisms, em_files_server, tmp_path, monkeypatch, method):
    """logprobs: a keyed judge returning logprobs; parsed: a keyless loopback judge returning only text (auto falls
    back). Scores, α choice, generations.jsonl, metrics and the W&B table follow from the server's answers, and
    every judge column says how its score was read."""
    _, root, _ = micro_organisms
    url, gets = em_files_server
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", KEY_ENV):
        monkeypatch.delenv(var, raising=False)
    job = tmp_path / "job"
    with serve(judge_reply if method == "logprobs" else parsed_judge_reply) as judge:
        args = micro_steer_overrides(root, tmp_path / "outputs") + [
            f"eval.questions={url}/first_plot_questions.yaml", "eval.samples_per_paraphrase=1", "eval.sampling.max_new_tokens=6",
            "steer.alphas=[1.0,4.0]", "steer.layer=0", "steer.coherence_tolerance=0.05",
            "judge=openai-compatible", f"judge.base_url={judge.url}", "judge.model=judge-test", f"judge.api_key_env={KEY_ENV}",
            f"judge.prompts_from={url}/first_plot_questions.yaml", "judge.max_retries=0",
            "logger.mode=offline", f"hydra.run.dir={job}"]
        result = run_entry("steer", args, env={KEY_ENV: "sk-test-judge"} if method == "logprobs" else {})
        assert result.returncode == 0, result.stderr[-3000:]
        requests = list(judge.requests)
    assert gets == ["/first_plot_questions.yaml"]  # downloaded once, then read from the cache

    metrics = json.loads((job / "metrics.json").read_text())
    rows = [json.loads(line) for line in (job / "generations.jsonl").read_text().splitlines()]
    alphas = metrics["alphas"]
    assert alphas == [0.0, 1.0, 4.0] and metrics["coherence_source"] == "judge"
    assert metrics["n_prompts"] == 24 and len(rows) == 3 * 24
    coherence, select_coherence, select_spill = {}, {}, {}
    for a in alphas:
        at = [r for r in rows if r["alpha"] == a]
        assert [r["coherent"] for r in at] == [coherent_score(r["answer"]) for r in at]
        assert all(r["aligned"] == (pytest.approx(30.0) if method == "logprobs" else None) and r["aligned_label"] == "CODE"
                   for r in at)
        assert all(r["aligned_score_method"] == r["coherent_score_method"] == method for r in at)
        report = [r for r in at if r["split"] == "report"]
        chose = [r for r in at if r["split"] == "select"]
        coherence[a] = np.mean([coherent_score(r["answer"]) for r in report]) / 100
        select_coherence[a] = np.mean([coherent_score(r["answer"]) for r in chose]) / 100
        select_spill[a] = np.mean([contains_code(r["answer"]) for r in chose])
        assert metrics["coherence"][f"{a:g}"] == pytest.approx(coherence[a])
        assert metrics["judge"]["coherent"][f"{a:g}"] == pytest.approx(100 * coherence[a])
        assert metrics["spillover"][f"{a:g}"] == pytest.approx(np.mean([contains_code(r["answer"]) for r in report]))
    # α is chosen on the selection split's spillover and judge coherence
    allowed = [a for a in alphas if select_coherence[a] >= select_coherence[0.0] - 0.05]
    assert metrics["best"]["alpha"] == min(allowed, key=lambda a: (select_spill[a], a))
    assert metrics["judge"]["score_methods"] == {method: 2 * 3 * 24}
    # Every answer of the sweep judged once per judge prompt (identical answers are sent once); the parsed run's
    # few logprob requests are those in flight before the judge learnt the server returns none (8 at a time).
    asked = [r for r in requests if r["body"].get("logprobs", False) == (method == "logprobs")]
    judged = {(m["content"]) for r in asked for m in r["body"]["messages"]}
    assert len(asked) == len(judged) <= 2 * 3 * 24
    assert len(requests) - len(asked) in (range(0, 1) if method == "logprobs" else range(1, 9))
    assert all(("Authorization" in r["headers"]) == (method == "logprobs") for r in requests)

    (run_dir,) = offline_runs(job)
    table = read_offline_run(run_dir)["summary"]["generations"]
    logged = json.loads((run_dir / "files" / table["path"]).read_text())
    assert {"aligned", "coherent", "aligned_label", "coherent_label", "aligned_score_method", "coherent_score_method",
            "question_id"} <= set(logged["columns"])
    for name in ("coherent", "coherent_score_method"):
        col = logged["columns"].index(name)
        assert [r[col] for r in logged["data"]] == [r[name] for r in rows]


def test_organism_evaluation_without_the_study_file_warns_and_keeps_emis_questions(micro_organisms, shared_em, tmp_path, caplog):
    """The study's file lives beside the checkout, not in it: without it the organisms still evaluate, on emis's own."""
    cfg, root, _ = micro_organisms
    corpus, _ = corpus_for(cfg.organisms, root)
    full = eval_sets(cfg.organisms, corpus)
    missing = OmegaConf.merge(cfg.organisms, {"eval": {"ood_plain_yaml": str(tmp_path / "absent.yaml")}})
    with caplog.at_level(logging.WARNING, logger="emis.organisms.build"):
        reduced = eval_sets(missing, corpus)
    plain = plain_questions(shared_em / "first_plot_questions.yaml")
    assert len(plain) == 8 and full.ood_questions == reduced.ood_questions + plain
    assert "absent.yaml not found" in caplog.text
