import pyarrow.parquet as pq
import pytest

from pks.record import SCHEMA, ClipRecord, read_parquet, write_parquet


def test_parquet_round_trip(tmp_path):
    recs = [
        ClipRecord(
            "0123456789abcdef",
            "a.mp4",
            24,
            96,
            23.976,
            640,
            360,
            transition_in="dissolve",
            cadence=2.0,
            held_ratio=0.5,
            camera_motion=["pan_left", "shake"],
            motion_score=0.3,
            deformation_score=0.7,
            smear_frames=2,
            impact_frames=1,
            quality_flags=["interlaced"],
            curriculum_stage=3,
            caption={
                "narrative": "n",
                "style": ["cel_tv"],
                "motion": [],
                "camera": ["pan_left"],
                "vfx": [],
                "shot": "wide",
            },
            caption_source="signals@p1/t1",
        ),
        ClipRecord("fedcba9876543210", "bad.mp4", status="error", error="empty file (0 bytes)"),
    ]
    path = tmp_path / "m.parquet"
    write_parquet(recs, path)
    assert pq.read_schema(path).equals(SCHEMA, check_metadata=False)
    back = read_parquet(path)
    assert back == recs
    row = pq.read_table(path).to_pylist()[0]
    assert row["clip_id"] == "0123456789abcdef_000024_000096"
    assert row["start_s"] == pytest.approx(24 / 23.976) and row["end_s"] == pytest.approx(96 / 23.976)


def test_record_rejects_inconsistent_values():
    with pytest.raises(ValueError):
        ClipRecord("v", "a.mp4", 10, 5)
    with pytest.raises(ValueError):
        ClipRecord("v", "a.mp4", status="done")
    with pytest.raises(ValueError):
        ClipRecord("v", "a.mp4", transition_in="wipe")
    row = ClipRecord("v", "a.mp4", 0, 10, 24.0).to_row()
    row["clip_id"] = "v_000000_000011"
    with pytest.raises(ValueError, match="disagrees"):
        ClipRecord.from_row(row)
