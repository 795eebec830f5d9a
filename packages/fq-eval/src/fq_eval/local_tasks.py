"""Zero-shot tasks built from the embedded pydoc corpus, for machines without the benchmark sets.

The six paper tasks need local copies of their datasets; offline here there are none. These two
tasks go through exactly the same lm-eval path (HFLM on the in-memory model, `simple_evaluate`,
lm-eval's own metrics), on cloze items cut from the corpus's tail (the region whose perplexity
the pydoc protocol measures and calibration never sees):

- `pydoc_lastword`: LAMBADA-style. Context = a paragraph up to a sentence's last word, target = that
  word; scored like `lambada_openai` (loglikelihood; acc = the word is the greedy continuation).
- `pydoc_lastword_mc`: the same items as 4-way multiple choice (the true word and three other
  items' words, drawn with a fixed seed), scored like ARC/PIQA (acc, acc_norm): chance is 25%.
"""

from __future__ import annotations

import random
import re
from typing import Any

from fq_core.data import pydoc_text

TAIL_CHARS = 34_000
"""About the last 16 x 512 SmolLM2 tokens of the corpus (4.1 characters per token)."""
MIN_CONTEXT_WORDS = 8
N_CHOICES = 4
SEED = 0
LOCAL_TASKS = ("pydoc_lastword", "pydoc_lastword_mc")

# A lower-case word of 3+ letters that ends a sentence or clause, after a plain word or quote.
_LAST_WORD = re.compile(r"(?<=[a-z,;)\"] )([a-z]{3,})[.;:](?=\s|$)")


def cloze_items(text: str | None = None) -> list[dict[str, str]]:
    """[{"context", "target"}] in corpus order: every qualifying sentence end of the tail's paragraphs."""
    text = pydoc_text()[-TAIL_CHARS:] if text is None else text
    items = []
    for paragraph in text.split("\n\n"):
        flat = " ".join(paragraph.split())
        for match in _LAST_WORD.finditer(flat):
            context = flat[: match.start()].rstrip()
            if len(context.split()) >= MIN_CONTEXT_WORDS:
                items.append({"context": context, "target": match.group(1)})
    return items


def with_choices(items: list[dict[str, str]], seed: int = SEED) -> list[dict[str, Any]]:
    """Each item plus `choices` (its word and N_CHOICES-1 other words of the pool) and `label`."""
    rng = random.Random(seed)
    pool = sorted({item["target"] for item in items})
    out = []
    for item in items:
        others = rng.sample([w for w in pool if w != item["target"]], N_CHOICES - 1)
        label = rng.randrange(N_CHOICES)
        choices = [*others[:label], item["target"], *others[label:]]
        out.append({**item, "choices": choices, "label": label})
    return out


def _dataset(**_: Any) -> Any:
    """lm-eval's `custom_dataset` hook: the items as a DatasetDict with one test split."""
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(with_choices(cloze_items()))})


def task_config(name: str) -> dict[str, Any]:
    """The lm-eval task config (inline, no YAML) of a local task."""
    common = {
        "task": name,
        "custom_dataset": _dataset,
        "test_split": "test",
        "doc_to_text": "{{context}}",
        "metadata": {"version": 1.0},
    }
    if name == "pydoc_lastword":
        return {
            **common,
            "output_type": "loglikelihood",
            "doc_to_target": "{{' ' + target}}",
            "metric_list": [
                {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            ],
        }
    if name == "pydoc_lastword_mc":
        return {
            **common,
            "output_type": "multiple_choice",
            "doc_to_target": "{{label}}",
            "doc_to_choice": "{{choices}}",
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            ],
        }
    raise KeyError(name)


def chance(name: str) -> float:
    """Accuracy of guessing: 1/N_CHOICES for the multiple-choice task, ~0 for the open cloze."""
    return 1.0 / N_CHOICES if name == "pydoc_lastword_mc" else 0.0
