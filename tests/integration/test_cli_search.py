"""`indexer search` through click's CliRunner: order and scores against brute force, output formats,
snippets from the sources, clear errors; and one test with the real default model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import indexer
from indexer.embedders.fake import FakeEmbedder

from helpers import invoke

FAKE = FakeEmbedder(8)


def _docs(n: int) -> dict[str, str]:
    return {f"doc{i:02d}": f"Paragraph one of {i}.\n\nParagraph two says {i * 7 % 11} things."
            for i in range(n)}


@pytest.fixture
def ix(tmp_path: Path, write_jsonl: object) -> tuple[Path, Path, dict[str, str]]:
    docs = _docs(30)
    source = write_jsonl(tmp_path / "docs.jsonl", docs)  # type: ignore[operator]
    r = invoke("sync", source, "--index", tmp_path / "ix", "--model", "fake:8", "-q")
    assert r.exit_code == 0, r.output
    return tmp_path / "ix", source, docs


def _brute_force(index: Path, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
    with indexer.open(index) as idx:
        ids, vecs = idx.vectors()
        scores = FAKE.embed(queries) @ np.asarray(vecs).T
    return [[(ids[i], float(s[i])) for i in np.argsort(-s, kind="stable")[:k]] for s in scores]


def test_json_lines_in_query_order_match_brute_force(ix: tuple[Path, Path, dict[str, str]]) -> None:
    index, _, docs = ix
    queries = [docs["doc04"], "an unrelated query", docs["doc17"]]
    r = invoke("search", index, *queries, "-k", "5", "--json")
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [line["query"] for line in lines] == queries
    for line, want in zip(lines, _brute_force(index, queries, 5), strict=True):
        assert [h["id"] for h in line["hits"]] == [d for d, _ in want]
        np.testing.assert_allclose([h["score"] for h in line["hits"]], [s for _, s in want], rtol=1e-5)
        for h in line["hits"]:
            assert set(h) == {"id", "score", "chunk", "start", "end"}
            assert (h["chunk"], h["start"], h["end"]) == (0, 0, len(docs[h["id"]]))
    assert lines[0]["hits"][0]["id"] == "doc04" and lines[2]["hits"][0]["id"] == "doc17"


def test_queries_file_after_arguments(ix: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    index = ix[0]
    qfile = tmp_path / "q.txt"
    qfile.write_text("first from file\n\n   \nsecond from file\n", encoding="utf-8")
    r = invoke("search", index, "from argument", "--queries", qfile, "--json", "-k", "3")
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    queries = ["from argument", "first from file", "second from file"]
    assert [line["query"] for line in lines] == queries
    want = _brute_force(index, queries, 3)
    assert [[h["id"] for h in line["hits"]] for line in lines] == [[d for d, _ in w] for w in want]
    r = invoke("search", index, "--queries", "-", "--json", input="from stdin\n")
    assert r.exit_code == 0 and json.loads(r.stdout)["query"] == "from stdin"


def test_plain_output_ranks_with_spans_and_no_snippet_without_sources(
        ix: tuple[Path, Path, dict[str, str]]) -> None:
    index, _, docs = ix
    r = invoke("search", index, docs["doc09"], "-k", "4")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "query 1: Paragraph one of 9. Paragraph two says 8 things."
    hit_lines = [line.split() for line in lines if line.startswith("   ")]
    want = _brute_force(index, [docs["doc09"]], 4)[0]
    assert [h[2] for h in hit_lines] == [d for d, _ in want]
    assert [float(h[1]) for h in hit_lines] == pytest.approx([s for _, s in want], abs=1e-4)
    assert hit_lines[0][3] == f"[0:{len(docs['doc09'])}]"
    assert "Paragraph" not in "".join(lines[1:])  # no text: the index keeps none


def test_sources_give_snippets_only_for_the_served_text(ix: tuple[Path, Path, dict[str, str]],
                                                         tmp_path: Path, write_jsonl: object) -> None:
    index, source, docs = ix
    r = invoke("search", index, docs["doc03"], "-k", "2", "--source", source)
    assert r.exit_code == 0, r.output
    assert "      Paragraph one of 3. Paragraph two says 10 things." in r.stdout.splitlines()
    changed = dict(docs, doc03="Another text entirely, not yet synced.")
    later = write_jsonl(tmp_path / "later.jsonl", changed)  # type: ignore[operator]
    r = invoke("search", index, docs["doc03"], "-k", "2", "--source", later)
    assert r.exit_code == 0, r.output
    snippets = [line.strip() for line in r.stdout.splitlines()[1:] if line.startswith("      ")]
    second = _brute_force(index, [docs["doc03"]], 2)[0][1][0]
    assert snippets == [" ".join(docs[second].split())]  # doc03's text changed: span only
    assert "1 hit document(s) not found in the sources with the text the index serves" in r.stderr


@pytest.mark.parametrize(("args", "code", "message"), [
    (["-k", "0", "q"], 2, "0 is not in the range"),
    ([], 2, "give at least one query"),
    (["--queries", "/nonexistent/q.txt"], 2, "cannot read /nonexistent/q.txt"),
    (["  "], 1, "query 1 is empty"),
    (["q", "--source", "/nonexistent.jsonl"], 2, "source /nonexistent.jsonl does not exist"),
])
def test_bad_input_is_a_clear_error(ix: tuple[Path, Path, dict[str, str]], args: list[str], code: int,
                                    message: str) -> None:
    r = invoke("search", ix[0], *args)
    assert r.exit_code == code, r.output
    assert message in r.stderr and "Traceback" not in r.output


def test_empty_or_missing_index(tmp_path: Path, write_jsonl: object) -> None:
    r = invoke("search", tmp_path / "nothing", "q")
    assert r.exit_code == 2 and "no index at" in r.stderr
    source = write_jsonl(tmp_path / "empty.jsonl", {})  # type: ignore[operator]
    assert invoke("sync", source, "--index", tmp_path / "ix", "--model", "fake:8", "-q").exit_code == 0
    r = invoke("search", tmp_path / "ix", "q")
    assert r.exit_code == 1 and "has no embedded documents to search (0 pending)" in r.stderr


def test_missing_model_exits_2(tmp_path: Path, write_jsonl: object) -> None:
    import shutil

    from tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "m")
    source = write_jsonl(tmp_path / "d.jsonl", {"a": "the function", "b": "a value"})  # type: ignore[operator]
    assert invoke("sync", source, "--index", tmp_path / "ix", "--model", model, "-q").exit_code == 0
    shutil.rmtree(tmp_path / "m")
    r = invoke("search", tmp_path / "ix", "function")
    assert r.exit_code == 2 and "cannot load model" in r.stderr


@pytest.mark.model
def test_real_model_finds_a_document_from_its_own_text(tmp_path: Path, write_jsonl: object) -> None:
    docs = {
        "cats": "Cats are small carnivorous mammals often kept as pets; they purr and hunt mice.",
        "rust": "Rust is a systems programming language focused on memory safety without garbage collection.",
        "bread": "Sourdough bread rises with wild yeast and lactic acid bacteria instead of baker's yeast.",
        "tides": "Ocean tides are caused mainly by the gravitational pull of the Moon on the Earth's water.",
        "chess": "In chess, castling moves the king two squares towards a rook, which jumps over it.",
    }
    source = write_jsonl(tmp_path / "d.jsonl", docs)  # type: ignore[operator]
    assert invoke("sync", source, "--index", tmp_path / "ix", "-q").exit_code == 0
    r = invoke("search", tmp_path / "ix", docs["tides"], docs["rust"], "what makes dough rise", "--json")
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert lines[0]["hits"][0]["id"] == "tides" and lines[0]["hits"][0]["score"] == pytest.approx(1, abs=1e-4)
    assert lines[1]["hits"][0]["id"] == "rust" and lines[1]["hits"][0]["score"] == pytest.approx(1, abs=1e-4)
    assert lines[2]["hits"][0]["id"] == "bread"
    assert all(len(line["hits"]) == 5 for line in lines)
    assert "warning" not in r.stderr
    r = invoke("search", tmp_path / "ix", "the tides " * 200, "--json")  # ~400 tokens: over the window
    assert r.exit_code == 0 and json.loads(r.stdout)["hits"][0]["id"] == "tides"
    assert "indexer: warning: query 1 is longer than the 256-token window" in r.stderr


def test_chunked_hits_show_their_passage(tmp_path: Path, write_jsonl: object) -> None:
    paragraphs = [f"Paragraph {p} of the long page talks about topic{p} and nothing else." for p in range(6)]
    docs = {"page": "\n\n".join(paragraphs), "other": "A short unrelated note."}
    source = write_jsonl(tmp_path / "d.jsonl", docs)  # type: ignore[operator]
    indexer.sync(tmp_path / "ix", paths=[str(source)], model="fake:8", chunk_tokens=14)
    r = invoke("search", tmp_path / "ix", paragraphs[3], "-k", "2", "--source", source)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    _, score, doc, span, _, chunk = lines[1].split()
    start, end = (int(x) for x in span.strip("[]").split(":"))
    assert doc == "page" and float(score) == pytest.approx(1.0, abs=1e-4)
    assert docs["page"][start:end] == paragraphs[3] and int(chunk) == 3
    assert lines[2].strip() == paragraphs[3]
