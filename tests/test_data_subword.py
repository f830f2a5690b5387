"""Subword tokenizers (bpe, unigram, wordpiece, byte_bpe) on tiny corpora the tests write: built
from the real conf/tokenizer YAMLs, learned from train only, special tokens whole, lossless round
trips, the token-id cache and its key, and bad input."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pytest
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmbench.config import DatasetConfig, check_target
from lmbench.data.learned import MODEL_FILE, LearnedTokenizer
from lmbench.data.pipeline import count_oov, load_corpus
from lmbench.data.subword import BpeTokenizer, ByteBpeTokenizer, UnigramTokenizer, WordPieceTokenizer
from lmbench.errors import ConfigError, DataError

KINDS = {
    "bpe": BpeTokenizer,
    "unigram": UnigramTokenizer,
    "wordpiece": WordPieceTokenizer,
    "byte_bpe": ByteBpeTokenizer,
}
SIZES = {"bpe": 60, "unigram": 40, "wordpiece": 80, "byte_bpe": 300}  # all reachable on the corpus below
LOSSLESS = ("bpe", "unigram", "byte_bpe")  # wordpiece normalizes whitespace
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "po", "de", "qu", "fe", "zo"]


def lines(rng, words, n, extra: str | None = None) -> str:
    """`n` lines of Zipf-distributed words, a literal <unk> in every 7th, and PTB-style spaces
    (a leading and a trailing one) in every other line; `extra` goes into every line."""
    p = 1.0 / np.arange(1, len(words) + 1)
    out = []
    for i in range(n):
        ws = list(rng.choice(words, size=rng.integers(3, 9), p=p / p.sum()))
        if i % 7 == 0:
            ws.insert(int(rng.integers(0, len(ws))), "<unk>")
        if extra:
            ws.insert(int(rng.integers(0, len(ws))), extra)
        out.append(f" {' '.join(ws)} " if i % 2 else " ".join(ws))
    return "\n".join(out) + "\n"


def corpus_texts(seed: int = 0) -> dict[str, str]:
    """Words of consonant-vowel syllables. Every test line also has "quokka": all of its letters
    occur in train, but no syllable sequence spells "kk" or "uo", so train never contains it."""
    rng = np.random.default_rng(seed)
    words: set[str] = set()
    while len(words) < 60:
        words.add("".join(rng.choice(SYLLABLES, size=rng.integers(1, 4))))
    vocab = sorted(words)
    return {"train": lines(rng, vocab, 300), "valid": lines(rng, vocab, 40), "test": lines(rng, vocab, 80, "quokka")}


@pytest.fixture
def corpus(tmp_path):
    texts = corpus_texts()
    for split, text in texts.items():
        (tmp_path / f"{split}.txt").write_text(text, encoding="utf-8")
    cfg = OmegaConf.structured(DatasetConfig(name="tiny", **{s: str(tmp_path / f"{s}.txt") for s in texts}))
    return cfg, texts


@pytest.fixture
def subword(compose_config):
    """subword(kind, *overrides) -> the tokenizer of conf/tokenizer/<kind>.yaml at the test size."""

    def _build(kind: str, *overrides: str):
        cfg = compose_config(f"tokenizer={kind}", f"tokenizer.vocab_size={SIZES[kind]}", *overrides)
        check_target(cfg.tokenizer, "tokenizer")
        return instantiate(cfg.tokenizer)

    return _build


def piece_text(tokenizer, piece: str) -> str:
    """What a piece spells on its own (a WordPiece continuation without its ##)."""
    return piece[2:] if piece.startswith("##") else tokenizer.detokenize([piece])


def foreign_pieces(tokenizer, train_text: str) -> list[str]:
    """Pieces of more than one character that spell something the train text does not contain."""
    specials = (tokenizer.eos_token, "<unk>")
    return [
        p
        for p in tokenizer._pieces
        if p not in specials and len(t := piece_text(tokenizer, p)) > 1 and t not in train_text
    ]


def test_yaml_builds_each_kind_and_its_keys_are_checked(subword, compose_config):
    for kind, cls in KINDS.items():
        tok = subword(kind)
        assert type(tok) is cls and tok.needs_fit and tok.label == f"{kind}-{SIZES[kind]}"
    cfg = compose_config("tokenizer=bpe", "+tokenizer.vocab_sise=100")
    with pytest.raises(ConfigError, match=r"tokenizer.vocab_sise .* Did you mean tokenizer.vocab_size\?"):
        check_target(cfg.tokenizer, "tokenizer")
    cfg = compose_config("tokenizer=unigram", "+tokenizer.min_freq=2")  # the Unigram trainer has none
    with pytest.raises(ConfigError, match="tokenizer.min_freq is not a parameter"):
        check_target(cfg.tokenizer, "tokenizer")
    with pytest.raises(MissingConfigException, match="tokenizer/bpee"):
        compose_config("tokenizer=bpee")


@pytest.mark.parametrize("kind", KINDS)
def test_eos_and_unk_stay_whole(corpus, cache_dir, subword, kind):
    cfg, texts = corpus
    data = load_corpus(cfg, subword(kind), cache_dir=cache_dir)
    for split in ("train", "test"):
        tokens = data.vocab.decode(data.splits[split].ids)
        assert tokens.count("<unk>") == texts[split].count("<unk>") > 0
        assert tokens.count("<eos>") == texts[split].count("\n")
    # No piece was learned from the letters of the special tokens ("<", "unk", ">" occur nowhere else;
    # the byte-level alphabet has every single byte, "<" and ">" included).
    learned = [t for t in data.vocab.tokens if t not in ("<eos>", "<unk>") and (len(t) > 1 or kind != "byte_bpe")]
    assert [t for t in learned if "<" in t or ">" in t or "unk" in t] == []
    assert data.vocab.tokens[:2] == ["<eos>", "<unk>"] and len(data.vocab) == SIZES[kind]
    assert data.info["oov"] == {"train": 0, "valid": 0, "test": 0}  # the corpus's <unk> is a word of it


@pytest.mark.parametrize("kind", KINDS)
def test_pieces_are_learned_from_train_only(corpus, tmp_path, cache_dir, subword, kind):
    cfg, texts = corpus
    data = load_corpus(cfg, subword(kind), cache_dir=cache_dir)
    tok = data.tokenizer
    assert foreign_pieces(tok, texts["train"]) == []  # every piece spells a piece of the train text
    assert not any("quokka" in piece_text(tok, p) for p in data.vocab.tokens)
    assert len(tok.tokenize(" quokka\n")) >= 3  # several pieces and <eos>
    # Other valid and test text: another cache entry, but the very same pieces.
    other = tmp_path / "other.txt"
    other.write_text(" ".join(["quokka"] * 50) + "\n", encoding="utf-8")
    again = load_corpus(
        OmegaConf.merge(cfg, {"valid": str(other), "test": str(other)}), subword(kind), cache_dir=cache_dir
    )
    assert again.cache_key != data.cache_key and not again.info["from_cache"]
    assert set(again.tokenizer._pieces) == set(tok._pieces) and again.vocab == data.vocab


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "byte_bpe"])
def test_the_train_only_check_catches_a_tokenizer_that_saw_the_test_text(corpus, subword, kind):
    _, texts = corpus
    leaky = subword(kind).fit(texts["train"] + texts["test"], "<unk>")
    assert any("quokk" in piece_text(leaky, p) for p in foreign_pieces(leaky, texts["train"]))


EDGES = "  two  spaces\ta tab \n\n \nnaïve café <unk> x<unk>y\n<unk>\nend"


@pytest.mark.parametrize("kind", KINDS)
def test_decode_of_encode_gives_the_text_back(corpus, cache_dir, subword, kind):
    cfg, texts = corpus
    data = load_corpus(cfg, subword(kind), cache_dir=cache_dir)
    tok, vocab = data.tokenizer, data.vocab
    for split, text in texts.items():
        decoded = tok.detokenize(vocab.decode(data.splits[split].ids))  # through the ids
        expected = text if kind in LOSSLESS else "".join(" ".join(line.split()) + "\n" for line in text.splitlines())
        assert decoded == expected, split
    # Unseen characters (ï, é, \t, y, x) and odd whitespace: lossless kinds give the text back too;
    # an unseen character is an out-of-vocabulary token of its own text, never silently dropped.
    tokens = tok.tokenize(EDGES)
    if kind in LOSSLESS:
        assert tok.detokenize(tokens) == EDGES + "\n"
    else:  # words joined by one space; a special token is a word of its own
        words = EDGES.replace("<unk>", " <unk> ").split("\n")
        assert tok.detokenize(tokens) == "".join(" ".join(line.split()) + "\n" for line in words)
    assert tokens.count("<unk>") == EDGES.count("<unk>")
    oov = [t for t in tokens if t not in vocab.index]
    if kind == "byte_bpe":
        assert oov == []
    else:
        assert "é" in "".join(oov) and count_oov(vocab, tokens, "the text") == len(oov)


def line_by_line(tok, text: str) -> list[str]:
    """The reference: every line encoded whole by the Hugging Face model, its unknown pieces given
    back their own text (as `tokenize` promises), then the end-of-sentence token."""
    out = []
    for line in tok._lines(text):
        enc = tok._model().encode(line, add_special_tokens=False)
        out += [line[a:b] if t == "<unk>" and line[a:b] != "<unk>" else t for t, (a, b) in zip(enc.tokens, enc.offsets)]
        out.append(tok.eos_token)
    return out


ODD = EDGES + "\n\t\tx  <unk>  \n<eos>a <eos>\n   \n trailing   \n\u00a0nbsp\u3000ideo 12,5 x'll ab's\n" + "ka" * 40


@pytest.mark.parametrize("kind", KINDS)
def test_encoding_unit_by_unit_equals_encoding_line_by_line(corpus, cache_dir, subword, kind):
    """`tokenize` and `provisional_ids` encode each distinct space-led unit once (learned.py's
    `_units`): the tokens must be exactly those of encoding each line whole, on the corpus and on
    text made of odd whitespace, special tokens glued to words, unseen characters and blank lines."""
    cfg, texts = corpus
    tok = load_corpus(cfg, subword(kind), cache_dir=cache_dir).tokenizer
    for text in (texts["train"], texts["test"], ODD, ODD, "", "\n", "one line without end"):
        expected = line_by_line(tok, text)
        assert tok.tokenize(text) == expected
        provisional = defaultdict(itertools.count().__next__)
        ids = tok.provisional_ids(text, provisional)
        assert ids.dtype == np.int32 and [list(provisional)[i] for i in ids] == expected
        assert list(provisional) == list(dict.fromkeys(expected))  # numbered in order of first appearance


def test_byte_bpe_needs_no_unknown_token(tmp_path, cache_dir, subword):
    texts = {s: t.replace("<unk>", "zo") for s, t in corpus_texts().items()}  # a corpus without <unk>
    for split, text in texts.items():
        (tmp_path / f"{split}.txt").write_text(text, encoding="utf-8")
    cfg = OmegaConf.structured(DatasetConfig(name="tiny", **{s: str(tmp_path / f"{s}.txt") for s in texts}))
    byte_level = load_corpus(cfg, subword("byte_bpe"), cache_dir=cache_dir)
    assert byte_level.vocab.unk_id is None and "<unk>" not in byte_level.tokenizer._pieces
    new = "日本語 🦘 naïve <unk>\n"
    tokens = byte_level.tokenizer.tokenize(new)
    assert count_oov(byte_level.vocab, tokens, "new text") == 0
    assert byte_level.tokenizer.detokenize(byte_level.vocab.decode(byte_level.vocab.encode(tokens))) == new
    # Character-level BPE on the same corpus needed no unknown id either, so it refuses the text,
    # naming the characters it never saw.
    bpe = load_corpus(cfg, subword("bpe"), cache_dir=cache_dir)
    assert bpe.vocab.unk_id is None
    with pytest.raises(DataError, match="not in the model's vocabulary.*'日'"):
        count_oov(bpe.vocab, bpe.tokenizer.tokenize(new), "new text")


def test_cache_key_follows_vocab_size_and_train_text(corpus, cache_dir, subword, monkeypatch, caplog):
    cfg, _ = corpus
    first = load_corpus(cfg, subword("bpe"), cache_dir=cache_dir)
    folder = cache_dir / "ids" / first.cache_key
    assert (folder / MODEL_FILE).is_file() and not first.info["from_cache"]
    smaller = load_corpus(cfg, subword("bpe", "tokenizer.vocab_size=50"), cache_dir=cache_dir)
    assert smaller.cache_key != first.cache_key and len(smaller.vocab) == 50
    assert load_corpus(cfg, subword("bpe", "tokenizer.min_freq=2"), cache_dir=cache_dir).cache_key != first.cache_key

    # A hit trains nothing: the trained model comes from the entry, the same one.
    monkeypatch.setattr(LearnedTokenizer, "fit", lambda *a: pytest.fail("trained again on a cache hit"))
    hit = load_corpus(cfg, subword("bpe"), cache_dir=cache_dir)
    assert hit.info["from_cache"] and hit.cache_key == first.cache_key
    assert hit.tokenizer.settings() == first.tokenizer.settings()  # model_sha256 included
    assert np.array_equal(hit.train.ids, first.train.ids) and hit.vocab == first.vocab
    monkeypatch.undo()

    with open(cfg.train, "a", encoding="utf-8") as f:
        f.write(" quokka quokka quokka\n" * 20)
    edited = load_corpus(cfg, subword("bpe"), cache_dir=cache_dir)
    assert edited.cache_key != first.cache_key and not edited.info["from_cache"]
    assert edited.tokenizer.settings()["model_sha256"] != first.tokenizer.settings()["model_sha256"]
    assert "▁quokka" in edited.vocab.index  # learned from the edited train text

    # A cached tokenizer.json that no longer matches its entry is never used.
    (folder / MODEL_FILE).write_text(smaller.tokenizer._json, encoding="utf-8")
    with open(cfg.train, "w", encoding="utf-8") as f:
        f.write(corpus_texts()["train"])
    rebuilt = load_corpus(cfg, subword("bpe"), cache_dir=cache_dir)
    assert not rebuilt.info["from_cache"] and "unreadable token-id cache" in caplog.text
    assert rebuilt.vocab == first.vocab and np.array_equal(rebuilt.train.ids, first.train.ids)


def test_a_trained_tokenizer_with_a_given_vocabulary(corpus, cache_dir, subword):
    """What fine-tuning does: the source's trained tokenizer and vocabulary, on the same corpus."""
    cfg, _ = corpus
    own = load_corpus(cfg, subword("bpe"), cache_dir=cache_dir)
    given = load_corpus(cfg, own.tokenizer, cache_dir=cache_dir, vocab=own.vocab)
    assert given.cache_key != own.cache_key and given.tokenizer is own.tokenizer
    assert np.array_equal(given.test.ids, own.test.ids)
    with pytest.raises(DataError, match="needs the tokenizer it was made with"):
        load_corpus(cfg, subword("bpe"), cache_dir=cache_dir, vocab=own.vocab)
    other = load_corpus(cfg, subword("bpe", "tokenizer.vocab_size=50"), cache_dir=cache_dir)
    with pytest.raises(
        DataError, match=r"not made by this bpe tokenizer.s trained model \(50 pieces\): 10 of its tokens are no piece"
    ):
        other.tokenizer.check_vocab(own.vocab)


def test_trained_model_survives_a_save_and_load(corpus, tmp_path, subword):
    _, texts = corpus
    for kind in KINDS:
        trained = subword(kind).fit(texts["train"], "<unk>")
        trained.save_model(tmp_path / kind)
        loaded = subword(kind).load_model(tmp_path / kind)
        assert loaded.settings() == trained.settings() and not loaded.needs_fit
        assert loaded.tokenize(texts["test"]) == trained.tokenize(texts["test"])
        with pytest.raises(DataError, match=f"has no {MODEL_FILE}"):
            subword(kind).load_model(tmp_path)
    with pytest.raises(DataError, match="has not been trained"):
        subword("bpe").tokenize("a b\n")


@pytest.mark.parametrize(
    "kind, size, message",
    [
        ("bpe", 10, r"vocab_size=10 is too small for bpe .* set tokenizer.vocab_size >= \d+"),
        ("bpe", 5000, r"vocab_size=5000 is larger than this train split allows: .* <= \d+"),
        ("wordpiece", 20, r"vocab_size=20 is too small for wordpiece"),
        ("unigram", 10, r"vocab_size=10 does not fit the train split: unigram training says"),
        ("unigram", 5000, r"vocab_size=5000 is larger than this train split allows"),
        ("byte_bpe", 257, r"vocab_size=257 is too small for byte_bpe .* >= 258"),  # the corpus has <unk>
    ],
    ids=lambda v: str(v) if not isinstance(v, str) or " " not in v else "",
)
def test_vocab_size_the_train_split_cannot_give_is_a_clear_error(corpus, subword, kind, size, message):
    _, texts = corpus
    with pytest.raises(DataError, match=message) as info:
        subword(kind, f"tokenizer.vocab_size={size}").fit(texts["train"], "<unk>")
    bound = [int(w) for w in str(info.value).replace(";", " ").split() if w.isdigit()]
    if kind == "bpe":  # the size the message names works
        assert len(subword(kind, f"tokenizer.vocab_size={bound[-1]}").fit(texts["train"], "<unk>")._pieces) == bound[-1]


def test_bad_settings_and_empty_train_text(tmp_path, subword):
    for bad in ("byte_bpe", 100), ("bpe", 2), ("bpe", True), ("bpe", "many"):
        with pytest.raises(ConfigError, match="tokenizer.vocab_size must be an integer >= "):
            KINDS[bad[0]](vocab_size=bad[1])
    with pytest.raises(ConfigError, match="min_freq"):
        BpeTokenizer(vocab_size=100, min_freq=0)
    with pytest.raises(ConfigError, match="must differ"):
        BpeTokenizer(vocab_size=100, eos_token="<unk>").fit("a b\n", "<unk>")
    with pytest.raises(DataError, match="the train split has no text to learn bpe pieces from"):
        subword("bpe", "tokenizer.strip_punctuation=true").fit("... !?\n<unk> ,\n", "<unk>")


REAL_CORPORA = ("ptb", "wikitext2", "tinyshakespeare")


@pytest.mark.slow
@pytest.mark.parametrize("kind", LOSSLESS)
@pytest.mark.parametrize("dataset", REAL_CORPORA)
def test_round_trip_on_every_real_corpus(dataset, kind, compose_config, cache_dir):
    """decode(encode(text)) == text on every split of the corpora in $LMBENCH_DATA_DIR, with each
    lossless tokenizer at its shipped vocabulary size, trained on the train split."""
    from lmbench.data.pipeline import read_split_texts

    cfg = compose_config(f"dataset={dataset}", f"tokenizer={kind}")
    try:
        texts = read_split_texts(cfg.dataset, cache_dir=cache_dir)
    except DataError:
        pytest.skip(f"{dataset} is not in $LMBENCH_DATA_DIR")
    data = load_corpus(cfg.dataset, instantiate(cfg.tokenizer), cache_dir=cache_dir)
    for split, text in texts.items():
        assert data.tokenizer.detokenize(data.vocab.decode(data.splits[split].ids)) == text, split


@pytest.mark.parametrize("kind", KINDS)
def test_a_very_long_line_cut_into_pieces_gives_the_same_tokens(corpus, cache_dir, subword, kind, monkeypatch):
    """A corpus on one line is cut inside the line (before a run of spaces: a unit starts there),
    each piece encoded apart; the tokens are those of the whole line."""
    import lmbench.data.pipeline as pipeline

    cfg, texts = corpus
    tok = load_corpus(cfg, subword(kind), cache_dir=cache_dir).tokenizer
    for text in (texts["train"].replace("\n", "  "), ODD.replace("\n", " ") * 3, texts["test"]):
        whole = tok.tokenize(text)
        monkeypatch.setattr(pipeline, "ENCODE_CHUNK", 32)
        pieces = list(pipeline._line_chunks(text, tok))
        assert "".join(p for p, _ in pieces) == text and sum(not ends for _, ends in pieces) > 3
        assert [t for p, ends in pieces for t in tok.tokenize(p, ends)] == whole
        provisional = defaultdict(itertools.count().__next__)
        ids = np.concatenate([tok.provisional_ids(p, provisional, ends) for p, ends in pieces])
        assert [list(provisional)[i] for i in ids] == whole
