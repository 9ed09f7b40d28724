"""What a muxer did to the coded pictures, read from the packets going into the decoder.

A remuxer or capture that repeats a coded picture, or loses one that nothing predicts from,
leaves a stream that decodes without a single error: the repeat looks like a held drawing and
the loss like a jump between drawings, which animation on twos and threes draws on purpose. The
packets still tell:

- repeated: a packet with the bytes of the packet before it. Every picture's header carries
  its own count (H.264/HEVC frame_num and pic_order_cnt_lsb, MPEG-1/2 temporal_reference,
  MPEG-4 Part 2 vop_time_increment), so two pictures in a row never code to the same bytes. The
  counts wrap (x264: pic_order_cnt_lsb every 32 frames, frame_num every 16 references), so in a
  long still hold pictures further apart can: only neighbours in decode order are compared,
  which is where a muxer puts the copy (not VP9/AV1: their tiny show-existing-frame packets
  may repeat).
- after_gap (H.264): pictures come out of the decoder in picture order count (POC) order, a
  fixed step apart (x264: 2 per frame); a larger step between two shown in a row, inside one
  run from a keyframe, is a picture missing from the stream.

The slice and sequence headers are read by hand (H.264 7.3.2.1 and 7.3.3, up to
pic_order_cnt_lsb; 8.2.1.1 and 8.2.1.3 for the count): no maintained Python package reads them,
and FFmpeg's parser does not expose the count.
"""

from __future__ import annotations

import hashlib

# See the module docstring: codecs whose pictures never repeat their bytes.
COUNTED_PICTURES = {"h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4"}
HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}  # SPS carries chroma format etc.


class Bits:
    """A reader of an H.264 RBSP: emulation prevention bytes (00 00 03) removed."""

    def __init__(self, nal: bytes):
        self.data = nal.replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def u(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3] if (self.pos >> 3) < len(self.data) else 0
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise ValueError("exp-Golomb code too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def parse_sps(nal: bytes) -> dict:
    """The fields of a sequence parameter set (NAL type 7, header byte included) that the slice
    header and the POC need."""
    b = Bits(nal[1:])
    profile = b.u(8)
    b.u(16)  # constraint flags, level
    sps = {"id": b.ue(), "separate_colour_plane": 0}
    if profile in HIGH_PROFILES:
        chroma = b.ue()
        if chroma == 3:
            sps["separate_colour_plane"] = b.u(1)
        b.ue(), b.ue(), b.u(1)  # bit depths, qpprime_y_zero_transform_bypass
        if b.u(1):  # seq_scaling_matrix_present: skip the lists
            for i in range(8 if chroma != 3 else 12):
                if b.u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + b.se() + 256) % 256
                        last = nxt or last
    sps["log2_max_frame_num"] = b.ue() + 4
    sps["poc_type"] = b.ue()
    if sps["poc_type"] == 0:
        sps["log2_max_poc_lsb"] = b.ue() + 4
    elif sps["poc_type"] == 1:
        return sps  # counts from offsets per reference cycle: not followed here
    b.ue(), b.u(1)  # max_num_ref_frames, gaps_in_frame_num_allowed
    b.ue(), b.ue()  # picture size in macroblocks
    sps["frame_mbs_only"] = b.u(1)
    return sps


def nal_spans(data: bytes | bytearray, length_size: int):
    """(start, length) of each NAL unit of a length-prefixed (mp4/mkv) packet."""
    i = 0
    while i + length_size <= len(data):
        n = int.from_bytes(data[i : i + length_size], "big")
        yield i + length_size, n
        i += length_size + n


def slice_type(nal: bytes) -> str:
    """P, B, I, SP or SI: the slice_type of a coded slice (NAL types 1 and 5, header byte
    included), the second exp-Golomb code of its header after first_mb_in_slice."""
    b = Bits(nal[1:9])
    b.ue()
    return ("P", "B", "I", "SP", "SI")[b.ue() % 5]


def nal_units(data: bytes, length_size: int | None):
    """The NAL units of a packet: length-prefixed (mp4/mkv, `length_size` bytes) or, with None,
    Annex B start codes (MPEG-TS)."""
    if length_size:
        for start, n in nal_spans(data, length_size):
            yield data[start : start + n]
        return
    for part in data.split(b"\x00\x00\x01"):
        part = part.rstrip(b"\x00")
        if part:
            yield part


class PacketWatch:
    """Fed every packet sent to the decoder (`packet`) and every frame it gives, in the order it
    gives them (`shown`); collects the pts of repeated pictures and of pictures shown right after
    a missing one. A pts is in `repeated` before any frame it decodes to is given, and in
    `after_gap` once `shown` has seen it."""

    def __init__(self) -> None:
        self.repeated: set[int] = set()
        self.after_gap: set[int] = set()
        self.codec: str | None = None
        self._length_size: int | None = None
        self._sps: dict[int, dict] = {}
        self._pps: dict[int, int] = {}  # PPS id -> its SPS id
        self._previous: tuple[int, bytes] | None = None  # (size, digest) of the last packet
        self._run = 0  # packets since stream start counted in keyframes: shown POCs compare within one run
        self._poc: dict[int, tuple[int, int]] = {}  # pts -> (run, POC) of pictures sent, not yet shown
        self._prev = (0, 0, 0, 0)  # POC state: prevMsb, prevLsb (type 0); prevFrameNum, prevOffset (type 2)
        self._last: tuple[int, int] | None = None  # (run, POC) of the last picture shown
        self._step: int | None = None  # the smallest POC step between pictures shown in a row

    def start(self, stream) -> None:
        self.codec = stream.codec_context.name
        extra = bytes(stream.codec_context.extradata or b"")
        if self.codec == "h264" and len(extra) >= 7 and extra[0] == 1:  # avcC: lengths and SPS inside
            self._length_size = (extra[4] & 3) + 1
            i = 5
            for mask in (31, 255):  # the SPS count (5 bits), then the PPS count
                count, i = extra[i] & mask if i < len(extra) else 0, i + 1
                for _ in range(count):
                    n = int.from_bytes(extra[i : i + 2], "big")
                    self._parameter_set(extra[i + 2 : i + 2 + n])
                    i += 2 + n

    def _parameter_set(self, nal: bytes) -> None:
        """Keep an SPS's fields, or a PPS's SPS id (its first two codes: pps_id, sps_id)."""
        try:
            if nal and nal[0] & 31 == 7:
                sps = parse_sps(nal)
                self._sps[sps["id"]] = sps
            elif nal and nal[0] & 31 == 8:
                b = Bits(nal[1:])
                pps = b.ue()
                self._pps[pps] = b.ue()
        except (ValueError, IndexError):
            return

    def packet(self, packet) -> None:
        if self.codec not in COUNTED_PICTURES or not packet.size:
            return
        if packet.is_keyframe:
            self._run += 1
        key = (packet.size, hashlib.blake2b(memoryview(packet), digest_size=16).digest())
        if key == self._previous and packet.pts is not None:
            self.repeated.add(packet.pts)
        self._previous = key
        if self.codec == "h264" and packet.pts is not None:
            poc = self._h264_poc(bytes(packet))
            if poc is not None:
                self._poc[packet.pts] = (self._run, poc)

    def _h264_poc(self, data: bytes) -> int | None:
        """The POC of the packet's picture (its first slice), or None where it cannot be read."""
        for nal in nal_units(data, self._length_size):
            kind = nal[0] & 31
            if kind in (7, 8):
                self._parameter_set(nal)
            if kind not in (1, 5):
                continue
            try:
                return self._slice_poc(nal, kind == 5, (nal[0] >> 5) & 3)
            except (ValueError, IndexError, KeyError):
                return None
        return None

    def _slice_poc(self, nal: bytes, idr: bool, ref: int) -> int | None:
        b = Bits(nal[1:])
        b.ue(), b.ue()  # first_mb_in_slice, slice_type
        sps = self._sps[self._pps[b.ue()]]
        if sps["poc_type"] == 1:
            return None
        if sps["separate_colour_plane"]:
            b.u(2)
        frame_num = b.u(sps["log2_max_frame_num"])
        if not sps["frame_mbs_only"] and b.u(1):  # field_pic_flag: fields not followed
            return None
        if idr:
            b.ue()
        msb0, lsb0, num0, off0 = (0, 0, 0, 0) if idr else self._prev
        if sps["poc_type"] == 0:  # 8.2.1.1
            lsb, top = b.u(sps["log2_max_poc_lsb"]), 1 << sps["log2_max_poc_lsb"]
            msb = (
                msb0 + top
                if lsb < lsb0 and lsb0 - lsb >= top // 2
                else msb0 - top
                if lsb > lsb0 and lsb - lsb0 > top // 2
                else msb0
            )
            if ref:
                self._prev = (msb, lsb, frame_num, off0)
            return msb + lsb
        offset = 0 if idr else off0 + (1 << sps["log2_max_frame_num"]) if num0 > frame_num else off0  # 8.2.1.3
        self._prev = (msb0, lsb0, frame_num, offset)
        return 0 if idr else 2 * (offset + frame_num) - (0 if ref else 1)

    def shown(self, pts: int | None) -> None:
        got = None if pts is None else self._poc.pop(pts, None)
        if pts is None or got is None:
            self._last = None
            return
        if self._last is not None and self._last[0] == got[0]:
            step = got[1] - self._last[1]
            if step > 0:
                self._step = step if self._step is None else min(self._step, step)
                if step > self._step:
                    self.after_gap.add(pts)
        self._last = got
