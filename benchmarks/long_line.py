"""Peak memory of tokenizing a corpus written on a single line (no line ends at all).

    python benchmarks/long_line.py OUT_DIR [--mb 50] [--tokenizer word|char]

Writes a train split of --mb MB of words on one line (valid and test: a few lines), then, in a
fresh process, loads it with lmbench's pipeline (`load_corpus`, no cache) and reports the process's
peak resident memory before and after, and their difference against the file's size. Before
mid-line cuts, a 50 MB line was one encoding chunk, and the word tokenizer held every token
string of it at once (+788 MB).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

MEASURE = """
import json, resource, sys, time
from pathlib import Path
from omegaconf import OmegaConf
from lmbench.config import DatasetConfig
from lmbench.data.pipeline import load_corpus
from lmbench.data.tokenizers import CharTokenizer, WordTokenizer
folder = Path(sys.argv[1])
cfg = OmegaConf.merge(OmegaConf.structured(DatasetConfig), {"name": "long_line", **{
    s: str(folder / f"{s}.txt") for s in ("train", "valid", "test")}})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
data = load_corpus(cfg, {"word": WordTokenizer, "char": CharTokenizer}[sys.argv[2]](), cache_dir=folder / "cache")
print(json.dumps({"before_mb": before / 1024, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.monotonic() - started, "tokens": int(len(data.splits["train"].ids)),
                  "vocab": len(data.vocab)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--tokenizer", default="word", choices=["word", "char"])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train = args.out / "train.txt"
    size = int(args.mb * 1e6)
    if not train.exists() or abs(train.stat().st_size - size) > 100:
        rng = random.Random(0)
        words = [f"w{i}" for i in range(20_000)]
        parts, total = [], 0
        while total < size:
            word = rng.choice(words)
            parts.append(word)
            total += len(word) + 1
        train.write_text(" ".join(parts)[:size])  # one line, no line end
        for split in ("valid", "test"):
            (args.out / f"{split}.txt").write_text(" ".join(parts[:2000]) + "\n")
    for cache in (args.out / "cache").glob("**/*"):
        if cache.is_file():
            cache.unlink()
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(args.out), args.tokenizer], capture_output=True,
                          text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    added = result["peak_mb"] - result["before_mb"]
    print(json.dumps({**result, "file_mb": size / 1e6, "added_mb": round(added, 1),
                      "added_per_file_mb": round(added / (size / 1e6), 2)}))


if __name__ == "__main__":
    main()
