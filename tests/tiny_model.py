"""A tiny randomly initialised BERT sentence-transformers model, built offline for fast tests.

`build_tiny_model(dir)` writes a WordPiece vocabulary, makes a BertModel from a BertConfig (hidden size 32,
2 layers, random weights from a fixed seed), wraps it in Transformer -> mean Pooling -> Normalize and saves
it, so that `SentenceTransformer(dir)` loads it with no network. Nothing is downloaded.

`tiny_texts(n)` gives texts on which character and token lengths disagree: long words that are in the
vocabulary (one token, many characters) next to made-up words that WordPiece splits into many pieces.
"""

from __future__ import annotations

import random
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz0123456789")
PUNCT = list(".,;:!?()[]{}'\"-_=+*/<>#@")
# Long words that are single tokens: many characters, one token.
WORDS = [
    "the", "of", "and", "to", "in", "is", "for", "on", "with", "as", "by", "an", "be", "at", "or", "it",
    "from", "this", "that", "are", "was", "not", "which", "function", "argument", "return", "value",
    "default", "object", "string", "list", "dictionary", "iterable", "keyword", "optional",
    "implementation", "documentation", "configuration", "synchronization", "representation",
    "compatibility", "characteristically", "internationalization", "counterrevolutionary",
    "electroencephalography", "incomprehensibilities", "uncharacteristically",
]
MAX_SEQ_LENGTH = 64


def vocabulary() -> list[str]:
    return SPECIALS + LETTERS + [f"##{c}" for c in LETTERS] + PUNCT + WORDS


def build_tiny_model(path: str | Path, *, seed: int = 0, max_seq_length: int = MAX_SEQ_LENGTH) -> Path:
    """Build and save the tiny model under `path` (created); returns the model directory."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    try:
        from sentence_transformers.sentence_transformer import modules
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import models as modules  # type: ignore[no-redef, attr-defined]
    from sentence_transformers import SentenceTransformer

    root = Path(path)
    hf_dir = root / "hf"
    out_dir = root / "model"
    hf_dir.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # from_pretrained on a folder holding only vocab.txt works in transformers 4 and 5 alike
    tokenizer = BertTokenizer.from_pretrained(str(hf_dir), do_lower_case=True,
                                              model_max_length=max_seq_length)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max(128, max_seq_length),
                        pad_token_id=0)
    torch.manual_seed(seed)
    bert = BertModel(config)
    bert.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)

    transformer = modules.Transformer(str(hf_dir), max_seq_length=max_seq_length)
    dim = (transformer.get_embedding_dimension() if hasattr(transformer, "get_embedding_dimension")
           else transformer.get_word_embedding_dimension())
    pooling = modules.Pooling(dim, "mean")
    model = SentenceTransformer(modules=[transformer, pooling, modules.Normalize()], device="cpu")
    model.save(str(out_dir))
    return out_dir


def tiny_texts(n: int, *, seed: int = 0) -> list[str]:
    """`n` texts of mixed length, some past MAX_SEQ_LENGTH tokens, whose character and token lengths
    disagree (long in-vocabulary words are one token; made-up words split into one token per letter)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = []
        for _ in range(rng.choice([1, 2, 3, 5, 8, 13, 21, 40])):
            if rng.random() < 0.5:
                words.append(rng.choice(WORDS))
            else:
                words.append("".join(rng.choices(LETTERS[:26], k=rng.randint(2, 9))))
        if i % 7 == 0:
            words.append(rng.choice(PUNCT))
        out.append(" ".join(words))
    return out
