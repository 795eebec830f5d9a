"""fq_eval.perplexity against hand-rolled computations of the reference's formula."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fq_core.errors import DataError
from fq_core.models.testing import tiny_model
from fq_eval.perplexity import perplexity, window_nlls

VOCAB, SEQLEN = 96, 16


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", vocab_size=VOCAB)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (5 * SEQLEN + 7,), generator=torch.Generator().manual_seed(1))


def by_hand(model, ids):
    """exp of the mean over whole windows of each window's mean NLL over its seqlen-1 predictions."""
    nlls = []
    with torch.no_grad():
        for start in range(0, ids.numel() - SEQLEN + 1, SEQLEN):
            window = ids[start : start + SEQLEN]
            logits = model(window[None]).logits[0]
            nlls.append(F.cross_entropy(logits[:-1], window[1:]).item())
    assert len(nlls) == 5
    return math.exp(sum(nlls) / len(nlls))


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_matches_the_hand_rolled_formula(model, ids, batch_size):
    assert perplexity(model, ids, SEQLEN, batch_size=batch_size) == pytest.approx(
        by_hand(model, ids), rel=1e-6
    )


def test_matches_the_reference_anchor_loss(model, ids):
    """The anchor averages transformers' `loss` (labels = inputs) over windows."""
    with torch.no_grad():
        losses = [model(w[None], labels=w[None]).loss.item() for w in ids[: 5 * SEQLEN].view(5, SEQLEN)]
    assert perplexity(model, ids[None], SEQLEN) == pytest.approx(math.exp(sum(losses) / 5), rel=1e-6)


def test_remainder_is_dropped(model, ids):
    assert torch.equal(window_nlls(model, ids, SEQLEN), window_nlls(model, ids[: 5 * SEQLEN], SEQLEN))
    assert window_nlls(model, ids, SEQLEN).shape == (5,)


class Uniform(nn.Module):
    """Predicts the same logit for every token: every NLL is log(vocab)."""

    def forward(self, input_ids, use_cache=False):
        return SimpleNamespace(logits=torch.full((*input_ids.shape, VOCAB), 3.0))


def test_uniform_predictions_give_the_vocab_size(ids):
    assert perplexity(Uniform(), ids, SEQLEN) == pytest.approx(VOCAB, rel=1e-6)


def test_fewer_tokens_than_a_window_is_a_data_error(model):
    with pytest.raises(DataError, match="fewer than one window"):
        perplexity(model, torch.zeros(SEQLEN - 1, dtype=torch.long), SEQLEN)
