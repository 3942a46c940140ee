"""Reading and writing BanyanDB documents against reading schemacache manifests.

``.venv/bin/python bench/banyandb_docs.py [--rounds N]``

The corpus ``tests/banyandb_corpus`` (every kind, field and enum value) is read
three ways in the same run, each round over every document, and timed:

- baseline: the same objects as schemacache manifests (``kind``/``metadata``/
  ``spec``), validated by :meth:`Resource.parse`;
- read: the BanyanDB documents, parsed by :func:`schemacache.banyandb.from_document`;
- write: the resources written back by :func:`schemacache.banyandb.to_document`.

Prints documents per second and each rate as a ratio of the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from schemacache import banyandb, load_resources  # noqa: E402
from schemacache.model import Resource  # noqa: E402

CORPUS = ROOT / "tests" / "banyandb_corpus"
DEFAULT_ROUNDS = 200
"""Rounds over the whole corpus per measurement."""


def _rate(step: Callable[[], int], rounds: int) -> float:
    """Documents per CPU second of ``step`` (which returns how many it handled), best of 3.

    CPU time of this process, not wall time: the figure then hardly depends on
    what else the shared machine runs.
    """
    best = 0.0
    for _ in range(3):
        start = time.process_time()
        count = sum(step() for _ in range(rounds))
        best = max(best, count / (time.process_time() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help=f"rounds over the corpus per measurement ({DEFAULT_ROUNDS})")
    rounds = parser.parse_args().rounds

    resources = load_resources(CORPUS)
    manifests = [r.to_dict() for r in resources]
    documents = [(json.loads(banyandb.dumps(banyandb.to_document(r))), r.kind)
                 for r in resources]

    def baseline() -> int:
        for doc in manifests:
            Resource.parse(doc)
        return len(manifests)

    def read() -> int:
        for doc, kind in documents:
            banyandb.from_document(doc, kind)
        return len(documents)

    def write() -> int:
        for resource in resources:
            banyandb.to_document(resource)
        return len(resources)

    base = _rate(baseline, rounds)
    print(f"{len(resources)} documents x {rounds} rounds, best of 3")
    print(f"{'manifests validated (baseline)':34} {base:>10,.0f}/s  1.00x")
    for name, step in (("BanyanDB documents read", read), ("BanyanDB documents written", write)):
        rate = _rate(step, rounds)
        print(f"{name:34} {rate:>10,.0f}/s  {rate / base:.2f}x")


if __name__ == "__main__":
    main()
