"""`xprospect prepare`: records, manifest, splits, resume after a kill (the journal), failures and
their retry, changed inputs, the lock, overwrite."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from xprospect.cli import main
from xprospect.data import parse_case
from xprospect.data.prepare import (
    CaseSpec,
    PrepareConfig,
    assign_splits,
    prepare_dataset,
    sha256_paths,
)
from xprospect.errors import ConfigError, OutputExistsError
from xprospect.phantoms import chest_phantom
from xprospect.preprocessing import ct_preprocessing
from xprospect.projection import render_drr_batch

CFG = PrepareConfig(size=32, geometry="parallel", shard_size=2, val_fraction=0.2, test_fraction=0.2)


def _records(path):
    return [parse_case(r) for r in tf.data.TFRecordDataset(str(path))]


def _all_files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_phantom_dataset_records_match_an_independent_rebuild(tmp_path):
    out = tmp_path / "ds"
    result = prepare_dataset([], out, CFG, phantoms=5, progress=False)
    assert sorted(result.written) == [f"phantom-{i:05d}" for i in range(5)] and not result.failed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["size"] == 32 and manifest["config"]["spacing_mm"] == [10.0] * 3
    splits = {c["split"] for c in manifest["cases"].values()}
    assert splits == {"train", "val", "test"}
    assert json.loads((out / "failures.json").read_text()) == []
    case = manifest["cases"]["phantom-00003"]
    rec = next(r for r in _records(out / case["shard"]) if r["case_id"] == b"phantom-00003")
    expected = ct_preprocessing(size=32, fov_mm=320.0)(
        chest_phantom(32, seed=3, spacing_mm=10.0).volume
    )
    np.testing.assert_array_equal(rec["volume"].numpy(), np.rint(expected.array))
    drrs = render_drr_batch(np.rint(expected.array)[None], 10.0, "parallel", size=32).numpy()[0]
    np.testing.assert_allclose(rec["frontal"].numpy(), drrs[0], rtol=2e-3, atol=1e-3)
    np.testing.assert_allclose(rec["lateral"].numpy(), drrs[1], rtol=2e-3, atol=1e-3)
    assert not [n for n in _all_files(out) if "tmp" in n]


def test_resume_after_kill_skips_done_shards_and_leaves_no_partial_shard(tmp_path):
    out = tmp_path / "ds"
    calls = []

    def kill_after_first(name):
        calls.append(name)
        raise KeyboardInterrupt  # the user pressing Ctrl-C right after the first shard

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset([], out, CFG, phantoms=5, progress=False, on_shard=kill_after_first)
    first = calls[0]
    done = json.loads((out / "manifest.json").read_text())["shards"]
    assert list(done) == [first]

    # A kill in the middle of writing the next shard: nothing half-written may remain.
    real_write = tf.io.TFRecordWriter.write

    def crash_on_write(self, record):
        raise OSError("disk vanished")

    tf.io.TFRecordWriter.write = crash_on_write
    try:
        with pytest.raises(OSError):
            prepare_dataset([], out, CFG, phantoms=5, progress=False)
    finally:
        tf.io.TFRecordWriter.write = real_write
    assert [n for n in _all_files(out) if n.endswith(".tfrecord")] == [f"{first}.tfrecord"]
    assert not [n for n in _all_files(out) if "tmp" in n]

    resumed = prepare_dataset([], out, CFG, phantoms=5, progress=False)
    prepare_dataset([], tmp_path / "fresh", CFG, phantoms=5, progress=False)
    assert len(resumed.skipped) == 2 and len(resumed.written) == 3
    assert _all_files(out) == _all_files(tmp_path / "fresh")
    for name in _all_files(out):
        if name.endswith(".tfrecord"):
            assert (out / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name
    again = prepare_dataset([], out, CFG, phantoms=5, progress=False)
    assert again.written == [] and len(again.skipped) == 5


def test_broken_input_is_listed_in_failures_json(tmp_path, capsys):
    bad = np.zeros((8, 8, 8), np.float32)
    bad[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(tmp_path / "broken.nii.gz"))
    out = tmp_path / "ds"
    code = main(
        [
            "prepare",
            str(tmp_path / "broken.nii.gz"),
            "--phantoms",
            "2",
            "--size",
            "32",
            "--geometry",
            "parallel",
            "--output",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 4  # an input error: the case that failed is named, all are in failures.json
    assert err[-1].startswith("xprospect: error: 1 case(s) failed") and "broken.nii.gz" in err[-1]
    failures = json.loads((out / "failures.json").read_text())
    assert [f["case_id"] for f in failures] == ["broken"]
    assert "NaN or Inf" in failures[0]["error"] and "broken.nii.gz" in failures[0]["source"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["cases"]) == ["phantom-00000", "phantom-00001"]
    assert "1 failed" in captured.out


def test_existing_dataset_is_never_overwritten_without_flag(tmp_path):
    out = tmp_path / "ds"
    prepare_dataset([], out, CFG, phantoms=2, progress=False)
    before = {n: (out / n).read_bytes() for n in _all_files(out)}
    other = PrepareConfig(size=32, geometry="xprospect_mean", shard_size=2)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        prepare_dataset([], out, other, phantoms=2, progress=False)
    assert {n: (out / n).read_bytes() for n in _all_files(out)} == before
    prepare_dataset([], out, other, phantoms=2, progress=False, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["config"]["geometry"] == "xprospect_mean"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(OutputExistsError, match="not an xprospect dataset"):
        prepare_dataset([], tmp_path / "mine", CFG, phantoms=1, progress=False)


def test_splits_are_patient_level_and_follow_a_given_list(tmp_path):
    cases = [CaseSpec(f"p{p}_s{s}", "nifti", "x", f"p{p}") for p in range(20) for s in range(3)]
    splits = assign_splits(cases, val_fraction=0.2, test_fraction=0.2, seed=1)
    for p in range(20):
        assert len({splits[f"p{p}_s{s}"] for s in range(3)}) == 1
    counts = {k: list(splits.values()).count(k) // 3 for k in ("train", "val", "test")}
    assert counts == {"train": 12, "val": 4, "test": 4}
    assert splits == assign_splits(cases, val_fraction=0.2, test_fraction=0.2, seed=1)
    listing = tmp_path / "splits.csv"
    listing.write_text("id,split\np3,test\np4_s1,val\n")
    given = assign_splits(cases, val_fraction=0, test_fraction=0, seed=0, split_file=listing)
    assert {given[f"p3_s{s}"] for s in range(3)} == {"test"} and given["p4_s1"] == "val"
    assert given["p4_s0"] == "train"


def test_parallel_workers_give_the_same_records(tmp_path):
    one = prepare_dataset([], tmp_path / "one", CFG, phantoms=2, progress=False, workers=1)
    two = prepare_dataset([], tmp_path / "two", CFG, phantoms=2, progress=False, workers=2)
    assert sorted(one.written) == sorted(two.written)
    for name in _all_files(tmp_path / "one"):
        if name.endswith(".tfrecord"):
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


@pytest.mark.realdata
def test_real_ct_builds_with_heart_on_the_image_right(tmp_path, sample_ct_paths):
    out = tmp_path / "ds"
    cfg = PrepareConfig(size=64, geometry="x2ct", shard_size=4, val_fraction=0, test_fraction=0)
    result = prepare_dataset([sample_ct_paths.ct_path], out, cfg, progress=False)
    assert result.written == ["cxr"]
    rec = _records(out / "train-00000.tfrecord")[0]
    vol = rec["volume"].numpy()
    # Scanner padding (-2048 outside the reconstruction circle) is clamped to air.
    assert vol.shape == (64, 64, 64) and vol.min() == -1024 and 1000 < vol.max() <= 3071
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cases"]["cxr"]["original_shape"] == [512, 512, 133]
    frontal = rec["frontal"].numpy()
    # The heart (dense, patient's left) makes the image's right half of the mid-chest denser.
    mid = frontal[24:44]
    assert mid[:, 32:].mean() > mid[:, :32].mean()


def test_discovers_dicom_series_x2ct_cases_and_nifti_with_patient_ids(tmp_path, phantom):
    from xprospect.data.prepare import discover_cases
    from xprospect.io import write_nifti, write_x2ct_case
    from xprospect.io.dicom import write_dicom_series

    root = tmp_path / "dicom_root"
    write_dicom_series(phantom.volume, root / "patA" / "s1", patient={"PatientID": "PAT-A"})
    write_dicom_series(phantom.volume, root / "patA" / "s2", patient={"PatientID": "PAT-A"})
    flat = np.zeros((8, 8), np.float32)
    write_x2ct_case(tmp_path / "x2ct" / "LIDC-IDRI-0007.2000.1", phantom.volume, flat, flat)
    write_x2ct_case(tmp_path / "x2ct" / "LIDC-IDRI-0007.2001.2", phantom.volume, flat, flat)
    nifti = write_nifti(phantom.volume, tmp_path / "ct_b.nii.gz")
    cases = discover_cases([root, tmp_path / "x2ct", nifti], phantoms=1)
    kinds = sorted((c.kind, c.patient_id) for c in cases)
    assert kinds == [
        ("dicom", "PAT-A"),
        ("dicom", "PAT-A"),
        ("nifti", "ct_b"),
        ("phantom", "phantom-00000"),
        ("x2ct", "LIDC-IDRI-0007"),
        ("x2ct", "LIDC-IDRI-0007"),
    ]
    assert len({c.case_id for c in cases}) == 6
    splits = assign_splits(cases, val_fraction=0.3, test_fraction=0.3, seed=0)
    for pid in ("PAT-A", "LIDC-IDRI-0007"):
        assert len({splits[c.case_id] for c in cases if c.patient_id == pid}) == 1
    out = tmp_path / "ds"
    cfg = PrepareConfig(size=32, geometry="parallel", val_fraction=0, test_fraction=0)
    result = prepare_dataset([root, tmp_path / "x2ct"], out, cfg, progress=False)
    assert len(result.written) == 4 and not result.failed
    # A rerun finds every series and case file unchanged: nothing is read again.
    again = prepare_dataset([root, tmp_path / "x2ct"], out, cfg, progress=False)
    assert again.written == [] and again.reprocessed == [] and len(again.skipped) == 4
    manifest = json.loads((out / "manifest.json").read_text())
    dicom = [c for c in manifest["cases"].values() if c["kind"] == "dicom"]
    # Each series is hashed on its own files: the two identical-pixel series differ in UIDs.
    assert len({c["source_sha256"] for c in dicom}) == 2
    series = {c["series_uid"]: c["source_sha256"] for c in dicom}
    from xprospect.data.prepare import sha256_paths
    from xprospect.io.dicom import list_dicom_series

    for s in list_dicom_series(root):
        assert series[s.uid] == sha256_paths(sorted(s.files))


# === Journal, resume from the first moment, retries, changed inputs, lock ===


def _dataset_bytes(folder):
    """Every file of a dataset but the lock, by name (the journal holds machine-local stats)."""
    skip = {"journal.json", ".xprospect.lock"}
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name not in skip}


def test_killed_before_the_first_manifest_resumes_to_the_same_dataset(tmp_path, monkeypatch):
    out = tmp_path / "ds"

    def crash(self, record):
        raise KeyboardInterrupt

    monkeypatch.setattr(tf.io.TFRecordWriter, "write", crash)
    with pytest.raises(KeyboardInterrupt, match="0 of 4 shard"):
        prepare_dataset([], out, CFG, phantoms=5, progress=False)
    monkeypatch.undo()
    # Only the journal (and the lock) is there: no manifest, no shard, no temporary file.
    assert _all_files(out) == [".xprospect.lock", "journal.json"]
    journal = json.loads((out / "journal.json").read_text())
    assert journal["shards"] == {} and len(journal["case_ids"]) == 5
    resumed = prepare_dataset([], out, CFG, phantoms=5, progress=False)
    assert len(resumed.written) == 5 and not resumed.skipped
    prepare_dataset([], tmp_path / "fresh", CFG, phantoms=5, progress=False)
    assert _dataset_bytes(out) == _dataset_bytes(tmp_path / "fresh")


def test_manifest_is_repaired_from_the_journal(tmp_path):
    out = tmp_path / "ds"
    prepare_dataset([], out, CFG, phantoms=3, progress=False)
    before = _dataset_bytes(out)
    (out / "manifest.json").unlink()  # a kill between the journal and the manifest
    again = prepare_dataset([], out, CFG, phantoms=3, progress=False)
    assert again.written == [] and _dataset_bytes(out) == before


def _nifti(path, value, nan=False):
    rng = np.random.default_rng(int(value))
    vol = (rng.normal(0, 200, (12, 12, 12)) + value).astype(np.float32)
    if nan:
        vol[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(vol, np.diag([20.0, 20.0, 20.0, 1.0])), str(path))
    return path


def test_fixed_input_is_rebuilt_by_a_plain_rerun(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        _nifti(src / f"ct{i}.nii.gz", 100 * i)
    _nifti(src / "ct1.nii.gz", 100, nan=True)
    cfg = PrepareConfig(size=16, geometry="parallel", shard_size=2, val_fraction=0, test_fraction=0)
    out = tmp_path / "ds"
    first = prepare_dataset([src], out, cfg, progress=False)
    assert [f["case_id"] for f in first.failed] == ["ct1"]
    # Nothing changed: nothing is read again.
    same = prepare_dataset([src], out, cfg, progress=False)
    assert same.written == [] and same.failed == [] and same.reprocessed == []
    _nifti(src / "ct1.nii.gz", 100)  # the user fixes the file
    fixed = prepare_dataset([src], out, cfg, progress=False)
    assert fixed.reprocessed == ["ct0", "ct1"] and sorted(fixed.written) == ["ct0", "ct1"]
    assert fixed.failed == [] and json.loads((out / "failures.json").read_text()) == []
    prepare_dataset([src], tmp_path / "fresh", cfg, progress=False)
    assert _dataset_bytes(out) == _dataset_bytes(tmp_path / "fresh")
    # A done case whose input changes is rebuilt too (touched only: same bytes, not rebuilt).
    os.utime(src / "ct2.nii.gz")
    assert prepare_dataset([src], out, cfg, progress=False).reprocessed == []
    _nifti(src / "ct2.nii.gz", 250)
    changed = prepare_dataset([src], out, cfg, progress=False)
    assert changed.reprocessed == ["ct2"] and changed.written == ["ct2"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["cases"]["ct2"]["source_sha256"] == sha256_paths([src / "ct2.nii.gz"])


def test_retry_failed_reads_a_failed_case_again(tmp_path, monkeypatch):
    import xprospect.data.prepare as prepare_module

    out = tmp_path / "ds"
    real = prepare_module.load_case

    def flaky(spec, size, fov_mm, **kwargs):
        if spec.case_id == "phantom-00002":
            raise MemoryError("out of memory")  # e.g. another job held the memory
        return real(spec, size, fov_mm, **kwargs)

    monkeypatch.setattr(prepare_module, "load_case", flaky)
    first = prepare_dataset([], out, CFG, phantoms=4, progress=False)
    assert [f["case_id"] for f in first.failed] == ["phantom-00002"]
    monkeypatch.undo()
    plain = prepare_dataset([], out, CFG, phantoms=4, progress=False)
    assert plain.written == [] and plain.reprocessed == []  # the input did not change
    assert [f["case_id"] for f in json.loads((out / "failures.json").read_text())] == [
        "phantom-00002"
    ]
    retried = prepare_dataset([], out, CFG, phantoms=4, progress=False, retry_failed=True)
    assert "phantom-00002" in retried.written and not retried.failed
    prepare_dataset([], tmp_path / "fresh", CFG, phantoms=4, progress=False)
    assert _dataset_bytes(out) == _dataset_bytes(tmp_path / "fresh")


def test_cli_retry_failed_flag(tmp_path, capsys):
    bad = _nifti(tmp_path / "bad.nii.gz", 0, nan=True)
    args = ["prepare", str(bad), "--phantoms", "1", "--size", "16", "--geometry", "parallel"]
    args += ["--val-fraction", "0", "--test-fraction", "0", "--output", str(tmp_path / "ds")]
    assert main(args) != 0
    assert main([*args, "--retry-failed"]) != 0  # still broken: failed again
    assert "1 failed" in capsys.readouterr().out
    _nifti(bad, 0)
    assert main(args) == 0
    assert "(2 built again)" in capsys.readouterr().out


def test_a_locked_dataset_is_refused_naming_the_holder(tmp_path):
    import socket

    from xprospect.errors import LockedError
    from xprospect.utils import folder_lock

    out = tmp_path / "ds"
    with folder_lock(out), pytest.raises(LockedError) as err:
        prepare_dataset([], out, CFG, phantoms=1, progress=False)
    message = str(err.value)
    assert f"PID {os.getpid()}" in message and socket.gethostname() in message
    assert str(out) in message and "\n" not in message
    # Released: the same command now works.
    assert prepare_dataset([], out, CFG, phantoms=1, progress=False).written == ["phantom-00000"]


def test_a_file_or_a_folder_of_other_files_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="is a file"):
        prepare_dataset([], tmp_path / "file", CFG, phantoms=1, progress=False)
    # A folder holding only a lock and temporaries (a run killed at its very start) is ours.
    out = tmp_path / "ds"
    out.mkdir()
    (out / ".xprospect.lock").write_text("")
    (out / ".journal.json.p1h00000000.abcdefgh.tmp").write_text("")
    assert len(prepare_dataset([], out, CFG, phantoms=1, progress=False).written) == 1


def test_scan_mask_is_stored_for_a_short_scan_and_all_ones_for_phantoms(tmp_path):
    from xprospect.preprocessing import scan_mask

    rng = np.random.default_rng(5)
    hu = rng.normal(0.0, 100.0, (16, 16, 10)).astype(np.float32)
    hu[:3, :3, :] = -2048.0  # the scanner's padding outside its reconstruction circle
    src = tmp_path / "short.nii.gz"
    affine = np.diag([20.0, 20.0, 15.0, 1.0])  # 320 x 320 x 150 mm: short in z
    nib.save(nib.Nifti1Image(hu, affine), str(src))
    out = tmp_path / "ds"
    cfg = PrepareConfig(size=32, geometry="parallel", shard_size=4, val_fraction=0, test_fraction=0)
    prepare_dataset([src], out, cfg, phantoms=1, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    records = {
        r["case_id"].numpy().decode(): r
        for r in (
            parse_case(s, with_scan_mask=True)
            for s in tf.data.TFRecordDataset(str(out / "train-00000.tfrecord"))
        )
    }
    from xprospect.io import read_nifti

    vol = read_nifti(src)
    _, expected = ct_preprocessing(size=32, fov_mm=320.0)(vol, scan_mask(vol))
    mask = records["short"]["scan_mask"].numpy()
    np.testing.assert_array_equal(mask, expected.array)
    # 150 mm of z at 10 mm voxels: 15 axial slices of the 32 hold scanned voxels.
    assert np.count_nonzero(mask.any(axis=(1, 2))) == 15
    assert 0 < mask.mean() < 15 / 32
    assert manifest["cases"]["short"]["scan_fraction"] == pytest.approx(mask.mean(), abs=1e-6)
    np.testing.assert_array_equal(records["phantom-00000"]["scan_mask"].numpy(), 1)
    assert manifest["cases"]["phantom-00000"]["scan_fraction"] == 1.0


def test_a_changed_calibration_of_the_same_name_is_not_resumed(tmp_path, monkeypatch, capsys):
    import dataclasses

    import xprospect.phantoms as phantoms
    from xprospect.data.prepare import CALIBRATION_VALUES_KEY, JOURNAL_NAME

    out = tmp_path / "ds"
    args = ["prepare", "--phantoms", "2", "--size", "16", "--geometry", "parallel"]
    args += ["--val-fraction", "0", "--test-fraction", "0", "--output", str(out)]
    args += ["--phantom-calibration", "real_ct"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    recorded = manifest["config"][CALIBRATION_VALUES_KEY]
    assert recorded["name"] == "real_ct"
    assert recorded["fat_mm"] == list(phantoms.PHANTOM_CALIBRATIONS["real_ct"].fat_mm)
    assert main(args) == 0  # the same values: resumed (nothing to do)
    # A package whose 'real_ct' differs refuses to mix its phantoms into this dataset.
    changed = dict(phantoms.PHANTOM_CALIBRATIONS)
    changed["real_ct"] = dataclasses.replace(changed["real_ct"], fat_mm=(1.0, 2.0))
    monkeypatch.setattr(phantoms, "PHANTOM_CALIBRATIONS", changed)
    capsys.readouterr()
    assert main(args) != 0
    assert "built with another config" in capsys.readouterr().err
    # A dataset made before the values were recorded resumes as before (compared by name).
    journal = json.loads((out / JOURNAL_NAME).read_text())
    del journal["config"][CALIBRATION_VALUES_KEY]
    (out / JOURNAL_NAME).write_text(json.dumps(journal))
    assert main(args) == 0


def test_phantom_calibration_builds_its_phantoms_and_is_recorded(tmp_path, capsys):
    args = ["prepare", "--phantoms", "2", "--size", "16", "--geometry", "parallel"]
    args += ["--val-fraction", "0", "--test-fraction", "0", "--output", str(tmp_path / "ds")]
    assert main([*args, "--phantom-calibration", "real_ct"]) == 0
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["config"]["phantom_calibration"] == "real_ct"
    case = manifest["cases"]["phantom-00001"]
    rec = next(
        r for r in _records(tmp_path / "ds" / case["shard"]) if r["case_id"] == b"phantom-00001"
    )
    expected = ct_preprocessing(size=16, fov_mm=320.0)(
        chest_phantom(16, seed=1, spacing_mm=20.0, calibration="real_ct").volume
    )
    np.testing.assert_array_equal(rec["volume"].numpy(), np.rint(expected.array))
    # Another calibration is another dataset: refused without --overwrite, never mixed.
    assert main(args) != 0
    assert "built with another config" in capsys.readouterr().err
    # Datasets of the original phantoms keep the manifest they had before calibrations.
    assert "phantom_calibration" not in PrepareConfig().to_json()
    with pytest.raises(ConfigError, match="unknown phantom calibration 'cadaver'"):
        PrepareConfig(phantom_calibration="cadaver")


def test_real_cts_lose_their_couch_unless_kept_and_the_choice_is_the_datasets(tmp_path, capsys):
    from xprospect.io import read_nifti, write_volume
    from xprospect.phantoms import asymmetric_phantom
    from xprospect.preprocessing import remove_couch

    vol = asymmetric_phantom((40, 64, 64)).volume
    a = vol.array.astype(np.float32).copy()
    a[:, 61:63, 8:56] = 300.0  # a couch apart from the body
    src = write_volume(vol.replace(array=a), tmp_path / "ct.nii.gz")
    raw = read_nifti(src)
    args = ["prepare", str(src), "--size", "16", "--geometry", "parallel"]
    args += ["--val-fraction", "0", "--test-fraction", "0"]
    volumes = {}
    for name, extra, expected in (
        ("gone", [], ct_preprocessing(size=16, fov_mm=320.0)(remove_couch(raw))),
        ("kept", ["--keep-couch"], ct_preprocessing(size=16, fov_mm=320.0)(raw)),
    ):
        out = tmp_path / name
        assert main([*args, *extra, "--output", str(out)]) == 0
        rec = next(iter(_records(out / "train-00000.tfrecord")))
        volumes[name] = rec["volume"].numpy()
        np.testing.assert_array_equal(volumes[name], np.rint(np.clip(expected.array, -1024, 3071)))
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["config"].get("remove_couch") == (name == "gone" or None)
    assert (volumes["gone"] != volumes["kept"]).any()
    # A dataset built one way is never resumed the other way.
    capsys.readouterr()
    assert main([*args, "--keep-couch", "--output", str(tmp_path / "gone")]) != 0
    assert "built with another config" in capsys.readouterr().err
    # Phantom-only datasets have no couch: their identity is what it was.
    assert "remove_couch" not in PrepareConfig().to_json()
