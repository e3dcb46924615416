"""Reward functions: the paper's VADER reward by hand, VADER compound, toxicity, registry."""

import importlib.resources

import numpy as np
import pytest
import torch

from lfp_mech.errors import HubUnavailableError
from lfp_mech.rewards import (
    as_reward_fn,
    available_rewards,
    get_reward,
    toxicity_prob,
    toxicity_reward,
    vader_compound,
    vader_lexicon,
    vader_reward,
    word_valences,
    words,
)


@pytest.fixture(scope="module")
def raw_lexicon() -> dict[str, float]:
    """The lexicon file parsed independently of lfp_mech (exact tokens, first column/second)."""
    text = (
        importlib.resources.files("vaderSentiment")
        .joinpath("vader_lexicon.txt")
        .read_text(encoding="utf-8")
    )
    out = {}
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) > 1:
            out[cols[0]] = float(cols[1])
    return out


def test_lexicon_values_from_the_file(raw_lexicon: dict[str, float]) -> None:
    assert raw_lexicon["good"] == 1.9 and raw_lexicon["bad"] == -2.5
    lex = vader_lexicon()
    assert len(lex) > 7000
    for word in ("good", "bad", "excellent", "like", "terrible", ":)", "lol"):
        assert lex[word] == raw_lexicon[word]
    assert lex[":p"] == raw_lexicon[":p"]  # lower-case entry wins over ":P"
    assert vader_lexicon() is lex  # cached


def test_vader_reward_by_hand(raw_lexicon: dict[str, float]) -> None:
    sentence = "The acting was good but the ending was bad."
    for word in ("the", "acting", "was", "but", "ending"):
        assert word not in raw_lexicon
    expected = (raw_lexicon["good"] + raw_lexicon["bad"]) / 5
    three = "An excellent, good film with a terrible ending"
    expected3 = (raw_lexicon["excellent"] + raw_lexicon["good"] + raw_lexicon["terrible"]) / 5
    got = vader_reward([sentence, three])
    assert got.dtype == torch.float32 and got.shape == (2,)
    assert got[0].item() == pytest.approx(expected, abs=1e-6)
    assert got[1].item() == pytest.approx(expected3, abs=1e-6)


def test_vader_reward_clips_at_ten() -> None:
    got = vader_reward(["excellent " * 40, "terrible " * 40, "excellent " * 18])
    assert got.tolist()[:2] == [10.0, -10.0]
    assert got[2].item() == pytest.approx(18 * 2.7 / 5)  # 9.72: not clipped


def test_vader_reward_case_punctuation_unknown_empty() -> None:
    got = vader_reward(["GOOD!", "good", "(Good),", "quantum tractor", "", "   "])
    assert got[0] == got[1] == got[2]
    assert got[1].item() == pytest.approx(1.9 / 5)
    assert got[3:].tolist() == [0.0, 0.0, 0.0]
    assert vader_reward([]).shape == (0,)


def test_word_tokenizer_rule() -> None:
    assert words("Don't LIKE it!") == ["don't", "like", "it"]
    assert words("well-made good/bad") == ["well", "made", "good", "bad"]
    assert words("so :) nice") == ["so", ":)", "nice"]  # an emoticon token is kept whole
    assert words("“Great” film’s") == ["great", "film's"]
    pairs = word_valences("a good :( day")
    assert pairs == [("a", 0.0), ("good", 1.9), (":(", vader_lexicon()[":("]), ("day", 0.0)]


def test_vader_compound_signs() -> None:
    got = vader_compound(["I love this wonderful movie.", "I hate this awful movie.", "A table."])
    assert got.dtype == torch.float32
    assert got[0] > 0.5 and got[1] < -0.5 and got[2] == 0.0


def test_toxicity_insult_scores_lower_than_polite() -> None:
    texts = [
        "You are a pathetic idiot and everyone hates you, shut up.",
        "Thank you for the thoughtful reply, I learned something today.",
    ]
    for backend in ("auto", "profanity_check"):
        reward = toxicity_reward(texts, backend=backend)
        assert reward[0] < reward[1]
        assert ((reward >= -1) & (reward <= 1)).all()
    p = toxicity_prob(texts, backend="profanity_check")
    assert torch.allclose(toxicity_reward(texts, backend="profanity_check"), 1 - 2 * p)
    assert toxicity_prob([], backend="profanity_check").shape == (0,)


def test_roberta_backend_offline_names_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("lfp_mech.rewards._roberta_cached", lambda: False)
    with pytest.raises(HubUnavailableError, match="profanity_check"):
        toxicity_reward(["hello"], backend="roberta")


def test_toxicity_classifier_runs_on_the_stage_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import BatchEncoding

    seen: dict[str, object] = {}

    class Classifier(torch.nn.Module):
        config = type("Config", (), {"label2id": {"neutral": 0, "toxic": 1}})()

        def forward(self, input_ids: torch.Tensor) -> object:
            seen["device"] = input_ids.device
            logits = torch.tensor([[0.0, 1.0]] * input_ids.shape[0])  # meta holds no values
            return type("Output", (), {"logits": logits})()

    def tokenizer(texts: list[str], **_: object) -> BatchEncoding:
        return BatchEncoding({"input_ids": torch.ones(len(texts), 3, dtype=torch.long)})

    def classifier(device: str = "cpu") -> tuple[object, object]:
        seen["loaded_on"] = device
        return tokenizer, Classifier()

    monkeypatch.setattr("lfp_mech.rewards._roberta_classifier", classifier)
    monkeypatch.setattr("lfp_mech.rewards._resolve_backend", lambda backend: "roberta")
    reward = get_reward("toxicity", device="meta")
    got = reward(["one", "two"])
    assert seen == {"loaded_on": "meta", "device": torch.device("meta")}
    p_toxic = torch.tensor([0.0, 1.0]).softmax(-1)[1]
    assert got.device.type == "cpu" and torch.allclose(got, (1 - 2 * p_toxic).expand(2))
    assert get_reward("toxicity") is toxicity_reward  # the CPU default: the function itself


def test_registry() -> None:
    assert available_rewards() == ["toxicity", "vader", "vader_compound"]
    assert get_reward("vader") is vader_reward
    assert get_reward("vader")(["good"]).shape == (1,)
    with pytest.raises(ValueError, match="vader_compound"):
        get_reward("sentiment")


def test_as_reward_fn() -> None:
    from_list = as_reward_fn(lambda texts: [len(t) for t in texts])
    got = from_list(["ab", "abc"])
    assert got.dtype == torch.float32 and got.tolist() == [2.0, 3.0]
    from_array = as_reward_fn(lambda texts: np.ones((len(texts), 1)))
    assert from_array(["a", "b"]).shape == (2,)
    from_tensor = as_reward_fn(lambda texts: torch.zeros(len(texts), dtype=torch.float64))
    assert from_tensor(["a"]).dtype == torch.float32
    wrong = as_reward_fn(lambda texts: [0.0])
    with pytest.raises(ValueError, match="one score per text"):
        wrong(["a", "b"])
