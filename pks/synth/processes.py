"""Damage made by real failure processes on an encoded video, with truth found by comparison.

Unlike damage.py (which draws failures into rendered frames), each process here takes a clean
encoded file and makes a damaged copy the way the failure happens in the wild, through PyAV's
FFmpeg:

- corrupt_coded_frames: bytes inside a few coded (non-key) frames overwritten, packets remuxed
  as they are; FFmpeg's decoder conceals the broken slices from references, and the error
  travels with prediction until the next keyframe.
- telecine: 24p pulled down 2:3 to 60 fields a second, woven in pairs into 30 frames a second
  without deinterlacing and coded interlaced (combing wherever the picture moves).
- starve: a re-encode at a starvation bitrate (blocking, smeared detail).
- mux_drop_dup: coded frames dropped or muxed twice, timestamps rewritten to a constant rate
  (judder: missing pictures, held pictures).

The truth never comes from the recipe: damage_truth decodes the clean and the damaged file and
marks the damaged file's frames that differ visibly from the clean frames they show, with a
threshold calibrated on a normal-quality re-encode of the same clean file (noise_threshold).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from pathlib import Path

import av
import cv2
import numpy as np

from pks.bitstream import nal_spans, slice_type
from pks.decode import decoded_frames, open_stream

BLOCK = 16  # scores are per 16x16 block (a macroblock): damage is local, codec noise spread thin
CALIBRATION_CRF, CALIBRATION_PRESET = 23, "veryfast"  # x264's default quality: a normal encode
NOISE_MARGIN = 2.0  # the threshold is this many times the calibration's largest frame score ...
MIN_THRESHOLD = 8.0  # ... and never below this (grey levels of mean block difference)
HOLD_PENALTY = 1.0  # sequence alignment: the cost of a held or skipped frame, in grey levels


# ---------------------------------------------------------------- H.264 packets (AVCC)


def _nal_length_size(stream) -> int:
    extra = stream.codec_context.extradata or b""
    if stream.codec_context.name != "h264" or len(extra) < 5 or extra[0] != 1:
        raise ValueError(f"need H.264 in an mp4 (avcC), got {stream.codec_context.name}")
    return (extra[4] & 3) + 1


def _slices(data: bytes, size: int) -> list[tuple[int, int, int]]:
    """(start, length, nal_ref_idc) of the coded slices (NAL types 1 and 5) of a packet."""
    return [
        (s, n, (data[s] >> 5) & 3) for s, n in nal_spans(data, size) if n and s < len(data) and data[s] & 31 in (1, 5)
    ]


def _kind(data: bytes, size: int) -> str:
    """How a packet is used: 'P' (predicts later frames: a non-key P picture), 'ref' (another
    reference: a B picture others predict from), 'disposable' (no slice is a reference) or
    'key'/'intra'."""
    sl = _slices(data, size)
    if not sl:
        return "other"
    if not any(r for _, _, r in sl):
        return "disposable"
    types = {slice_type(data[s : s + n]) for s, n, _ in sl}
    return "P" if "P" in types else ("ref" if "B" in types else "intra")


def _packets(src: Path):
    """(video stream template info, the video packets with data) of `src`."""
    with av.open(str(src)) as c:
        s = c.streams.video[0]
        size = _nal_length_size(s)
        packets = [(p.pts, p.dts, p.is_keyframe, bytes(p)) for p in c.demux(s) if p.size]
        return size, s.time_base, packets


def _remux(src: Path, dst: Path, packets) -> None:
    """Write `packets` (pts, dts, keyframe, data), in order, with `src`'s video stream parameters."""
    with av.open(str(src)) as c, av.open(str(dst), "w") as o:
        s = c.streams.video[0]
        out = o.add_stream_from_template(s)
        assert s.time_base is not None  # a stream that holds packets has one
        for pts, dts, key, data in packets:
            q = av.Packet(data)
            q.pts, q.dts, q.time_base, q.is_keyframe = pts, dts, s.time_base, key
            q.stream = out
            o.mux(q)


# ---------------------------------------------------------------- the processes


def corrupt_coded_frames(src, dst, rng: np.random.Generator, n: int = 3, nbytes: int = 24) -> dict:
    """Remux `src` to `dst` with `nbytes` random bytes written inside every slice of `n` coded
    P frames (not keyframes; later frames predict from them, so the error propagates), from a
    quarter into the slice on: the slice header survives, so the decoder conceals the broken
    macroblocks instead of dropping the frame. Nothing is re-encoded. Returns the parameters,
    with the display indices of the frames whose packets were corrupted."""
    src, dst = Path(src), Path(dst)
    size, _, packets = _packets(src)
    display = {pts: k for k, pts in enumerate(sorted(p[0] for p in packets))}
    kinds = [_kind(data, size) for _, _, _, data in packets]
    pool = []
    for wanted in ({"P"}, {"P", "ref"}, {"P", "ref", "disposable"}):
        ok = [i for i, (p, k) in enumerate(zip(packets, kinds)) if k in wanted and not p[2]]
        big = [i for i in ok if len(packets[i][3]) >= 200]  # tiny packets hold mostly skipped blocks
        pool = big if len(big) >= n else ok
        if len(pool) >= n:
            break
    if len(pool) < n:
        raise ValueError(f"{src.name} has {len(pool)} coded frames that are not keyframes, {n} asked")
    hit = sorted(int(i) for i in rng.choice(pool, n, replace=False))
    out = list(packets)
    for i in hit:
        pts, dts, key, data = packets[i]
        b = bytearray(data)
        for s, length, _ in _slices(data, size):
            a = s + max(8, length // 4)
            m = max(0, min(nbytes, s + length - a))
            b[a : a + m] = rng.integers(0, 256, m, dtype=np.uint8).tobytes()
        out[i] = (pts, dts, key, bytes(b))
    _remux(src, dst, out)
    return {"n": n, "nbytes": nbytes, "frames": sorted(display[packets[i][0]] for i in hit), "decode_order": hit}


def _rgb_frames(src: Path):
    with av.open(str(src)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for f in c.decode(s):
            yield f.to_ndarray(format="rgb24")


def _rate(src: Path) -> Fraction:
    with av.open(str(src)) as c:
        s = c.streams.video[0]
        rate = s.average_rate or s.guessed_rate
        if rate is None:
            raise ValueError(f"{src}: no frame rate")
        return Fraction(rate)


def _encode(dst: Path, frames, rate: Fraction, options: dict, bit_rate: int | None = None) -> int:
    """Encode RGB frames to H.264 at a constant rate; returns the frame count."""
    count = 0
    with av.open(str(dst), "w") as o:
        s = o.add_stream("libx264", rate=rate)
        if bit_rate:
            s.bit_rate = bit_rate
        for rgb in frames:
            if not count:
                s.height, s.width = rgb.shape[:2]
                s.pix_fmt = "yuv420p"
                s.options = options
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            f.pts, f.time_base = count, 1 / rate
            o.mux(s.encode(f))
            count += 1
        o.mux(s.encode(None))
    return count


def pulldown(frames, field_order: str = "tff"):
    """2:3 pulldown: frames alternately give 2 and 3 fields (A A B B B C C D D D ...), fields
    alternate parity starting with the top (`tff`) or the bottom (`bff`) field, and each pair of
    fields is woven into one frame as it is (no deinterlacing). Yields the woven frames."""
    if field_order not in ("tff", "bff"):
        raise ValueError(f"field_order must be tff or bff, got {field_order!r}")
    first = 0 if field_order == "tff" else 1  # row parity of the first field of each pair
    pending = None  # the first field of a pair: (its frame)
    for k, f in enumerate(frames):
        for _ in range(2 if k % 2 == 0 else 3):
            if pending is None:
                pending = f
                continue
            woven = f.copy()
            woven[first::2] = pending[first::2]
            pending = None
            yield woven


def telecine(src, dst, field_order: str = "tff", crf: int = 18) -> dict:
    """Telecine `src` (meant for 24p; any rate r becomes 5r/4) to `dst`: 2:3 pulldown to fields,
    woven into frames without deinterlacing, coded as interlaced H.264 with that field order."""
    src, dst = Path(src), Path(dst)
    rate = _rate(src) * Fraction(5, 4)
    opts = {"crf": str(crf), "preset": "veryfast", "x264-params": f"interlaced=1:{field_order}=1"}
    count = _encode(dst, pulldown(_rgb_frames(src), field_order), rate, opts)
    return {"field_order": field_order, "pulldown": "2:3", "fps": str(rate), "crf": crf, "frames": count}


def reencode(src, dst, crf: int = 23, preset: str = "veryfast") -> None:
    """Re-encode `src` to `dst` with libx264 at a constant quality, same size and rate."""
    _encode(Path(dst), _rgb_frames(Path(src)), _rate(Path(src)), {"crf": str(crf), "preset": preset})


def starvation_bitrate(width: int, height: int, rate: Fraction) -> int:
    """40 kbps for 640x360 at 24 fps (about 0.007 bits a pixel), scaled with pixels a second."""
    return max(8000, int(40000 * width * height * float(rate) / (640 * 360 * 24)))


def starve(src, dst, bitrate: int | None = None) -> dict:
    """Re-encode `src` to `dst` with libx264 held to a starvation bitrate (bits a second)."""
    src, dst = Path(src), Path(dst)
    rate = _rate(src)
    if bitrate is None:
        with av.open(str(src)) as c:
            cc = c.streams.video[0].codec_context
            bitrate = starvation_bitrate(cc.width, cc.height, rate)
    opts = {"preset": "veryfast", "x264-params": f"vbv-maxrate={bitrate // 1000}:vbv-bufsize={bitrate // 1000}"}
    _encode(dst, _rgb_frames(src), rate, opts, bit_rate=bitrate)
    return {"bitrate": int(bitrate)}


def disposable_frames(src) -> list[int]:
    """Display indices of the frames of `src` that no other frame predicts from (not keyframes,
    no slice a reference): the ones a remux can drop or repeat without breaking the rest."""
    size, _, packets = _packets(Path(src))
    order = sorted(range(len(packets)), key=lambda i: packets[i][0])
    return [k for k, i in enumerate(order) if not packets[i][2] and _kind(packets[i][3], size) == "disposable"]


def mux_drop_dup(
    src,
    dst,
    rng: np.random.Generator,
    drops: int = 2,
    dups: int = 2,
    drop: list[int] | None = None,
    dup: list[int] | None = None,
) -> dict:
    """Remux `src` to `dst` with some coded frames left out and some muxed twice, timestamps
    rewritten to the constant rate (as a capture or a remuxer that loses or repeats frames
    does). Only disposable frames (no slice is a reference) are dropped or repeated, so the
    rest decodes as before. `drop`/`dup` name display indices; otherwise `drops`/`dups` are
    drawn, apart from each other and from the ends. Returns the parameters, with the indices."""
    src, dst = Path(src), Path(dst)
    _, _, packets = _packets(src)
    order = sorted(range(len(packets)), key=lambda i: packets[i][0])  # display position -> packet
    position = {i: k for k, i in enumerate(order)}
    free = disposable_frames(src)
    if drop is None and dup is None:
        pool = [k for k in free if 4 <= k < len(order) - 4]
        picked: list[int] = []
        for k in rng.permutation(pool):
            if all(abs(int(k) - p) >= 6 for p in picked):
                picked.append(int(k))
            if len(picked) == drops + dups:
                break
        if len(picked) < drops + dups:
            raise ValueError(f"{src.name}: not enough disposable frames for {drops} drops and {dups} repeats")
        drop, dup = sorted(picked[:drops]), sorted(picked[drops:])
    drop, dup = sorted(drop or []), sorted(dup or [])
    bad = [k for k in drop + dup if k not in set(free)]
    if bad:
        raise ValueError(f"display frames {bad} are references or keyframes: dropping them breaks decoding")
    shown = []  # (packet, copy) in display order
    for k, i in enumerate(order):
        if k not in drop:
            shown += [(i, 0)] + ([(i, 1)] if k in dup else [])
    step = packets[order[1]][0] - packets[order[0]][0]
    new_pts = {key: packets[order[0]][0] + n * step for n, key in enumerate(shown)}
    decode = [
        (i, c) for i in range(len(packets)) if position[i] not in drop for c in ((0, 1) if position[i] in dup else (0,))
    ]
    delay = packets[0][0] - packets[0][1]  # how far the first dts runs ahead of presentation
    ticks = sorted(new_pts.values())
    out = []
    for n, (i, c) in enumerate(decode):
        pts, dts = new_pts[(i, c)], ticks[n] - delay
        assert dts <= pts, "a frame would be decoded after it is shown"
        out.append((pts, dts, packets[i][2], packets[i][3]))
    _remux(src, dst, out)
    return {"drop": drop, "dup": dup}


# ---------------------------------------------------------------- truth by comparison


def _luma(frame: av.VideoFrame) -> np.ndarray:
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    p = frame.planes[0]
    return np.frombuffer(memoryview(p), np.uint8).reshape(p.height, p.line_size)[:, : p.width].astype(np.int16)


def _decode(path):
    """(frame duration, generator of (time from the first frame, luma)) for `path`, decoded as
    the pipeline decodes (threaded; a packet that fails to decode is skipped, its frame lost)."""
    with open_stream(str(path)) as (_, s):
        rate = Fraction(s.average_rate or s.guessed_rate)
        tb = s.time_base

    def frames():
        with open_stream(str(path)) as (c, s):
            pts0 = None
            for n, (frame, _) in enumerate(decoded_frames(c, s)):
                pts = frame.pts if frame.pts is not None else n
                pts0 = pts if pts0 is None else pts0
                t = Fraction(pts - pts0) * tb if frame.pts is not None else n / rate
                yield t, _luma(frame)

    return 1 / rate, frames


def block_score(a: np.ndarray, b: np.ndarray) -> float:
    """The largest mean absolute luma difference over the frame's 16x16 blocks (edge blocks
    partial), in grey levels."""
    if a.shape != b.shape:
        raise ValueError(f"frame sizes differ: {a.shape} and {b.shape}")
    d = np.abs(a - b).astype(np.float32)
    h, w = d.shape
    rows, cols = np.arange(0, h, BLOCK), np.arange(0, w, BLOCK)
    sums = np.add.reduceat(np.add.reduceat(d, rows, axis=0), cols, axis=1)
    counts = np.outer(np.diff(np.r_[rows, h]), np.diff(np.r_[cols, w]))
    return float((sums / counts).max())


def _small(y: np.ndarray) -> np.ndarray:
    k = max(1, y.shape[1] // 160)
    return cv2.resize(y.astype(np.uint8), (y.shape[1] // k, y.shape[0] // k), interpolation=cv2.INTER_AREA)


def _by_time(clean_t, dur_c, dam_t, dur_d) -> list[list[int]]:
    """For each damaged frame, the clean frames whose display interval overlaps its own."""
    cand, lo = [], 0
    for t in dam_t:
        while lo < len(clean_t) and clean_t[lo] + dur_c <= t:
            lo += 1
        hi = lo
        while hi < len(clean_t) and clean_t[hi] < t + dur_d:
            hi += 1
        cand.append(list(range(lo, hi)))
    return cand


def _by_sequence(clean_s, dam_s, band: int = 16) -> list[int]:
    """Align the damaged frames to clean frames in order (each shows one clean frame; a clean
    frame may be shown twice or not at all), minimising the small frames' mean difference plus
    HOLD_PENALTY for every held or skipped frame: dynamic programming over clean frames within
    `band` of the damaged frame's index (stored by offset i - j + band)."""
    J, n_clean, W = len(dam_s), len(clean_s), 2 * band + 1
    inf = float("inf")
    cost = np.full((J, W), inf)
    back = np.full((J, W), -1, np.int64)  # the previous frame's clean index

    def local(j, i):
        return float(np.abs(dam_s[j].astype(np.int16) - clean_s[i]).mean())

    for i in range(min(n_clean, band + 1)):
        cost[0, i + band] = local(0, i) + HOLD_PENALTY * i
    for j in range(1, J):
        for i in range(max(0, j - band), min(n_clean, j + band + 1)):
            best, arg = inf, -1
            for step in (1, 0, 2, 3, 4):  # ties go to the normal step
                p = i - step
                o = p - (j - 1) + band
                if p < 0 or not 0 <= o < W or cost[j - 1, o] == inf:
                    continue
                c = cost[j - 1, o] + (0 if step == 1 else HOLD_PENALTY * max(1, step - 1))
                if c < best:
                    best, arg = c, p
            if arg >= 0:
                cost[j, i - j + band], back[j, i - j + band] = best + local(j, i), arg
    ends = [
        (cost[J - 1, i - (J - 1) + band] + HOLD_PENALTY * (n_clean - 1 - i), i)
        for i in range(max(0, J - 1 - band), min(n_clean, J + band))
    ]
    total, i = min(ends)
    if total == inf:
        raise ValueError(f"cannot align {J} frames to {n_clean} within {band} frames")
    path = [i]
    for j in range(J - 1, 0, -1):
        i = int(back[j, i - j + band])
        path.append(i)
    return path[::-1]


def _scores(clean, damaged, cand: list[list[int]]):
    """Full-size block scores, decoded again in step: (score and best clean frame per damaged
    frame, each clean frame's score against the clean frame before it)."""
    _, clean_frames = clean
    _, dam_frames = damaged
    it = iter(clean_frames())
    buf: dict[int, np.ndarray] = {}
    change: list[float] = []
    prev = None
    scores, best = [], []
    for j, (_, y) in enumerate(dam_frames()):
        want = cand[j]
        while want and len(change) <= want[-1]:
            _, c = next(it)
            change.append(block_score(c, prev) if prev is not None else 0.0)
            buf[len(change) - 1] = prev = c
        for k in [k for k in buf if want and k < want[0]]:
            del buf[k]
        s = [(block_score(y, buf[k]), k) for k in want]
        sc, k = min(s) if s else (None, -1)  # None: no clean frame at its time
        scores.append(sc)
        best.append(k)
    for _, c in it:  # the clean frames no damaged frame reached
        change.append(block_score(c, prev) if prev is not None else 0.0)
        prev = c
    return scores, best, change


def _first_pass(path):
    dur, frames = _decode(path)
    ts, small = [], []
    for t, y in frames():
        ts.append(t)
        small.append(_small(y))
    return (dur, frames), ts, small


def noise_threshold(clean, workdir=None) -> dict:
    """The threshold above which a frame differs visibly from the clean, and its derivation:
    the clean file re-encoded at x264's default quality (crf 23, veryfast; a normal encode) is
    scored against the clean decode like any damaged copy, and the threshold is NOISE_MARGIN
    times the largest frame score of that re-encode, at least MIN_THRESHOLD. Codec noise of a
    normal encode thus never counts as damage, and grain or fine line art that a codec cannot
    keep raises the bar for its own video.

    Measured (synthetic footage of both families, 320x176 to 854x480, sources at crf 16-30,
    grain included): the crf-23 re-encode's largest frame score was 7-11 grey levels, a crf-26
    re-encode's up to 1.7 and a crf-28 one's up to 1.8 times that (hence the margin of 2: a
    worse but still normal encode stays below); frames concealing corrupt packets scored
    30-140, starved frames 20-100 (a tenth of them below 20-36), telecined frames woven from
    two moving instants about half their instants' difference (15-70)."""
    with contextlib.ExitStack() as stack:
        d = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        ref = d / "calibration.mp4"
        reencode(clean, ref, CALIBRATION_CRF, CALIBRATION_PRESET)
        t = damage_truth(clean, ref, threshold=float("inf"))
    scores = np.array(t["scores"])
    return {
        "value": round(max(MIN_THRESHOLD, NOISE_MARGIN * float(scores.max())), 2),
        "noise_max": round(float(scores.max()), 2),
        "noise_p99": round(float(np.percentile(scores, 99)), 2),
        "metric": "largest mean |luma difference| over 16x16 blocks, grey levels",
        "derivation": f"max({MIN_THRESHOLD}, {NOISE_MARGIN} x the largest frame score of a libx264 "
        f"crf {CALIBRATION_CRF} {CALIBRATION_PRESET} re-encode of the clean)",
    }


def damage_truth(
    clean, damaged, threshold: float | dict | None = None, align: str = "time", shots: list[dict] | None = None
) -> dict:
    """Which frames of `damaged` differ visibly from `clean`, found by decoding both.

    align="time": each damaged frame is compared with the clean frames whose display intervals
    overlap its own (frames at another rate, e.g. telecined, are compared with both frames their
    fields came from) and scored by the closest. align="sequence": the damaged frames are
    aligned to the clean in order (for a copy whose clock was rewritten), finding held frames
    (a clean frame shown again) and missing ones (a clean frame never shown).

    A frame is damaged when its score exceeds the threshold (noise_threshold's unless given),
    when it holds a picture where the clean moves on visibly, or when it follows a missing
    picture that differed visibly from both frames around it. `shots` (the synth truth's,
    in clean frame indices) adds a summary per shot, frames assigned through the clean frame
    each one shows."""
    if align not in ("time", "sequence"):
        raise ValueError(f"align must be time or sequence, got {align!r}")
    calib: dict | None = None
    if isinstance(threshold, dict) or threshold is None:
        calib = threshold if threshold is not None else noise_threshold(clean)
        thr = float(calib["value"])
    else:
        thr = float(threshold)
    clean_dec, clean_t, clean_s = _first_pass(clean)
    dam_dec, dam_t, dam_s = _first_pass(damaged)
    if align == "time":
        cand = _by_time(clean_t, clean_dec[0], dam_t, dam_dec[0])
    else:
        cand = [[i] for i in _by_sequence(clean_s, dam_s)]
    scores, source, change = _scores(clean_dec, dam_dec, cand)
    held, missing, damaged_frames = [], [], []
    shown = {i for c in cand for i in c} if align == "time" else set(source)
    for i in range(len(clean_t)):
        if i not in shown:  # a clean picture no damaged frame shows (lost, or dropped)
            nxt = change[i + 1] if i + 1 < len(change) else 0.0
            missing.append({"frame": i, "visible": bool(change[i] > thr and nxt > thr)})
    lost_visible = {m["frame"] for m in missing if m["visible"]}
    for j, k in enumerate(source):
        flag = scores[j] is None or scores[j] > thr
        if align == "sequence" and j > 0:
            if k == source[j - 1]:  # the same clean picture shown again
                held.append(
                    {"frame": j, "source_frame": k, "visible": bool(k + 1 < len(change) and change[k + 1] > thr)}
                )
                flag = flag or held[-1]["visible"]
            # the first frame after a picture that went missing: the motion jumps
            flag = flag or any(m in lost_visible for m in range(source[j - 1] + 1, k))
        if flag:
            damaged_frames.append(j)
    truth = {
        "clean": Path(clean).name,
        "video": Path(damaged).name,
        "align": align,
        "n_frames": len(dam_t),
        "clean_n_frames": len(clean_t),
        "threshold": calib or {"value": thr, "derivation": "given"},
        "damaged_frames": damaged_frames,
        "held": held,
        "missing": missing,
        "scores": [None if s is None else round(s, 2) for s in scores],
        "source_frames": source,
    }
    if shots is not None:
        flagged = set(damaged_frames)
        truth["shots"] = []
        for s in shots:
            lo, hi = s["start_frame"], s["end_frame"]
            mine = [j for j, k in enumerate(source) if lo <= k < hi]
            hit = [j for j in mine if j in flagged]
            lost = [m for m in missing if lo <= m["frame"] < hi]
            truth["shots"].append(
                {
                    "index": s["index"],
                    "start_frame": lo,
                    "end_frame": hi,
                    "frames": [mine[0], mine[-1] + 1] if mine else None,
                    "damaged_frames": hit,
                    "missing": [m["frame"] for m in lost],
                    "damaged": bool(hit) or any(m["visible"] for m in lost),
                }
            )
        truth["damaged_shots"] = [s["index"] for s in truth["shots"] if s["damaged"]]
    return truth


# ---------------------------------------------------------------- damaged copies of synth videos

PROCESSES = ("corrupt", "telecine", "starve", "mux")


def make_damaged(clean, processes=PROCESSES, seed: int | None = None) -> list[Path]:
    """For each process, `NAME.{process}.mp4` beside the clean `NAME.mp4` and its truth
    `NAME.{process}.json` (the process and its parameters; the damaged frames and shots found
    by comparison with the clean). Telecine makes two copies, one per field order. The synth
    truth `NAME.json` gives the shots and, unless `seed` is given, the seed."""
    clean = Path(clean)
    synth = json.loads(clean.with_suffix(".json").read_text()) if clean.with_suffix(".json").exists() else {}
    seed = synth.get("seed", 0) if seed is None else seed
    calib = noise_threshold(clean)
    made = []
    for name in dict.fromkeys(processes):
        rng = np.random.default_rng([seed, PROCESSES.index(name)])
        jobs: list[tuple[str, Callable[[Path], dict], str]]  # (copy's tag, its maker, truth alignment)
        if name == "corrupt":
            jobs = [("corrupt", partial(corrupt_coded_frames, clean, rng=rng), "time")]
        elif name == "telecine":
            jobs = [(f"telecine_{o}", partial(telecine, clean, field_order=o), "time") for o in ("tff", "bff")]
        elif name == "starve":
            jobs = [("starve", partial(starve, clean), "time")]
        else:
            jobs = [("mux", partial(mux_drop_dup, clean, rng=rng), "sequence")]
        for tag, run, align in jobs:
            dst = clean.with_name(f"{clean.stem}.{tag}.mp4")
            params = run(dst)
            truth = damage_truth(clean, dst, calib, align=align, shots=synth.get("shots"))
            dst.with_suffix(".json").write_text(json.dumps({"process": name, "params": params, **truth}, indent=1))
            made.append(dst)
    return made
