"""A damaged manifest.json or part.json: one line naming the file, that the store is damaged
and what to do, from `ingest info`, `ingest verify`, `ingest convert`, the reader and the
truth reader (`predict evaluate --truth STORE`) alike, never a traceback."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingest.store import Store, StoreError, verify_store
from ingest.store.layout import FORMAT_VERSION, MANIFEST
from ingest.store.truth import TruthError, read_truth
from predict.cli.main import main as predict_main
from tests.ingest.clirun import one_line_error, run
from tests.ingest.test_convert_content import synth_shards


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    return synth_shards(tmp_path_factory.mktemp("src"), shards=2, videos=6, seed=8)


@pytest.fixture(scope="module")
def pristine(sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pristine") / "store"
    assert run("convert", *sources, "--out", out, "--quiet").exit_code == 0
    return out


@pytest.fixture
def store(pristine, tmp_path) -> Path:
    """A fresh copy of the pristine store, at the same depth (its source paths still hold)."""
    out = tmp_path / "store"
    shutil.copytree(pristine, out)
    return out




def _entry_without_counts(m: dict) -> dict:
    del m["parts"][0]["counts"]["frames"]
    return m


def _old_format(m: dict) -> dict:
    return {**m, "format_version": 2}


MANIFESTS = {  # name -> the bytes written as manifest.json, or an edit of the real one
    "garbage": b"\x00\x9fnot json {",
    "list": b"[]",
    "empty object": b"{}",
    "null": b"null",
    "parts not a list": lambda m: {**m, "parts": {"a": 1}},
    "entry not an object": lambda m: {**m, "parts": ["x"]},
    "entry lacks a count": _entry_without_counts,
    "totals lack parts": lambda m: {**m, "totals": {k: v for k, v in m["totals"].items()
                                                    if k != "parts"}},
}
SAYS = {"garbage": "not valid JSON (Expecting value at line 1 column 1)", "list": "holds list, expected an object",
        "empty object": "no field 'format_version'", "null": "holds null",
        "parts not a list": "field 'parts' is not a list",
        "entry not an object": "parts[0]: holds str",
        "entry lacks a count": "parts[0]: field 'counts' lacks the integer 'frames'",
        "totals lack parts": "field 'totals' lacks the integer 'parts'"}


def damage_manifest(store: Path, how) -> Path:
    path = store / MANIFEST
    if callable(how):
        path.write_text(json.dumps(how(json.loads(path.read_text()))))
    else:
        path.write_bytes(how)
    return path


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_damaged_manifest_is_one_line_everywhere(store, name):
    path = damage_manifest(store, MANIFESTS[name])
    for command in ("info", "verify"):
        line = one_line_error(run(command, store))
        assert line.startswith(f"Error: {path}: the store is damaged: {SAYS[name]}"), line
        assert "ingest convert" in line and f"ingest verify {store}" in line
    for reader, error in ((read_truth, TruthError), (Store, StoreError)):
        with pytest.raises(error) as info:
            reader(store)
        assert str(info.value) == line.removeprefix("Error: ")
    # the same line where users meet read_truth: `predict evaluate --truth STORE`
    res = CliRunner().invoke(predict_main, ["evaluate", str(store / "sub.csv"), "--truth",
                                            str(store)])
    assert one_line_error(res) == line


def test_convert_rebuilds_a_damaged_manifest_and_says_so(store, sources):
    want = (store / MANIFEST).read_bytes()
    damage_manifest(store, b"[]")
    res = run("convert", *sources, "--out", store, "--quiet")
    assert res.exit_code == 0, res.output
    assert f"warning: {store / MANIFEST} was damaged (holds list, expected an object); " \
           "rewritten from the parts" in res.output
    assert (store / MANIFEST).read_bytes() == want
    assert verify_store(store) == []
    again = run("convert", *sources, "--out", store, "--quiet")  # nothing to say now
    assert again.exit_code == 0 and "warning" not in again.output


def test_manifest_of_another_format_version(store):
    path = damage_manifest(store, _old_format)
    line = one_line_error(run("info", store))
    assert line == f"Error: {path}: written by store format 2, this is format " \
                   f"{FORMAT_VERSION} (convert the shards into a new store)"


PART_JSONS = {
    "garbage": (b"{\"part\": ", "not valid JSON (Expecting value at line 1 column 10)"),
    "list": (b"[]", "holds list, expected an object"),
    "no counts": (None, "no field 'counts'"),
    "format 2": (None, "written by store format 2 or older, this is format"),
}


def damage_part_json(part: Path, name: str) -> Path:
    path = part / "part.json"
    raw, _ = PART_JSONS[name]
    if raw is None:
        info = json.loads(path.read_text())
        del info["format_version" if name == "format 2" else "counts"]
        raw = json.dumps(info).encode()
    path.write_bytes(raw)
    return path


@pytest.mark.parametrize("name", list(PART_JSONS))
def test_damaged_part_json_of_a_part_being_resumed(store, sources, name):
    (store / MANIFEST).unlink()  # an interrupted conversion: the run resumes from the parts
    part = store / "parts" / sources[0].stem
    path = damage_part_json(part, name)
    line = one_line_error(run("convert", *sources, "--out", store, "--quiet"))
    assert line.startswith(f"Error: {path}: "), line
    assert PART_JSONS[name][1] in line
    assert ("the store is damaged" in line) == (name != "format 2")
    assert line.endswith(f"remove {part} and run `ingest convert` again to convert its shard "
                         "again")
    assert not (store / MANIFEST).exists()
    # the remedy works: without the part, the same command converts it again
    shutil.rmtree(part)
    assert run("convert", *sources, "--out", store, "--quiet").exit_code == 0
    assert verify_store(store) == []


def test_damaged_part_json_of_another_part_stops_the_manifest(store, sources):
    """A part that this run does not convert is still read to build the manifest."""
    part = store / "parts" / sources[1].stem
    path = damage_part_json(part, "list")
    line = one_line_error(run("convert", sources[0], "--out", store, "--quiet"))
    assert line.startswith(f"Error: {path}: the store is damaged: holds list")


def test_verify_names_a_damaged_part_json(store, sources):
    part = store / "parts" / sources[0].stem
    path = damage_part_json(part, "garbage")
    res = run("verify", store)
    assert res.exit_code == 1
    assert f"MISMATCH {sources[0].stem}: {path}: the store is damaged: not valid JSON" \
           in res.output
    assert "Traceback" not in res.output
    assert res.output.strip().endswith(f"Error: {store}: 1 problem(s) found")
