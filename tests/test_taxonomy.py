import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

import taxonomy
from taxonomy import CaptionError, TaxonomyError

VALID = {
    "narrative": "A girl dashes across a rooftop and lands a kick.",
    "style": ["cel_tv"],
    "motion": ["combat_dash", "strike_impact"],
    "camera": ["pan_left"],
    "vfx": ["speed_lines"],
    "shot": "full",
}


@pytest.fixture(scope="module")
def tax():
    return taxonomy.load()


def test_axes_have_enough_defined_tags(tax):
    for axis in taxonomy.TAG_AXES + (taxonomy.SHOT_AXIS,):
        tags = tax.axes[axis].tags
        assert len(tags) >= 12, axis
        assert all(t.definition and t.label and t.axis == axis for t in tags)
    assert "pan_left" in tax.measurable("camera") and "dolly_zoom" not in tax.measurable("camera")
    assert {"speed_lines", "impact_frame", "smear_frame", "anger_vein"} <= set(tax.axes["vfx"].ids)


def test_validate_accepts_and_names_bad_tag_and_axis(tax):
    assert tax.validate(VALID)["camera"] == ["pan_left"]
    with pytest.raises(CaptionError, match="'warp_drive'.*'camera'") as e:
        tax.validate({**VALID, "camera": ["warp_drive"]})
    assert e.value.axis == "camera" and e.value.tag == "warp_drive"
    # A tag of another axis is still wrong here.
    with pytest.raises(CaptionError, match="axis 'style'"):
        tax.validate({**VALID, "style": ["speed_lines"]})
    for bad in (
        {**VALID, "shot": ["full"]},
        {**VALID, "vfx": "speed_lines"},
        {**VALID, "extra": 1},
        {**VALID, "motion": ["run_cycle", "run_cycle"]},
        {**VALID, "narrative": 3},
        "text",
    ):
        with pytest.raises(CaptionError):
            tax.validate(bad)


def test_json_schema_is_closed_and_has_no_maxlength(tax):
    schema = tax.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(VALID, schema)
    for bad in (
        {**VALID, "camera": ["warp_drive"]},
        {**VALID, "shot": "mega_wide"},
        {k: v for k, v in VALID.items() if k != "shot"},
        {**VALID, "extra": "x"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    assert "maxLength" not in json.dumps(schema)
    assert schema["properties"]["camera"]["items"]["enum"] == tax.axes["camera"].ids


def test_cli_schema_rejects_unknown_accepts_valid():
    out = subprocess.run(
        [sys.executable, "-m", "pks.cli", "taxonomy", "schema"], capture_output=True, text=True, check=True
    ).stdout
    schema = json.loads(out)
    jsonschema.validate(VALID, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**VALID, "vfx": ["lens_glitter"]}, schema)


def test_migration_maps_old_ids_forward(tmp_path):
    v1 = yaml.safe_load((Path(taxonomy.loader.VERSIONS_DIR) / "v1.yaml").read_text())
    (tmp_path / "v1.yaml").write_text(yaml.safe_dump(v1))
    v2 = json.loads(json.dumps(v1))
    v2["version"] = 2
    cam = v2["axes"]["camera"]["tags"]
    for t in cam:
        if t["id"] == "shake":
            t["id"] = "handheld_shake"
    v2["axes"]["vfx"]["tags"] = [t for t in v2["axes"]["vfx"]["tags"] if t["id"] != "sweat_tears"]
    v2["migrations"] = {1: {"camera": {"shake": "handheld_shake"}, "vfx": {"sweat_tears": None}}}
    (tmp_path / "v2.yaml").write_text(yaml.safe_dump(v2))
    old = {**VALID, "camera": ["shake", "pan_left"], "vfx": ["sweat_tears", "speed_lines"]}
    new = taxonomy.migrate(old, 1, directory=tmp_path)
    assert new["camera"] == ["handheld_shake", "pan_left"] and new["vfx"] == ["speed_lines"]
    assert taxonomy.load(directory=tmp_path).version == 2
    with pytest.raises(CaptionError):  # the old id is gone in v2
        taxonomy.load(2, directory=tmp_path).validate(old)
    with pytest.raises(TaxonomyError):
        taxonomy.load(7, directory=tmp_path)


def test_malformed_taxonomy_is_rejected():
    with pytest.raises(TaxonomyError, match="duplicate"):
        taxonomy.Taxonomy.from_dict(
            {
                "version": 1,
                "axes": {
                    a: {"tags": [{"id": "x", "definition": "d"}, {"id": "x", "definition": "d"}]}
                    for a in ("style", "motion", "camera", "vfx", "shot")
                },
            }
        )
    with pytest.raises(TaxonomyError, match="lacks axes"):
        taxonomy.Taxonomy.from_dict({"version": 1, "axes": {"style": {"tags": []}}})
