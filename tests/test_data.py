"""Prompt sets, word pools, contrastive triples and char -> token spans (no model, no hub)."""

import re

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lfp_mech.data import (
    ContrastiveTriple,
    char_span_to_token_span,
    heldout_words,
    imdb_triples,
    lexicon_words,
    load_prompts,
    make_triples,
    prompt_sets,
    triple_templates,
    word_pool,
)
from lfp_mech.errors import HubUnavailableError
from lfp_mech.rewards import vader_lexicon, vader_reward, words

# --------------------------------------------------------------------------- prompt sets


@pytest.mark.parametrize(
    ("name", "min_train", "min_test"), [("reviews", 450, 256), ("toxicity", 300, 100)]
)
def test_offline_prompt_sets_sizes_unique_disjoint(
    name: str, min_train: int, min_test: int
) -> None:
    train, test = load_prompts(name, "train"), load_prompts(name, "test")
    assert len(train) >= min_train and len(test) >= min_test
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert not {p.lower() for p in train} & {p.lower() for p in test}
    assert all(p == p.strip() and p for p in train + test)


def test_review_prompts_neutral_and_short() -> None:
    prompts = load_prompts("reviews", "train") + load_prompts("reviews", "test")
    assert len(prompts) >= 600
    lex = vader_lexicon()
    for p in prompts:
        assert 2 <= len(p.split()) <= 10, p
        tokens = set(words(p)) | {t.lower().strip(".,;:!?\"'()") for t in p.split()}
        assert not tokens & lex.keys(), (p, tokens & lex.keys())
    assert vader_reward(prompts).abs().max().item() == 0.0
    assert len({p.split()[0] for p in prompts}) >= 20  # varied openings


def test_prompt_subsample_deterministic() -> None:
    a = load_prompts("reviews", "test", n=50, seed=3)
    assert a == load_prompts("reviews", "test", n=50, seed=3)
    assert a != load_prompts("reviews", "test", n=50, seed=4)
    assert len(set(a)) == 50 and set(a) <= set(load_prompts("reviews", "test"))
    with pytest.raises(ValueError, match="n=100000"):
        load_prompts("toxicity", "test", n=100_000)


def test_unknown_prompt_set() -> None:
    with pytest.raises(ValueError, match="reviews, toxicity, imdb, jigsaw"):
        load_prompts("sst2", "train")
    assert prompt_sets() == ["reviews", "toxicity", "imdb", "jigsaw"]


@pytest.mark.parametrize(("name", "alternative"), [("imdb", "reviews"), ("jigsaw", "toxicity")])
def test_hub_prompt_sets_offline_error(
    monkeypatch: pytest.MonkeyPatch, name: str, alternative: str
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match=f"unavailable offline.*'{alternative}'"):
        load_prompts(name, "train", n=10)


def test_imdb_triples_offline_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="make_triples"):
        imdb_triples(10)


# --------------------------------------------------------------------------- word pools, templates


def test_word_pools_against_lexicon() -> None:
    lex = vader_lexicon()
    pos, neg, neu = word_pool("positive"), word_pool("negative"), word_pool("neutral")
    assert len(pos) >= 120 and len(neg) >= 120 and len(neu) >= 60
    for pool in (pos, neg, neu):
        assert len(set(pool)) == len(pool)
        assert all(re.fullmatch(r"[a-z]+", w) for w in pool)
    assert all(lex.get(w, 0.0) >= 1.0 for w in pos)
    assert all(lex.get(w, 0.0) <= -1.0 for w in neg)
    assert all(w not in lex for w in neu)


def test_lexicon_words() -> None:
    lex = vader_lexicon()
    pos, neg = lexicon_words("positive", 1.0), lexicon_words("negative")
    assert "good" in pos and "bad" in neg and ":)" not in pos
    assert all(lex[w] >= 1.0 for w in pos) and all(lex[w] < 0 for w in neg)
    assert sorted(lexicon_words("all")) == sorted(lexicon_words("positive") + neg)


def test_templates_one_adjective_slot_no_lexicon_words() -> None:
    templates = triple_templates()
    assert len(templates) >= 150 and len(set(templates)) == len(templates)
    lex = vader_lexicon()
    for t in templates:
        assert t.count("{}") == 1 and not t.startswith("{}"), t
        assert not set(words(t.replace("{}", " "))) & lex.keys(), t


# --------------------------------------------------------------------------- triples


def test_triples_deterministic_and_distinct() -> None:
    a = make_triples(300, seed=1)
    assert a == make_triples(300, seed=1)
    assert a != make_triples(300, seed=2)
    assert len(a) == 300
    assert len({(t.template_id, t.words) for t in a}) == 300


def test_triple_spans_words_and_valences() -> None:
    lex = vader_lexicon()
    templates = triple_templates()
    for t in make_triples(200, seed=0, split="all"):
        for text, (s, e), word in zip(t.texts, t.spans, t.words, strict=True):
            assert text[s:e] == word
            assert text == templates[t.template_id].replace("{}", word)
        p, u, n = t.valences
        assert p >= 1.0 and u == 0.0 and n <= -1.0
        assert (p, n) == (lex[t.words[0]], lex[t.words[2]])
        # the three variants differ only in the slot
        s = t.span_positive[0]
        assert t.positive[:s] == t.neutral[:s] == t.negative[:s]


def test_heldout_words_never_cross_splits() -> None:
    train_words, test_words = heldout_words(seed=0, heldout_fraction=0.25)
    assert not train_words & test_words
    assert train_words | test_words == set(word_pool("positive")) | set(word_pool("negative"))
    n_pos = len(word_pool("positive"))
    assert len(test_words & set(word_pool("positive"))) == round(0.25 * n_pos)
    assert heldout_words(seed=1)[1] != test_words
    train = make_triples(1000, seed=0, split="train")
    test = make_triples(500, seed=0, split="test")
    train_used = {w for t in train for w in (t.words[0], t.words[2])}
    test_used = {w for t in test for w in (t.words[0], t.words[2])}
    assert train_used <= train_words and test_used <= test_words
    assert not train_used & test_used
    assert len(test_used) == len(test_words)  # balanced decks use every held-out word


def test_triple_rejects_wrong_span() -> None:
    with pytest.raises(ValueError, match="is not the word"):
        ContrastiveTriple(
            positive="a good b",
            neutral="a blue b",
            negative="a bad b",
            span_positive=(2, 6),
            span_neutral=(2, 6),
            span_negative=(2, 6),
            words=("good", "blue", "bad"),
            valences=(1.9, 0.0, -2.5),
            template_id=0,
        )


def test_make_triples_rejects_bad_fraction() -> None:
    with pytest.raises(ValueError, match="heldout_fraction"):
        make_triples(10, heldout_fraction=1.0)
    with pytest.raises(ValueError, match="no positive or negative words"):
        make_triples(10, heldout_fraction=0.0, split="test")


# --------------------------------------------------------------------------- char -> token spans


def _corpus() -> list[str]:
    return [t.replace("{}", w) for t in triple_templates()[:60] for w in ("blue", "awful", "good")]


@pytest.fixture(scope="module")
def wordlevel_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(_corpus(), trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


@pytest.fixture(scope="module")
def bpe_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(_corpus(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def test_char_span_to_token_span_wordlevel(wordlevel_tokenizer: PreTrainedTokenizerFast) -> None:
    text = "I thought the plot was good ."
    ids = wordlevel_tokenizer(text, add_special_tokens=False)["input_ids"]
    start = text.index("good")
    assert char_span_to_token_span(wordlevel_tokenizer, text, (start, start + 4)) == (5, 6)
    assert char_span_to_token_span(wordlevel_tokenizer, text, (start, start + 4), offset=1) == (
        6,
        7,
    )
    assert wordlevel_tokenizer.convert_ids_to_tokens(ids[5:6]) == ["good"]
    with pytest.raises(ValueError, match="no token"):
        char_span_to_token_span(wordlevel_tokenizer, text, (len(text), len(text) + 3))


def test_char_span_to_token_span_bpe_multi_token(bpe_tokenizer: PreTrainedTokenizerFast) -> None:
    multi = 0
    for t in make_triples(60, seed=0, split="all"):
        for text, span, word in zip(t.texts, t.spans, t.words, strict=True):
            s, e = char_span_to_token_span(bpe_tokenizer, text, span)
            ids = bpe_tokenizer(text, add_special_tokens=False)["input_ids"]
            assert bpe_tokenizer.decode(ids[s:e]).strip() == word
            multi += e - s > 1
    assert multi > 0  # unseen words split into several tokens and all of them are returned


def test_char_span_to_token_span_needs_fast_tokenizer() -> None:
    with pytest.raises(TypeError, match="fast"):
        char_span_to_token_span(object(), "a good b", (2, 6))
