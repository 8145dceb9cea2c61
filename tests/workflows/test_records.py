"""Typed records: JSON round trips, old files, newer schema versions, bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lmc.errors import LmcError
from lmc.workflows.records import (
    RECORDS,
    SCHEMA_VERSION,
    InterpolationRecord,
    load_record,
    record_from_json,
)

FIGURES = Path(__file__).resolve().parents[2] / "figures"


def interpolation() -> InterpolationRecord:
    return InterpolationRecord(
        a="a.npz", b="b.npz", model={"name": "mlp"}, data="mnist1d", bn="none",
        examples={"test": 4}, alphas=[0.0, 0.5, 1.0],
        curves={"test": {"loss": [0.1, 0.5, 0.2], "error": [0.0, 0.25, 0.0]}},
        barriers={"test": {"error": {"mean": 0.25, "chord": 0.25, "midpoint": 0.25}}})


def test_round_trip_keeps_every_key_and_drops_unset_optional_fields(tmp_path):
    record = interpolation()
    path = record.save(tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["kind"] == "interpolation" and data["schema_version"] == SCHEMA_VERSION
    assert "layerwise" not in data  # optional and unset
    back = load_record(path)
    assert isinstance(back, InterpolationRecord) and back == record
    assert back.to_json() == data


def test_unknown_keys_survive_a_round_trip():
    data = {**interpolation().to_json(), "note": "annotated by a study"}
    back = record_from_json(data)
    assert back.extra == {"note": "annotated by a study"}
    assert back.to_json() == data


def test_old_files_without_a_version_load():
    data = interpolation().to_json()
    del data["schema_version"]
    assert record_from_json(data) == interpolation()


def test_a_newer_schema_version_is_refused_by_name():
    data = {**interpolation().to_json(), "schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(LmcError, match=f"schema version {SCHEMA_VERSION + 1}.*up to "
                                       f"{SCHEMA_VERSION}"):
        record_from_json(data)


def test_missing_fields_and_unknown_kinds_are_named(tmp_path):
    data = interpolation().to_json()
    del data["curves"]
    with pytest.raises(LmcError, match="lacks curves"):
        record_from_json(data)
    with pytest.raises(LmcError, match="unknown kind 'nonsense'; valid kinds: .*interpolation"):
        record_from_json({"kind": "nonsense"})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LmcError, match="bad.json is not valid JSON"):
        load_record(bad)


def test_the_studies_result_files_still_load():
    paths = [p for p in sorted(FIGURES.glob("*.json"))
             if json.loads(p.read_text()).get("kind") in RECORDS]
    assert paths, "the figures folder holds result files of record kinds"
    for path in paths:
        record = load_record(path)
        stored, out = json.loads(path.read_text()), record.to_json()
        # an optional field added since the file was written loads as its default
        defaults = {f.name: f.default for f in dataclasses.fields(record)}
        added = {k: out[k] for k in out.keys() - stored.keys() - {"schema_version"}}
        assert all(defaults.get(k, dataclasses.MISSING) == v for k, v in added.items()), added
        assert out | {"schema_version": 1} == stored | added | {"schema_version": 1}
