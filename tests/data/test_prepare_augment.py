"""`xprospect prepare --real-augment N`: variant ids and seeds, splits by source, records rebuilt
independently from the recorded seed, DRRs rendered from the changed volume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from xprospect.augmentation import augment_volume, augmentation_seed
from xprospect.cli import main
from xprospect.data import parse_case
from xprospect.data.prepare import (
    CaseSpec,
    PrepareConfig,
    assign_splits,
    augmented_cases,
    prepare_dataset,
)
from xprospect.errors import ConfigError
from xprospect.io import read_volume, write_nifti
from xprospect.phantoms import chest_phantom
from xprospect.preprocessing import ct_preprocessing, remove_couch, scan_mask
from xprospect.projection import render_drr_batch


def _records(folder):
    out = {}
    for shard in sorted(folder.glob("*.tfrecord")):
        for r in tf.data.TFRecordDataset(str(shard)):
            rec = parse_case(r, with_scan_mask=True)
            out[rec["case_id"].numpy().decode()] = rec
    return out


def test_variants_have_ids_seeds_and_their_sources_patient_and_phantoms_get_none():
    cases = [
        CaseSpec("a", "nifti", "a.nii.gz", "pa"),
        CaseSpec("b", "dicom", "dir", "pb", series_uid="1.2"),
        CaseSpec("phantom-00000", "phantom", "phantom:0", "phantom-00000", seed=0),
    ]
    out = augmented_cases(cases, 2, seed=5)
    ids = ["a", "a_aug1", "a_aug2", "b", "b_aug1", "b_aug2", "phantom-00000"]
    assert [c.case_id for c in out] == ids
    b2 = next(c for c in out if c.case_id == "b_aug2")
    assert (b2.kind, b2.source, b2.patient_id, b2.series_uid) == ("dicom", "dir", "pb", "1.2")
    assert b2.augment_of == "b" and b2.augment_seed == augmentation_seed(5, "b", 2)
    assert augmented_cases(cases, 2, seed=5) == out
    assert augmented_cases(cases, 0) == sorted(cases, key=lambda c: c.case_id)
    with pytest.raises(ConfigError, match="a_aug1"):
        augmented_cases([*cases, CaseSpec("a_aug1", "nifti", "x.nii", "px")], 1)


def test_variants_stay_in_their_sources_split(tmp_path):
    cases = [CaseSpec(f"p{p}_s{s}", "nifti", "x", f"p{p}") for p in range(20) for s in range(2)]
    cases = augmented_cases(cases, 3)
    source_of = {c.case_id: c.augment_of for c in cases if c.augment_of}
    random = assign_splits(cases, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert {"train", "val", "test"} == set(random.values())
    # A split file naming originals (and even a variant) by case id: the variants follow the source.
    listing = tmp_path / "splits.json"
    listing.write_text(json.dumps({"p3_s0": "test", "p4_s1": "val", "p3_s0_aug2": "train"}))
    given = assign_splits(cases, val_fraction=0, test_fraction=0, seed=0, split_file=listing)
    for splits in (random, given):
        for vid, src in source_of.items():
            assert splits[vid] == splits[src], (vid, src)
    assert {given[f"p3_s0_aug{k}"] for k in (1, 2, 3)} == {"test"}
    assert {given[f"p4_s1_aug{k}"] for k in (1, 2, 3)} == {"val"}
    assert given["p3_s1_aug1"] == "train"


def test_cli_real_augment_writes_variants_rebuilt_from_their_recorded_seeds(tmp_path, capsys):
    ct = chest_phantom(32, seed=1, spacing_mm=10.0).volume  # a real-like CT given as a file
    path = write_nifti(ct, tmp_path / "chest.nii.gz")
    out = tmp_path / "ds"
    argv = ["prepare", str(path), "--output", str(out), "--size", "24", "--geometry", "parallel"]
    argv += ["--val-fraction", "0", "--test-fraction", "0", "--shard-size", "2"]
    assert main([*argv, "--real-augment", "2", "--augment-seed", "3"]) == 0
    assert "wrote 3 case(s)" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["real_augment"] == 2 and manifest["config"]["augment_seed"] == 3
    assert sorted(manifest["cases"]) == ["chest", "chest_aug1", "chest_aug2"]
    assert "augmentation" not in manifest["cases"]["chest"]
    recs = _records(out)
    raw = remove_couch(read_volume(path))  # prepare's default for real CTs
    base, base_mask = ct_preprocessing(size=24, fov_mm=320.0)(raw, scan_mask(raw))
    np.testing.assert_array_equal(recs["chest"]["volume"].numpy(), np.rint(base.array))
    spacing = 320.0 / 24
    for k in (1, 2):
        cid = f"chest_aug{k}"
        entry = manifest["cases"][cid]
        assert entry["augment_of"] == "chest" and entry["split"] == "train"
        record = entry["augmentation"]
        assert record["seed"] == augmentation_seed(3, "chest", k)
        expected, (mask,), again = augment_volume(base, record["seed"], base_mask)
        assert again == record  # the drawn parameters, as recorded
        # The scan mask follows the variant's geometry: what moved in from outside is unscanned.
        stored_mask = recs[cid]["scan_mask"].numpy()
        np.testing.assert_array_equal(stored_mask, np.asarray(mask.array, np.uint8))
        assert 0 < stored_mask.mean() < 1
        vol = recs[cid]["volume"].numpy()
        np.testing.assert_array_equal(vol, np.clip(np.rint(expected.array), -1024, 3071))
        assert np.abs(vol - np.rint(base.array)).mean() > 5.0  # a different case, not a copy
        drrs = render_drr_batch(vol[None].astype(np.float32), spacing, "parallel", size=24)
        np.testing.assert_allclose(recs[cid]["frontal"].numpy(), drrs.numpy()[0, 0], 2e-3, 1e-3)
        np.testing.assert_allclose(recs[cid]["lateral"].numpy(), drrs.numpy()[0, 1], 2e-3, 1e-3)
    # Without the flag the config (and so an older dataset's identity) has no augmentation keys.
    assert "real_augment" not in PrepareConfig().to_json()


@pytest.mark.realdata
def test_real_ct_variant_is_a_plausible_chest(tmp_path, sample_ct_paths):
    cfg = PrepareConfig(
        size=32, geometry="parallel", val_fraction=0, test_fraction=0, real_augment=1
    )
    prepare_dataset([sample_ct_paths.ct_path], tmp_path / "ds", cfg, progress=False)
    recs = _records(tmp_path / "ds")
    orig, aug = recs["cxr"]["volume"].numpy(), recs["cxr_aug1"]["volume"].numpy()
    assert aug.min() >= -1024 and aug.max() <= 3071
    # Same anatomy, a little moved: strongly correlated, not identical; lungs still there.
    corr = np.corrcoef(orig.ravel(), aug.ravel())[0, 1]
    assert 0.7 < corr < 0.995, corr
    lung = lambda v: ((v > -950) & (v < -500)).mean()  # noqa: E731
    assert abs(lung(aug) - lung(orig)) < 0.3 * lung(orig)
