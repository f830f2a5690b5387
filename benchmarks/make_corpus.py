r"""A large word-level corpus for the scale benchmarks (>= 50M tokens, > 200k distinct words).

    python benchmarks/make_corpus.py OUT_DIR            # writes OUT_DIR/{train,valid,test}.txt + manifest.json

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
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import re
import sys
import zlib
from collections import Counter
from pathlib import Path

# Large, pure-ish Python trees that lmbench's own dependencies pull in (so they are present wherever
# lmbench is installed); their versions are pinned by .ci/constraints.txt.
PACKAGES = ("sympy", "tensorflow", "pandas", "scipy", "sklearn", "mlflow", "numpy", "keras", "matplotlib",
            "sqlalchemy", "networkx", "pygments", "nltk", "databricks", "pip", "fontTools")
DISTRIBUTIONS = {"sklearn": "scikit-learn", "databricks": "databricks-sdk", "fontTools": "fonttools",
                 "pygments": "Pygments", "sqlalchemy": "SQLAlchemy"}
WORD = re.compile(r"\w+|[^\w\s]")


def site_packages() -> Path:
    import numpy
    return Path(numpy.__file__).resolve().parents[1]


def version(package: str) -> str | None:
    try:
        return importlib.metadata.version(DISTRIBUTIONS.get(package, package))
    except importlib.metadata.PackageNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--vocab", type=int, default=250_000, help="words kept, <unk> included")
    args = parser.parse_args()
    root = site_packages()
    missing = [p for p in PACKAGES if not (root / p).is_dir()]
    if missing:
        sys.exit(f"packages not installed: {missing} (the recipe needs all of them)")
    files = sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py"))
    lines: dict[str, list[list[str]]] = {"train": [], "valid": [], "test": []}
    for path in files:
        rel = path.relative_to(root).as_posix()
        bucket = zlib.crc32(rel.encode()) % 200
        split = "valid" if bucket == 0 else "test" if bucket == 1 else "train"
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        lines[split].extend(ws for ws in map(WORD.findall, text.splitlines()) if ws)
    counts = Counter(w for ws in lines["train"] for w in ws)
    kept = {w for w, _ in counts.most_common(args.vocab - 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    tokens = {}
    for split, rows in lines.items():
        with open(args.out / f"{split}.txt", "w", encoding="utf-8") as out:
            for ws in rows:
                out.write(" ".join(w if w in kept else "<unk>" for w in ws) + "\n")
        tokens[split] = sum(len(ws) + 1 for ws in rows)  # + <eos>
    sha = {s: hashlib.sha256((args.out / f"{s}.txt").read_bytes()).hexdigest() for s in lines}
    manifest = {"packages": {p: version(p) for p in PACKAGES}, "files": len(files), "tokens_with_eos": tokens,
                "train_word_types": len(counts), "vocabulary_with_unk": len(kept) + 1, "sha256": sha}
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    json.dump(manifest, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
