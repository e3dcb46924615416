"""Top-activating contexts, the offline labeler, the LLM labeler (against a local fake server)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig

from lfp_mech._io import write_table
from lfp_mech.errors import ConfigError, LfpMechError
from lfp_mech.validate.autointerp import (
    ActivatingExample,
    AutointerpConfig,
    LLMClient,
    describe_features,
    describe_with_llm,
    discretize,
    label_feature,
    load_lexicon,
    scan_features,
    tokenize_corpus,
    top_activating_contexts,
    valence_statistics,
)

LEXICON = {
    "great": 3.1,
    "love": 3.2,
    "wonderful": 2.7,
    "good": 1.9,
    "awful": -2.0,
    "bad": -2.5,
    "hate": -2.7,
}
POSITIVE_CORPUS = [
    "What a great film.",
    "The story was wonderful and good.",
    "A great cast in a good year.",
    "It was wonderful to see.",
    "Good acting, great music.",
    "The ending is wonderful.",
]
NEUTRAL_CORPUS = [
    "The film was long and the train was late.",
    "I watched it on a Tuesday with a friend.",
    "There are two scenes in the kitchen.",
    "The director made three films before this one.",
    "We sat in the back row of the hall.",
    "The script has many pages and a map.",
]


def random_sae(d_in=64, d_sae=96, hook="blocks.1.hook_mlp_out", seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    sae.cfg.metadata.hook_name = hook
    return sae


# --------------------------------------------------------------------------- offline statistics


def test_valence_statistics_and_label_on_hand_made_lists():
    assert valence_statistics(["great", "the", ""], LEXICON) == pytest.approx(
        (3.1 / 3, 3.1 / 3, 1 / 3)
    )
    assert valence_statistics([], LEXICON) == (0.0, 0.0, 0.0)
    neutral_lists = [
        ["the", "of", "a", "film", "and"],
        ["in", "on", "it", "was", "to"],
        ["the", "the", "bad", "of", "is"],
        ["a", "an", "film", "good", "scene"],
    ] * 10
    null = [valence_statistics(words, LEXICON)[0] for words in neutral_lists]

    pos = label_feature(["great", "love", "great", "wonderful", "good"], null, LEXICON)
    assert pos.task_related and pos.p_value == pytest.approx(1 / 41)
    assert pos.z_score > 3 and pos.mean_valence > 0
    assert pos.description.startswith("fires on positive-sentiment words: great")

    neg = label_feature(["awful", "bad", "hate", "bad"], null, LEXICON)
    assert neg.task_related and neg.description.startswith("fires on negative-sentiment words: bad")

    plain = label_feature(["the", "of", "the", "a", "film"], null, LEXICON)
    assert not plain.task_related and plain.p_value == 1.0
    assert plain.description == "no clear sentiment: the, of, a, film"

    assert label_feature(["great"], [], LEXICON).p_value == 1.0  # no null: never significant


def test_benjamini_hochberg_on_known_p_values():
    from lfp_mech.validate.autointerp.describe import _correct_task_related
    from lfp_mech.validate.autointerp.label import adjusted_p_values

    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): q = min_{k >= i} p_(k) m / k = .02 .02 .04 .04
    assert adjusted_p_values(p).tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjusted_p_values(p, "none").tolist() == p
    assert adjusted_p_values([]).size == 0
    with pytest.raises(ConfigError, match="correction"):
        adjusted_p_values(p, "holm")
    # 80 features, 4 "significant" at the uncorrected 0.05 by chance: none survives BH
    ps = [0.02, 0.03, 0.04, 0.045] + [0.2 + 0.01 * i for i in range(76)]
    rows = [{"p_value": v, "task_related": v < 0.05, "sentiment_share": 0.5} for v in ps]
    _correct_task_related(rows, AutointerpConfig(alpha=0.05))
    assert sum(r["task_related_uncorrected"] for r in rows) == 4
    assert not any(r["task_related"] for r in rows)
    # ten strong features among them do survive (q = 0.005 * 80 / 10 = 0.04 < 0.05)
    rows = [{"p_value": v, "task_related": v < 0.05, "sentiment_share": 0.5} for v in ps]
    for r in rows[-10:]:
        r.update(p_value=0.005, task_related=True)
    _correct_task_related(rows, AutointerpConfig(alpha=0.05))
    assert sum(r["task_related"] for r in rows) == 10
    assert rows[-1]["q_value"] == pytest.approx(0.04)
    rows = [{"p_value": v, "task_related": v < 0.05, "sentiment_share": 0.5} for v in ps]
    _correct_task_related(rows, AutointerpConfig(alpha=0.05, correction="none"))
    assert sum(r["task_related"] for r in rows) == 4


def test_tokenize_corpus_words_and_bos(tiny_model):
    corpus = tokenize_corpus(
        tiny_model, ["A great movie, I loved it!", "", "A great movie, I loved it!"]
    )
    assert len(corpus.texts) == 1  # empty and duplicate texts dropped
    assert corpus.tokens[0] == tiny_model.to_tokens(corpus.texts[0])[0].tolist()
    assert corpus.words[0][0] == "" and corpus.token_text(0, 0) == "<bos>"
    pieces = {corpus.token_text(0, p): corpus.words[0][p] for p in range(1, len(corpus.tokens[0]))}
    assert pieces[","] == ""
    assert {w for w in corpus.words[0] if w} == {"a", "great", "movie", "i", "loved", "it"}
    with pytest.raises(ConfigError, match="empty"):
        tokenize_corpus(tiny_model, ["", "  "])


def test_scan_matches_brute_force(tiny_model):
    hook = "blocks.1.hook_mlp_out"
    sae = random_sae()
    texts = POSITIVE_CORPUS + NEUTRAL_CORPUS
    corpus = tokenize_corpus(tiny_model, texts)
    feats = [0, 5, 17]
    scan = scan_features(
        tiny_model, {hook: sae}, {hook: feats}, corpus, k=4, window=(3, 2), batch_size=5
    )[hook]
    # brute force: every text alone
    all_acts, where = [], []
    for i, ids in enumerate(corpus.tokens):
        _, cache = tiny_model.run_with_cache(torch.tensor([ids]), names_filter=hook)
        z = sae.encode(cache[hook][0]).detach()
        all_acts.append(z[1:])
        where += [(i, p) for p in range(1, len(ids))]
    z_all = torch.cat(all_acts)
    assert scan.n_tokens == z_all.shape[0]
    assert torch.allclose(scan.frequency, (z_all > 0).float().mean(0), atol=1e-6)
    assert torch.allclose(scan.mean_activation, z_all.mean(0), atol=1e-5)
    for j, f in enumerate(feats):
        top = z_all[:, f].topk(4)
        assert torch.allclose(scan.values[j], top.values, atol=1e-5)
        i, p = where[int(top.indices[0])]
        assert (int(scan.text_index[j, 0]), int(scan.position[j, 0])) == (i, p)
    examples = top_activating_contexts(
        tiny_model, sae, texts, [5], k=4, window=(3, 2), batch_size=5
    )[5]
    ex = examples[0]
    assert ex.activation == pytest.approx(float(scan.values[1, 0]), abs=1e-6)
    assert ex.context[ex.context.index(ex.token)] == ex.token
    lo = max(ex.position - 3, 1)
    _, cache = tiny_model.run_with_cache(
        torch.tensor([corpus.tokens[ex.text_index]]), names_filter=hook
    )
    z_text = sae.encode(cache[hook][0]).detach()[:, 5]
    assert ex.context_acts == pytest.approx(z_text[lo : lo + len(ex.context)].tolist(), abs=1e-5)
    assert ex.activation == pytest.approx(ex.context_acts[ex.position - lo], abs=1e-6)


def planted_sae(model, token_ids, d_sae=64):
    """An SAE on hook_embed whose feature 0 fires exactly on the given token ids."""
    sae = random_sae(d_in=model.cfg.d_model, d_sae=d_sae, hook="hook_embed", seed=1)
    emb = model.W_E.detach()
    direction = sum(emb[t] / emb[t].norm() ** 2 for t in token_ids)
    with torch.no_grad():
        sae.W_enc[:, 0] = direction
        sae.b_enc[0] = -0.6
    return sae


def test_offline_labeler_flags_a_planted_feature(tiny_model):
    tok = tiny_model.tokenizer
    # the last token of " great", " good" and the single token " wonderful"
    planted = {
        tok(" great", add_special_tokens=False).input_ids[-1],
        tok(" good", add_special_tokens=False).input_ids[-1],
        tok(" wonderful", add_special_tokens=False).input_ids[-1],
    }
    sae = planted_sae(tiny_model, planted)
    config = AutointerpConfig(k=5, n_null=63, use_llm="never", window=(4, 2))
    out = describe_features(
        tiny_model,
        {"hook_embed": sae},
        {"hook_embed": [0, 1]},
        POSITIVE_CORPUS + NEUTRAL_CORPUS,
        config,
        lexicon=LEXICON,
    )
    rows = {r["feature"]: r for r in out.rows}
    assert rows[0]["task_related"], rows[0]
    assert rows[0]["p_value"] < 0.05
    assert rows[0]["description"].startswith("fires on positive-sentiment words")
    assert {w.strip() for w in rows[0]["description"].split(":")[1].split(",")} <= {
        "great",
        "good",
        "wonderful",
    }
    assert out.task_related()["hook_embed"] == [0] + ([1] if rows[1]["task_related"] else [])
    assert out.rows[0]["layer"] is None and out.scans["hook_embed"].n_selected > 0
    assert set(out.contexts_json()["hook_embed"]) == {"0", "1"}


# --------------------------------------------------------------------------- LLM labeler


class _FakeChat(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, dict(self.headers), body))
        if body["model"] == "broken":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"server exploded")
            return
        prompt = body["messages"][-1]["content"]
        if "yes or no" in prompt:
            reply = "Yes."
        elif "unknown" in prompt:
            lines = prompt.split("<start>\n", 1)[1].split("\n<end>", 1)[0].splitlines()
            reply = "\n".join(
                f"{line.rsplit(chr(9), 1)[0]}\t{10 if line.split(chr(9))[0].strip() in {'great', 'love'} else 0}"
                for line in lines
            )
        else:
            reply = "positive words such as praise for a film."
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_llm():
    _FakeChat.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _example(tokens, hot):
    acts = [3.0 if t.strip() in hot else 0.0 for t in tokens]
    i = max(range(len(acts)), key=acts.__getitem__)
    return ActivatingExample(0, i + 1, tokens[i], tokens[i].strip(), acts[i], list(tokens), acts)


def test_discretize():
    assert discretize([0.0, 1.5, 3.0, 4.0, -1.0], 3.0) == [0, 5, 10, 10, 0]
    assert discretize([1.0], 0.0) == [0]


def test_describe_with_llm_against_fake_server(fake_llm):
    client = LLMClient(fake_llm, "fake-model", api_key="secret")
    examples = [
        _example(["I", " great", " film"], {"great"}),
        _example(["we", " love", " it", " so"], {"love"}),
        _example(["a", " great", " day"], {"great"}),
        _example(["they", " love", " the\tend"], {"love"}),
    ]
    result = describe_with_llm(examples, client, task_description="positive sentiment", label="7")
    assert result.explanation == "positive words such as praise for a film"
    assert result.score == pytest.approx(1.0)
    assert result.task_related
    assert result.n_tokens_scored == 7  # the two odd-ranked examples were simulated
    path, headers, body = _FakeChat.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer secret"
    assert body["model"] == "fake-model" and body["temperature"] == 0.0
    explain = body["messages"][-1]["content"]
    assert " great\t10" in explain and "I\t0" in explain
    assert explain.endswith("the main thing this neuron does is find")
    assert len(_FakeChat.requests) == 1 + 2 + 1  # explain, simulate x2, related
    assert "the\\tend\tunknown" in _FakeChat.requests[2][2]["messages"][-1]["content"]


def test_llm_client_errors_and_env(fake_llm, monkeypatch):
    with pytest.raises(LfpMechError, match="HTTP 500.*server exploded"):
        LLMClient(fake_llm, "broken", retry_wait=0).chat([{"role": "user", "content": "hi"}])
    assert len(_FakeChat.requests) == 1 + 3  # a server error is retried 3 times, then raised
    with pytest.raises(LfpMechError, match="cannot reach"):
        LLMClient("http://127.0.0.1:9/v1", "m", timeout=2, retry_wait=0).chat(
            [{"role": "user", "content": "x"}]
        )
    with pytest.raises(ConfigError, match="not an http"):
        LLMClient("localhost:8000", "m")
    for var in ("LFP_MECH_LLM_BASE_URL", "LFP_MECH_LLM_MODEL", "LFP_MECH_LLM_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    assert LLMClient.from_env() is None
    monkeypatch.setenv("LFP_MECH_LLM_BASE_URL", fake_llm)
    with pytest.raises(ConfigError, match="LFP_MECH_LLM_MODEL"):
        LLMClient.from_env()
    monkeypatch.setenv("LFP_MECH_LLM_MODEL", "fake-model")
    client = LLMClient.from_env()
    assert client.url == fake_llm + "/chat/completions" and client.api_key is None


def test_describe_features_with_llm_columns(tiny_model, fake_llm, tmp_path):
    hook = "blocks.1.hook_mlp_out"
    config = AutointerpConfig(k=4, n_null=10, use_llm="never", label_source="offline")
    out = describe_features(
        tiny_model,
        {hook: random_sae()},
        {hook: [2, 3]},
        POSITIVE_CORPUS,
        config,
        client=LLMClient(fake_llm, "fake-model"),
    )
    assert out.used_llm
    assert all({"llm_explanation", "llm_score", "llm_task_related"} <= set(r) for r in out.rows)
    csv_path = write_table(tmp_path / "descriptions", out.rows)
    assert csv_path.read_text().startswith("hook,layer,feature,description,task_related,p_value")
    md = csv_path.with_suffix(".md").read_text().splitlines()
    assert md[0].startswith("| hook | layer | feature | description |") and len(md) == 4


def test_config_validation():
    with pytest.raises(ConfigError, match="alpha"):
        AutointerpConfig(alpha=2.0)
    # a TypeError (jaxtyping's TypeCheckError) where annotations are checked at run time, as here
    with pytest.raises((ConfigError, TypeError), match="lexicon"):
        AutointerpConfig(lexicon="afinn")
    with pytest.raises(ConfigError, match="window"):
        AutointerpConfig(window=(3, -1))
    assert AutointerpConfig(window=(3, 1)).window == (3, 1)


def test_vader_lexicon_is_the_default_lexicon():
    lexicon = load_lexicon("vader")
    assert lexicon["great"] > 2 and lexicon["bad"] < -2 and "the" not in lexicon
    with pytest.raises(ConfigError, match="unknown lexicon 'afinn'"):
        load_lexicon("afinn")
