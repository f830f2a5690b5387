r"""A large word-level corpus for the scale benchmarks (>= 50M tokens, > 200k distinct words).

    python benchmarks/make_corpus.py OUT_DIR            # writes OUT_DIR/{train,valid,test}.txt + manifest.json
        [--vocab 250000] [--extra-packages NAME ...] [--all-installed] [--train-fraction F]

Recipe (deterministic for fixed package versions): the Python source files of a fixed list of
installed packages, in sorted path order; every non-blank line becomes one line of the corpus, cut
into words by the regular expression `\w+|[^\w\s]` (identifiers, numbers, single punctuation marks)
and written space-separated, as lmbench's word tokenizer reads them. A file goes to valid when
crc32(its path relative to site-packages) % 200 == 0, to test when it is 1, to train otherwise, so
whole files never straddle splits. As in Mikolov's PTB, the text is closed over a vocabulary: the
`--vocab` - 1 most frequent training words (ties: first seen) are kept and every other word, in all
three splits, is written as `<unk>`. manifest.json records the package
versions, counts and the sha256 of each split, so that two machines can tell whether they built the
same corpus. The corpus is a benchmark input: never commit it.

Bigger corpora, for the memory benchmark (benchmarks/memory_scale.py): `--extra-packages` adds
installed top-level packages to the fixed list, `--all-installed` takes every top-level package of
site-packages (73M tokens on the machine of experiments/README.md, "Memory against corpus size"), and
`--train-fraction F` keeps only the first F of the training lines (valid and test stay whole) and
closes the text over the `--vocab` words of that shorter train, so that corpora of several sizes
have the same vocabulary size. Without these options the corpus is the one it always was.

Words are held as int32 ids of first appearance, not as a list of strings per line (the default
corpus: 1.4 GB peak instead of 2.3 GB), and the vocabulary is the one
`Counter(train words).most_common` gives.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import itertools
import json
import re
import sys
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

# Large, pure-ish Python trees that lmbench's own dependencies pull in (so they are present wherever
# lmbench is installed); their versions are pinned by .ci/constraints.txt.
PACKAGES = ("sympy", "tensorflow", "pandas", "scipy", "sklearn", "mlflow", "numpy", "keras", "matplotlib",
            "sqlalchemy", "networkx", "pygments", "nltk", "databricks", "pip", "fontTools")
DISTRIBUTIONS = {"sklearn": "scikit-learn", "databricks": "databricks-sdk", "fontTools": "fonttools",
                 "pygments": "Pygments", "sqlalchemy": "SQLAlchemy"}
WORD = re.compile(r"\w+|[^\w\s]")


def site_packages() -> Path:
    return Path(np.__file__).resolve().parents[1]


def installed_packages(root: Path) -> list[str]:
    """Every top-level package folder of site-packages that holds Python source, sorted."""
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and p.name.isidentifier() and p.name != "__pycache__" and any(p.rglob("*.py")))


def version(package: str, distributions: dict[str, list[str]]) -> str | None:
    for name in [DISTRIBUTIONS.get(package, package), *distributions.get(package, [])]:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


def read_words(files: list[Path], root: Path):
    """split -> (int32 word ids of every kept line, one after the other; each line's word count),
    and id -> word. Ids number words in order of first appearance over all files."""
    number: defaultdict[str, int] = defaultdict(itertools.count().__next__)
    ids: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
    lengths: dict[str, list[np.ndarray]] = {"train": [], "valid": [], "test": []}
    for path in files:
        rel = path.relative_to(root).as_posix()
        bucket = zlib.crc32(rel.encode()) % 200
        split = "valid" if bucket == 0 else "test" if bucket == 1 else "train"
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        rows = [ws for ws in map(WORD.findall, text.splitlines()) if ws]
        ids[split].append(np.fromiter(map(number.__getitem__, itertools.chain.from_iterable(rows)), np.int32))
        lengths[split].append(np.fromiter(map(len, rows), np.int64, len(rows)))
    empty = np.zeros(0, np.int32), np.zeros(0, np.int64)
    joined = {s: (np.concatenate([empty[0], *ids[s]]), np.concatenate([empty[1], *lengths[s]])) for s in ids}
    return joined, list(number)


def most_common(train_ids: np.ndarray, n: int, n_words: int) -> np.ndarray:
    """Ids of the `n` most frequent words of `train_ids`, ties broken by first appearance in train:
    `Counter(train words).most_common(n)`, whose ties keep the Counter's (first-seen) order."""
    counts = np.bincount(train_ids, minlength=n_words)
    seen, first = np.unique(train_ids, return_index=True)
    in_train = seen[np.argsort(first, kind="stable")]  # train's words in order of first appearance
    return in_train[np.argsort(-counts[in_train], kind="stable")[:n]]


def write_split(path: Path, ids: np.ndarray, lengths: np.ndarray, words: list[str], block: int = 1 << 16) -> None:
    """One line per entry of `lengths`: its words, space-separated (in blocks of `block` lines)."""
    ends = np.cumsum(lengths)
    with open(path, "w", encoding="utf-8") as out:
        for first in range(0, len(lengths), block):
            start = int(ends[first - 1]) if first else 0
            cuts = ends[first : first + block] - start
            chunk = ids[start : int(cuts[-1]) + start].tolist()
            out.writelines(" ".join(map(words.__getitem__, chunk[a:b])) + "\n"
                           for a, b in zip(itertools.chain([0], cuts[:-1].tolist()), cuts.tolist()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--vocab", type=int, default=250_000, help="words kept, <unk> included")
    parser.add_argument("--extra-packages", nargs="+", default=[], metavar="NAME",
                        help="installed top-level packages added to the fixed list")
    parser.add_argument("--all-installed", action="store_true",
                        help="every top-level package of site-packages (the fixed list included)")
    parser.add_argument("--train-fraction", type=float, default=1.0,
                        help="keep the first this share of the training lines (vocabulary from them)")
    args = parser.parse_args()
    if not 0 < args.train_fraction <= 1:
        sys.exit(f"--train-fraction must be in (0, 1], got {args.train_fraction}")
    root = site_packages()
    packages = list(PACKAGES) + [p for p in args.extra_packages if p not in PACKAGES]
    if args.all_installed:
        packages += [p for p in installed_packages(root) if p not in packages]
    missing = [p for p in packages if not (root / p).is_dir()]
    if missing:
        sys.exit(f"packages not installed: {missing} (the recipe needs all of them)")
    files = sorted(p for pkg in packages for p in (root / pkg).rglob("*.py"))
    splits, words = read_words(files, root)
    if args.train_fraction < 1:
        ids, lengths = splits["train"]
        lengths = lengths[: int(len(lengths) * args.train_fraction)]
        splits["train"] = ids[: int(lengths.sum())], lengths
    unk = len(words)
    words.append("<unk>")
    to_written = np.full(len(words), unk, np.int32)  # a word not kept is written as <unk>
    kept = most_common(splits["train"][0], args.vocab - 1, len(words))
    to_written[kept] = kept
    args.out.mkdir(parents=True, exist_ok=True)
    tokens = {}
    for split, (ids, lengths) in splits.items():
        write_split(args.out / f"{split}.txt", to_written[ids], lengths, words)
        tokens[split] = int(len(ids) + len(lengths))  # + <eos>
    sha = {s: hashlib.sha256((args.out / f"{s}.txt").read_bytes()).hexdigest() for s in splits}
    distributions = importlib.metadata.packages_distributions()
    manifest = {"packages": {p: version(p, distributions) for p in packages}, "files": len(files),
                "tokens_with_eos": tokens, "train_word_types": int(len(np.unique(splits["train"][0]))),
                "vocabulary_with_unk": len(kept) + 1, "sha256": sha}
    if args.train_fraction < 1:
        manifest["train_fraction"] = args.train_fraction
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    json.dump(manifest, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
