"""Build the small byte-level BPE tokenizer shipped for tiny test models.

Run once: ``python scripts/make_tiny_tokenizer.py``. The output in
``lfp_mech/assets/tiny_tokenizer`` is committed, so tests never need a hub.
Trained on the VADER lexicon plus a few English sentences: lexicon words often split into
several tokens, which exercises multi-token spans.
"""

from pathlib import Path

import vaderSentiment
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

OUT = Path(__file__).resolve().parents[1] / "lfp_mech" / "assets" / "tiny_tokenizer"
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SENTENCES = [
    "The film opens with a long shot of the city at night.",
    "I watched this movie on a rainy afternoon with my family.",
    "The acting was wonderful, the plot was terrible, and the music was fine.",
    "This documentary about the ocean runs for two hours.",
    "After the first twenty minutes I knew how it would end.",
    "You clearly have no idea what you are talking about.",
]


def main() -> None:
    lexicon = Path(vaderSentiment.__file__).parent / "vader_lexicon.txt"
    words = [line.split("\t")[0] for line in lexicon.read_text(encoding="utf-8").splitlines()]
    corpus = [" ".join(words[i : i + 20]) for i in range(0, len(words), 20)] + SENTENCES * 20
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=256,
    )
    OUT.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(OUT)


if __name__ == "__main__":
    main()
