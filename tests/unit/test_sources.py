"""The source registry: one plugin module per source, in step with the schema."""

from __future__ import annotations

import pytest

from alertvision.config import ConfigError, schema, validate_config
from alertvision.data.sources import check_sources, registry, source_input_files, ztf_source


def test_every_schema_source_has_a_plugin_and_a_block():
    props = schema()["properties"]
    assert sorted(registry().ztf) == sorted(props["data"]["properties"]["source"]["enum"])
    assert sorted(registry().ls) == sorted(props["legacysurvey"]["properties"]["source"]["enum"])
    for name in registry().ztf:
        assert name in props["data"]["properties"], f"data.{name}: the schema has no block for source {name!r}"
        assert ztf_source(name).block == f"data.{name}"
    products = set(props["legacysurvey"]["properties"]["product"]["enum"])
    assert set().union(*(s.products for s in registry().ls.values())) == products


def test_unknown_sources_are_named_with_the_known_ones():
    with pytest.raises(ValueError, match="data.source 'ftp' is not one of avro, kowalski, release, synthetic"):
        ztf_source("ftp")


def test_a_source_checks_its_own_block():
    config = validate_config({})
    check_sources(config)  # the embedded default
    config["data"]["source"] = "avro"
    with pytest.raises(ConfigError, match="data.source 'avro' needs data.avro.path"):
        check_sources(config)
    config["data"]["source"], config["legacysurvey"]["product"] = "synthetic", "jpeg"
    with pytest.raises(ConfigError, match="'jpeg' images come from the viewer source only"):
        check_sources(config)


def test_input_files_are_the_existing_files_a_source_reads(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("objectId,label,source_set\n")
    (tmp_path / "packets").mkdir()
    (tmp_path / "packets" / "a.avro").write_bytes(b"")
    config = {"data": {"source": "avro", "avro": {"path": str(tmp_path / "packets"), "labels": str(labels)}}}
    assert source_input_files(config) == sorted([str(tmp_path / "packets" / "a.avro"), str(labels)])
    assert source_input_files({"data": {"source": "synthetic"}}) == []


def test_the_inputs_fingerprint_changes_with_content_or_size_only(tmp_path):
    """The ingest's fingerprint input: rewritten when a file's bytes change whatever its modification time
    (`cp -p` of an older file), not when a file is only touched; each file is read once per change."""
    import os
    import shutil

    from alertvision.data.fingerprint import cache_path, file_digest, update_fingerprint

    a, b, fp = tmp_path / "a.avro", tmp_path / "b.avro", tmp_path / "ztf.inputs.tsv"
    a.write_bytes(b"alpha")
    b.write_bytes(b"beta")
    hashed: list[tuple[int, int]] = []
    assert update_fingerprint([b, a], fp, lambda n, size: hashed.append((n, size)))
    assert hashed == [(2, 9)]
    assert fp.read_text().splitlines()[1:] == [f"{a}\t5\t{file_digest(a)}", f"{b}\t4\t{file_digest(b)}"]
    assert not update_fingerprint([a, b], fp, lambda n, size: hashed.append((n, size))) and len(hashed) == 1
    stamp = fp.stat().st_mtime_ns
    # touched back in time, same bytes: read again (its ctime moved), the fingerprint left as it was
    os.utime(a, (1e9, 1e9))
    assert not update_fingerprint([a, b], fp, lambda n, size: hashed.append((n, size)))
    assert hashed[-1] == (1, 5) and fp.stat().st_mtime_ns == stamp
    # other bytes of the same size, with an older modification time (cp -p)
    older = tmp_path / "older"
    older.write_bytes(b"ALPHA")
    os.utime(older, (1e9, 1e9))
    shutil.copy2(older, a)
    assert a.stat().st_mtime < fp.stat().st_mtime
    assert update_fingerprint([a, b], fp) and file_digest(older) in fp.read_text()
    # a file removed from the inputs
    assert update_fingerprint([a], fp) and str(b) not in fp.read_text() and str(b) not in cache_path(fp).read_text()
