"""Zero-shot through lm-eval: task names, local data overrides, the in-memory model, the pydoc task."""

import math

import pytest

from fq_core.errors import ConfigError, DataError
from fq_core.models import load_model
from fq_eval.local_tasks import N_CHOICES, chance, cloze_items, with_choices
from fq_eval.zero_shot import PAPER_TASKS, parse_tasks, run_zero_shot


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir)


def test_task_names_expand_aliases_in_order():
    assert parse_tasks("paper") == list(PAPER_TASKS)
    assert parse_tasks("ARC-e, lambada,arc_easy,local") == [
        "arc_easy",
        "lambada_openai",
        "pydoc_lastword",
        "pydoc_lastword_mc",
    ]
    with pytest.raises(ConfigError, match="names no task"):
        parse_tasks(" , ")


def test_unknown_task_group_and_missing_data_are_one_line_errors(tiny, tmp_path):
    model, tokenizer = tiny
    with pytest.raises(ConfigError, match="unknown zero-shot task 'arc_easyy'"):
        run_zero_shot(model, tokenizer, ["arc_easyy"])
    with pytest.raises(ConfigError, match="is an lm-eval group"):
        run_zero_shot(model, tokenizer, ["mmlu"])
    with pytest.raises(DataError, match=r"needs a local copy of the dataset repo allenai/ai2_arc") as info:
        run_zero_shot(model, tokenizer, ["arc_easy"], data_dir=tmp_path)
    assert str(tmp_path / "allenai" / "ai2_arc") in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DataError, match="does not exist"):
        run_zero_shot(model, tokenizer, ["piqa"], paths={"piqa": tmp_path / "nope"})


def test_lm_eval_task_runs_on_a_local_copy_of_its_data(tiny, arc_data_dir):
    """lm-eval's own arc_easy YAML, its dataset_path overridden to our local copy (6 test rows)."""
    model, tokenizer = tiny
    calls = []
    hook = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        (row,) = run_zero_shot(model, tokenizer, ["arc_easy"], batch_size=4, data_dir=arc_data_dir)
    finally:
        hook.remove()
    assert calls, "the in-memory model object was not the one evaluated"
    assert (row["task"], row["metric"], row["n"], row["n_total"]) == ("arc_easy", "acc_norm", 6, 6)
    assert 0 <= row["acc"] <= 1 and 0 <= row["acc_norm"] <= 1
    assert row["accuracy"] == row["acc_norm"]
    assert row["acc"] * 6 == pytest.approx(round(row["acc"] * 6))  # a fraction of the 6 local items


def test_the_same_task_through_data_path_and_limit(tiny, arc_data_dir):
    model, tokenizer = tiny
    paths = {"arc_easy": arc_data_dir / "allenai" / "ai2_arc"}
    (row,) = run_zero_shot(model, tokenizer, ["arc-e"], limit=2, paths=paths)
    assert (row["n"], row["n_total"]) == (2, 6)


def test_cloze_items_come_from_paragraph_text_and_choices_hold_the_answer():
    text = "A short one.\n\nThe value of the list is given to the function as its first argument.\n\nx = 1"
    assert cloze_items(text) == [
        {"context": "The value of the list is given to the function as its first", "target": "argument"}
    ]
    items = cloze_items()
    assert len(items) >= 100
    assert all(len(item["context"].split()) >= 8 and item["target"].isalpha() for item in items)
    mc = with_choices(items)
    assert mc == with_choices(items)  # seeded
    for item in mc:
        assert len(set(item["choices"])) == N_CHOICES and item["choices"][item["label"]] == item["target"]


@pytest.mark.slow
def test_pydoc_tasks_score_the_fp_embedded_model_above_chance():
    model, tokenizer = load_model("default")
    rows = {row["task"]: row for row in run_zero_shot(model, tokenizer, ["local"], batch_size=16)}
    mc, cloze = rows["pydoc_lastword_mc"], rows["pydoc_lastword"]
    n = mc["n"]
    # 4-way choice: more than 4 standard deviations above guessing.
    assert mc["acc"] > chance("pydoc_lastword_mc") + 4 * math.sqrt(0.25 * 0.75 / n)
    # Open cloze: far above guessing uniformly among the task's own answer words.
    n_words = len({item["target"] for item in cloze_items()})
    assert cloze["acc"] > 5 / n_words
