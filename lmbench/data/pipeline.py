"""From a dataset config and a tokenizer to token ids: the one entry point, `load_corpus`.

Steps: locate the files (corpora.py), read and checksum them, cut a single file into splits at line
boundaries, tokenize, build the vocabulary from train only, and turn every split into a compact
NumPy id array. The result is cached under `<cache dir>/ids/<key>/`:

    train.npy valid.npy test.npy   token ids (vocab.dtype), memory-mapped read-only when loaded
    <split>.lines.npy              int64 [3, lines]: characters, words, UTF-8 bytes of each raw line
    vocab.json                     Vocabulary.save
    tokenizer.json                 a learned tokenizer's trained model (subword kinds only)
    meta.json                      format version, token, line, character, word and byte counts
                                   per split, inputs

The key hashes everything the ids depend on: the files' contents (not their paths or times, so a
moved corpus still hits and an edited one never does), the split fractions when one file is cut, the
tokenizer's settings, the unknown token, the encoding-error policy and FORMAT_VERSION. The files are
hashed on every run: reading and hashing WikiText-2 (13 MB) takes about 20 ms, which is cheaper than
any doubt about a stale cache, and the same digest checks `dataset.sha256`.

A learned tokenizer (`tokenizer.needs_fit`: BPE and the other subword kinds) is trained here, on the
train split's text only, before anything is tokenized. What it learns is decided by its settings
(vocabulary size, normalization, library version) and the train text, which the key already covers,
so a cache hit loads the trained model from the entry instead of training again (its digest is
checked against meta.json), and an edited corpus or other settings never meet a stale one. An
already trained tokenizer (a fine-tune's source) puts its model's digest in the key instead. The
tokenizer that made the ids is `CorpusData.tokenizer`.

`vocab=` encodes the corpus with a given vocabulary instead of building one (fine-tuning a model on
another corpus: its ids must be the model's). Tokens it lacks map to its unknown token; without
one, unseen tokens are a `DataError` naming some. The key then also covers the vocabulary's digest,
so ids made with different vocabularies never share a cache folder. Either way `info["oov"]` gives
the number of out-of-vocabulary tokens per split (tokens the vocabulary lacks, not the corpus's own
`<unk>` when the vocabulary has it).
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import logging
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from lmbench.data.corpora import (
    CorpusFiles,
    check_sha256,
    locate_corpus,
    split_line_counts,
)
from lmbench.data.text import check_encoding_errors, decode_text, line_measures
from lmbench.data.tokenizers import Tokenizer
from lmbench.data.types import SPLITS, CorpusData, Split
from lmbench.data.vocab import Vocabulary
from lmbench.errors import DataError
from lmbench.paths import default_cache_dir

log = logging.getLogger(__name__)

# Bump when the cached files or the way ids are made change, so old caches are not reused.
# 2: the per-line measures of the raw text (<split>.lines.npy; n_words, n_bytes, lines in meta.json).
FORMAT_VERSION = 2
ENCODE_CHUNK = 1 << 22  # characters tokenized at once: bounds the token strings held in memory


def load_corpus(
    dataset_cfg: Any,
    tokenizer: Tokenizer,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    vocab: Vocabulary | None = None,
) -> CorpusData:
    """The corpus of `dataset_cfg` as token ids, from the cache when the same inputs were seen.

    `dataset_cfg` is a `DatasetConfig` (or its DictConfig node); `cache_dir` defaults as
    `default_cache_dir` says; `progress` shows download progress bars; `vocab` encodes with that
    vocabulary instead of one built from train (see the module docstring).
    """
    errors = dataset_cfg.encoding_errors
    check_encoding_errors(errors)
    cache_root = default_cache_dir(cache_dir)
    files = locate_corpus(dataset_cfg, cache_root, progress=progress)

    digests: dict[str, str] = {}
    for role, path in files.paths.items():
        digests[role] = file_sha256(path)  # in pieces: a cache hit never holds a whole file
        check_sha256(dataset_cfg, files.names[role], path, digests[role])

    key = cache_key(digests, files, tokenizer, dataset_cfg.unk_token, errors, vocab)
    folder = cache_root / "ids" / key
    info: dict[str, Any] = {
        "files": {role: str(p) for role, p in files.paths.items()},
        "sha256": digests,
        "cache_path": str(folder),
    }
    if vocab is not None and tokenizer.needs_fit:
        raise DataError(
            f"a given vocabulary needs the tokenizer it was made with; {tokenizer!r} is not trained yet"
        )
    cached = _read_cache(folder, tokenizer)
    if cached is not None and (vocab is None or cached[0] == vocab):
        cached_vocab, splits, oov, fitted = cached
        return _corpus(cached_vocab, splits, key, {**info, "oov": oov}, fitted, from_cache=True)

    raw = {role: path.read_bytes() for role, path in files.paths.items()}
    changed = [str(p) for role, p in files.paths.items() if hashlib.sha256(raw[role]).hexdigest() != digests[role]]
    if changed:
        raise DataError(f"{', '.join(changed)} changed while this run read it; run again once it is written")
    texts, sources = _split_texts(files, raw, errors, dataset_cfg.allow_binary)
    del raw
    if tokenizer.needs_fit:
        log.info("training %r on the train split (%s)", tokenizer, sources["train"])
        tokenizer = tokenizer.fit(texts["train"], dataset_cfg.unk_token)
    vocab, ids, oov = _encode(tokenizer, texts, sources, dataset_cfg.unk_token, vocab)
    splits = {s: measured_split(s, ids[s], texts[s]) for s in SPLITS}
    inputs = {"tokenizer": tokenizer.settings(), "sha256": digests, "oov": oov}
    _write_cache(folder, vocab, splits, inputs, tokenizer)
    return _corpus(vocab, splits, key, {**info, "oov": oov}, tokenizer, from_cache=False)


def file_sha256(path: Path, block: int = 1 << 20) -> str:
    """The file's sha256, read into one reused buffer of `block` bytes."""
    digest, buffer = hashlib.sha256(), bytearray(block)
    with open(path, "rb") as f:
        while n := f.readinto(buffer):
            digest.update(memoryview(buffer)[:n])
    return digest.hexdigest()


def _encode(
    tokenizer: Tokenizer, texts: dict[str, str], sources: dict[str, str], unk_token: str, vocab: Vocabulary | None
) -> tuple[Vocabulary, dict[str, np.ndarray], dict[str, int]]:
    """The vocabulary (`vocab`, or built from train), every split's ids and its OOV count.

    Memory is bounded by the ids, not by the tokens: each split is tokenized `ENCODE_CHUNK`
    characters at a time (cut at line ends, which no tokenizer looks across, and inside a very long
    line where the tokenizer says its tokens stay the same: `_line_chunks`), and each token string
    becomes at once a provisional id, its index among the distinct tokens in order of first
    appearance (a Python string per token would cost ~60 bytes, 3 GB for 50M tokens). Train comes
    first, so the train counts handed to `build_vocab` are in first-seen order, as a Counter of the
    token list would be; the provisional ids are then mapped to the vocabulary's in one lookup.
    """
    provisional: defaultdict[str, int] = defaultdict(itertools.count().__next__)
    first_seen = {}
    for split in SPLITS:
        log.info("tokenizing %s (%s)", split, sources[split])
        chunks = [  # line_ends only when False: a tokenizer of the user's may not take it (it is then not cut)
            tokenizer.provisional_ids(chunk, provisional) if ends else
            tokenizer.provisional_ids(chunk, provisional, line_ends=False)
            for chunk, ends in _line_chunks(texts[split], tokenizer)
        ]
        first_seen[split] = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
        if not len(first_seen[split]):
            raise DataError(
                f"the {split} split ({sources[split]}) has no tokens after tokenization with "
                f"{tokenizer!r}; give it some text, or change the normalization options"
            )
    names = list(provisional)  # provisional id -> token
    if vocab is None:
        train_counts = np.bincount(first_seen["train"], minlength=len(names))
        counts = Counter({names[i]: int(train_counts[i]) for i in np.flatnonzero(train_counts)})
        heldout = {names[i] for i in np.unique(np.concatenate([first_seen["valid"], first_seen["test"]]))}
        vocab = tokenizer.build_vocab(counts, unk_token=unk_token, heldout=heldout)
    index = vocab.index
    to_vocab = np.fromiter((index.get(t, -1) for t in names), dtype=np.int32, count=len(names))
    ids, oov = {}, {}
    for split in SPLITS:
        provisional_ids = first_seen.pop(split)
        mapped = to_vocab[provisional_ids]
        missing = mapped < 0
        oov[split] = int(np.count_nonzero(missing))
        if oov[split] and vocab.unk_id is None:
            unseen = [names[i] for i in provisional_ids[missing]]
            count_oov(vocab, unseen, f"the {split} split ({sources[split]})")  # raises, naming some
        if oov[split]:
            mapped[missing] = vocab.unk_id
        ids[split] = mapped.astype(vocab.dtype, copy=False)
    return vocab, ids, oov


def measured_split(name: str, ids: np.ndarray, text: str) -> Split:
    """The split of `ids`, with the counts of its raw `text` (whole and per line)."""
    chars, words, utf8 = line_measures(text)
    return Split(name, ids, len(text), int(words.sum()), int(utf8.sum()), chars, words, utf8)


def cuts_lines(tokenizer: Tokenizer) -> bool:
    """Whether `tokenizer` can tokenize a piece of a line: its `tokenize` and `provisional_ids` take
    `line_ends` (a subclass of the user's that overrides them without it keeps its lines whole)."""
    return all("line_ends" in inspect.signature(method).parameters
               for method in (tokenizer.tokenize, tokenizer.provisional_ids))


def _line_chunks(text: str, tokenizer: Tokenizer | None = None):
    """`text` in pieces of about ENCODE_CHUNK characters, as (piece, whether it ends a line): each
    ends at a line end (but the last), unless the line is very long (over 2 x ENCODE_CHUNK to the
    next line end: a corpus on a single line). Such a line is cut where `tokenizer.line_cut` says its
    pieces, tokenized apart, give the line's tokens (at whitespace for words and subwords, between
    any two characters for characters); a tokenizer that cannot cut keeps the line whole."""
    start = 0
    while True:
        cut = text.find("\n", start + ENCODE_CHUNK)
        line_end = len(text) if cut < 0 else cut
        if tokenizer is not None and line_end - start > 2 * ENCODE_CHUNK and cuts_lines(tokenizer):
            mid = tokenizer.line_cut(text, start + ENCODE_CHUNK, line_end)  # no line end in between
            if mid > start:
                yield text[start:mid], False
                start = mid
                continue
        if cut < 0 or cut == len(text) - 1:  # the rest (the whole text when it is short, even empty)
            yield text[start:], True
            return
        yield text[start : cut + 1], True
        start = cut + 1


def count_oov(vocab: Vocabulary, tokens: list[str], where: str) -> int:
    """How many of `tokens` the vocabulary lacks; a `DataError` naming some when it has no unknown
    token to map them to."""
    index = vocab.index
    n_oov = len(tokens) - sum(map(index.__contains__, tokens))  # map over a C method: fast
    if n_oov and vocab.unk_id is None:
        unseen = [t for t in tokens if t not in index]
        distinct = list(dict.fromkeys(unseen))
        shown = ", ".join(repr(t) for t in distinct[:10]) + (", ..." if len(distinct) > 10 else "")
        raise DataError(
            f"{where} has {len(unseen)} token(s) ({len(distinct)} distinct) that are not in the "
            f"model's vocabulary, which has no unknown token to map them to (the corpus it was built "
            f"from needed none): {shown}"
        )
    return n_oov


def vocab_digest(vocab: Vocabulary) -> str:
    data = {"tokens": vocab.tokens, "eos": vocab.eos, "unk": vocab.unk}
    return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest()


def cache_key(
    digests: dict[str, str],
    files: CorpusFiles,
    tokenizer: Tokenizer,
    unk_token: str,
    errors: str,
    vocab: Vocabulary | None = None,
) -> str:
    inputs = {
        "format": FORMAT_VERSION,
        "sha256": digests,
        "split_fractions": files.split_fractions,
        "tokenizer": tokenizer.settings(),
        "unk_token": unk_token,
        "encoding_errors": errors,
    }
    if vocab is not None:  # absent otherwise, so the keys of corpora that build theirs stay the same
        inputs["vocab"] = vocab_digest(vocab)
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _corpus(
    vocab: Vocabulary, splits: dict[str, Split], key: str, info: dict, tokenizer: Tokenizer, *,
    from_cache: bool,
) -> CorpusData:
    info = {
        **info,
        "from_cache": from_cache,
        "vocab_size": len(vocab),
        "tokens": {s: len(split) for s, split in splits.items()},
        "n_chars": {s: split.n_chars for s, split in splits.items()},
    }
    oov = info.get("oov")  # None for a cache written before OOV counts were kept
    info["oov_rate"] = None if oov is None else {s: oov[s] / max(len(splits[s]), 1) for s in splits}
    return CorpusData(vocab=vocab, splits=splits, cache_key=key, info=info, tokenizer=tokenizer)


def _split_texts(
    files: CorpusFiles, raw: dict[str, bytes], errors: str, allow_binary: bool = False
) -> tuple[dict[str, str], dict[str, str]]:
    """split -> text, and split -> where it came from (for error messages)."""
    if files.split_fractions is None:
        texts = {s: decode_text(raw[s], files.paths[s], errors=errors, allow_binary=allow_binary) for s in SPLITS}
        return texts, {s: str(files.paths[s]) for s in SPLITS}
    path = files.paths["file"]
    text = decode_text(raw["file"], path, errors=errors, allow_binary=allow_binary)
    lines = text.split("\n")
    ends_with_newline = text.endswith("\n")
    if ends_with_newline:
        lines.pop()
    n_train, n_valid, _ = split_line_counts(len(lines), files.split_fractions)
    bounds = {"train": (0, n_train), "valid": (n_train, n_train + n_valid)}
    bounds["test"] = (n_train + n_valid, len(lines))
    texts = {s: "\n".join(lines[a:b]) + "\n" for s, (a, b) in bounds.items()}
    if not ends_with_newline:
        texts["test"] = texts["test"][:-1]  # keep n_chars summing to the file's characters
    sources = {s: f"{path} lines {a + 1}-{b}" for s, (a, b) in bounds.items()}
    return texts, sources


def _read_cache(
    folder: Path, tokenizer: Tokenizer
) -> tuple[Vocabulary, dict[str, Split], dict[str, int] | None, Tokenizer] | None:
    """The cached vocabulary, splits, OOV counts (None in an older cache) and the tokenizer that
    made them (`tokenizer`, trained from the entry's model if it learns), or None when absent or
    unreadable (then rebuilt)."""
    if not (folder / "meta.json").is_file():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta["format"] != FORMAT_VERSION:
            return None
        vocab = Vocabulary.load(folder / "vocab.json")
        if tokenizer.needs_fit:
            tokenizer = tokenizer.load_model(folder)
            if tokenizer.settings().get("model_sha256") != meta["tokenizer"].get("model_sha256"):
                raise ValueError("tokenizer.json does not match meta.json")
            tokenizer.check_vocab(vocab)
        splits = {}
        for s in SPLITS:
            # Memory-mapped, read-only: pages are read as they are used and shared by every process
            # that maps the same cache, so a 100M-token corpus is never copied to get its ids.
            ids = np.load(folder / f"{s}.npy", mmap_mode="r", allow_pickle=False)
            if ids.shape != (meta["tokens"][s],) or ids.dtype != vocab.dtype:
                raise ValueError(f"{s}.npy does not match meta.json")
            # Ids overwritten in place keep the shape; out of the vocabulary they failed in training
            # ("indices[0,0] = 65535 is not in [0, 10)"). One pass over the map, as training makes.
            if len(ids) and (int(ids.max()) >= len(vocab) or int(ids.min()) < 0):
                raise ValueError(f"{s}.npy holds ids outside the vocabulary of {len(vocab)}")
            lines = np.load(folder / f"{s}.lines.npy", mmap_mode="r", allow_pickle=False)
            if lines.shape != (3, meta["lines"][s]) or lines.dtype != np.int64:
                raise ValueError(f"{s}.lines.npy does not match meta.json")
            counts = (int(meta["n_chars"][s]), int(meta["n_words"][s]), int(meta["n_bytes"][s]))
            splits[s] = Split(s, ids, *counts, *lines)
        oov = {s: int(meta["oov"][s]) for s in SPLITS} if "oov" in meta else None
    except (OSError, EOFError, ValueError, KeyError, TypeError, DataError) as ex:
        log.warning("ignoring the unreadable token-id cache %s (%s); rebuilding it", folder, ex)
        return None
    log.debug("token ids loaded from %s", folder)  # the run's summary line says "(from cache)"
    return vocab, splits, oov, tokenizer


def _write_cache(
    folder: Path, vocab: Vocabulary, splits: dict[str, Split], inputs: dict, tokenizer: Tokenizer
) -> None:
    """Write into a temporary folder, then rename: readers see a complete cache or none."""
    meta = {
        "format": FORMAT_VERSION,
        "tokens": {s: len(split) for s, split in splits.items()},
        "n_chars": {s: split.n_chars for s, split in splits.items()},
        "n_words": {s: split.n_words for s, split in splits.items()},
        "n_bytes": {s: split.n_bytes for s, split in splits.items()},
        "lines": {s: len(split.line_chars) for s, split in splits.items()},
        **inputs,
    }
    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        for s, split in splits.items():
            np.save(tmp / f"{s}.npy", split.ids, allow_pickle=False)
            lines = np.stack([split.line_chars, split.line_words, split.line_bytes])
            np.save(tmp / f"{s}.lines.npy", lines, allow_pickle=False)
        vocab.save(tmp / "vocab.json")
        tokenizer.save_model(tmp)  # nothing for a rule-based tokenizer
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)  # an unreadable earlier cache
        os.rename(tmp, folder)
    except OSError as ex:
        # Another process may have just written the same key; otherwise the disk refused. Either
        # way the ids in hand are good, so the run goes on without caching them.
        if not (folder / "meta.json").is_file():
            log.warning("could not cache token ids in %s: %s", folder, ex)
    finally:
        if tmp is not None and tmp.exists():  # failed or interrupted before the rename
            shutil.rmtree(tmp, ignore_errors=True)


def read_split_texts(dataset_cfg: Any, *, cache_dir: str | Path | None = None) -> dict[str, str]:
    """The raw text of each split of `dataset_cfg` (found, checked and cut as `load_corpus` does),
    for scoring with a model that brings its own tokenizer and vocabulary."""
    errors = dataset_cfg.encoding_errors
    check_encoding_errors(errors)
    files = locate_corpus(dataset_cfg, default_cache_dir(cache_dir))
    raw = {}
    for role, path in files.paths.items():
        raw[role] = path.read_bytes()
        check_sha256(dataset_cfg, files.names[role], path, hashlib.sha256(raw[role]).hexdigest())
    texts, _ = _split_texts(files, raw, errors, dataset_cfg.allow_binary)
    return texts
