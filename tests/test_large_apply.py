"""Large manifests: parsed on several processes yet read exactly as one process
reads them, errors named as one process names them, and applied end to end
all or nothing (a bad document late in the file writes nothing)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from schemacache import ValidationError, load_resources
from schemacache.documents import MAX_DOCUMENT_BYTES, parse_documents
from schemacache.manifest import PARALLEL_MIN_BYTES, encode, load_encoded, parse_manifest
from service_helpers import Proc, run_cli

COUNT = 2_500
GROUP = """kind: group
metadata: {name: bulk}
spec:
  catalog: MEASURE
  resource_opts: {shard_num: 1, segment_interval: {unit: DAY, num: 1}, ttl: {unit: DAY, num: 7}}
"""
MEASURE = """kind: measure
metadata:
  group: {group}
  name: m{i}
spec:
  tag_families:
  - name: default
    tags:
    - name: entity_id
      type: STRING
    - name: service
      type: {tag_type}
  fields:
  - name: value
    field_type: INT
    compression_method: ZSTD
  entity:
    tag_names:
    - entity_id
"""

needs_processes = pytest.mark.skipif((os.cpu_count() or 1) < 2,
                                     reason="parsing on several processes needs 2 CPUs")


def manifest(bad_at: int | None = None, group: str = "bulk", tag_type: str = "STRING") -> str:
    """The group and COUNT measures; document ``bad_at`` (1-based) gets ``group``
    and ``tag_type``."""
    docs = [GROUP]
    for i in range(COUNT):
        bad = len(docs) + 1 == bad_at
        docs.append(MEASURE.format(i=i, group=group if bad else "bulk",
                                   tag_type=tag_type if bad else "STRING"))
    return "---\n".join(docs)


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "big.yaml"
    path.write_text(manifest())
    assert path.stat().st_size > PARALLEL_MIN_BYTES
    return path


@needs_processes
def test_large_manifest_reads_as_one_process_reads_it(big: Path) -> None:
    alone = parse_manifest(big.read_text())
    assert len(alone) == COUNT + 1
    assert load_resources(big) == alone
    assert load_encoded(big) == encode(alone)


@needs_processes
@pytest.mark.parametrize("loader", [load_resources, load_encoded])
def test_error_late_in_a_large_manifest_names_file_document_and_field(
        tmp_path: Path, loader: object) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(manifest(bad_at=2_000, tag_type="TEXT"))
    with pytest.raises(ValidationError) as caught:
        loader(path)  # type: ignore[operator]
    message = str(caught.value)
    assert str(path) in message and "document 2000" in message, message
    assert "spec.tag_families[0].tags[1].type" in message, message


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    proc = Proc(["serve", "--registry", f"sqlite:///{tmp_path / 'registry.db'}",
                 "--listen", "127.0.0.1:0"], cwd=tmp_path)
    url = proc.wait_url()
    try:
        yield url
    finally:
        assert proc.stop() == 0, proc.output


@needs_processes
def test_large_apply_end_to_end_all_or_nothing(server: str, tmp_path: Path, big: Path) -> None:
    dangling = tmp_path / "dangling.yaml"
    dangling.write_text(manifest(bad_at=2_400, group="missing"))
    r = run_cli("apply", "-f", str(dangling), server=server)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "document 2400" in r.stderr and "group/missing" in r.stderr, r.stderr
    assert httpx.get(f"{server}/v1/revision").json()["revision"] == 0, "nothing written"

    r = run_cli("apply", "-f", str(big), server=server)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == COUNT + 1 and all(line.endswith(" created") for line in lines)
    assert httpx.get(f"{server}/v1/revision").json()["revision"] == COUNT + 1
    r = run_cli("apply", "-f", str(big), server=server)
    assert r.returncode == 0, r.stderr
    assert all(line.endswith(" unchanged") for line in r.stdout.splitlines())


def test_large_json_list_sizes_each_document_by_its_own_text() -> None:
    """A JSON list over 1 MiB is read item by item: a document over the limit is
    named by its number, and text that is not one JSON list gets the JSON
    decoder's own error."""
    small = json.dumps(yaml.safe_load(GROUP))
    huge = small.replace('"name": "bulk"', '"name": "bulk", "junk": "' + "x" * 1_100_000 + '"')
    docs = [small] * 3 + [huge]
    with pytest.raises(ValidationError, match=r"document 4\b.*too large|too large.*document 4"):
        parse_documents(" [ " + " ,\n".join(docs) + " ] ")
    fine = [json.loads(small)] * 6_000
    text = json.dumps(fine)
    assert len(text) > MAX_DOCUMENT_BYTES
    assert parse_documents(text) == fine
    assert parse_documents(text.replace("[", " [\n", 1) + "\n") == fine
    for broken, reason in ((text[:-1], "invalid JSON"), (text + " []", "invalid JSON"),
                           (text.replace("}, {", "} {", 1), "invalid JSON")):
        with pytest.raises(ValidationError, match=reason):
            parse_documents(broken)
