"""plan_chunks: cut a video's frame range into independent, keyframe-aligned pieces.

A chunk ends on the keyframe nearest its target length when one lies within [target/2, 3*target/2]
of its start (a tail of at most target/2 frames is folded into the last chunk); otherwise (a GOP much longer than the target) it ends exactly at the target, and the
next chunk decodes from the GOP's keyframe and discards the lead-in. The plan is a pure function of
(content_hash, frame list, keyframes, chunk_frames), so ids are stable across runs and machines.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise

from ffray.errors import InputError
from ffray.media.probe import VideoInfo


@dataclass(frozen=True)
class Chunk:
    id: str  # sha256(content_hash, start, end)[:16] hex: stable for the same input and plan
    index: int
    start: int  # first frame index (presentation order)
    end: int  # exclusive
    seek_frame: int  # keyframe index decoding starts from (0 = start of the stream)
    start_pts: int
    end_pts: int | None  # pts of frame `end`, None for the last chunk
    seek_pts: int = 0  # pts of frame `seek_frame`
    time_base: Fraction = Fraction(1, 1)
    video_stream_index: int = 0
    exact_seek: bool = True
    frame_pts: tuple[int, ...] = ()  # pts of frames start..end-1, so decoding checks every frame
    total_frames: int = 0  # frames in the whole video (a backend's own index must agree)
    lead_pts: tuple[int, ...] = ()  # pts of frames seek_frame..start-1 (the lead-in decoded and dropped)
    seek_dts: int | None = None  # decode timestamp of the seek keyframe, where the container has one

    @property
    def frames(self) -> int:
        return self.end - self.start

    def to_json(self) -> dict:
        return {"id": self.id, "index": self.index, "start": self.start, "end": self.end,
                "seek_frame": self.seek_frame}


def chunk_id(content_hash: str, start: int, end: int) -> str:
    return hashlib.sha256(f"{content_hash}:{start}:{end}".encode()).hexdigest()[:16]


def plan_chunks(info: VideoInfo, chunk_frames: int) -> list[Chunk]:
    """Contiguous chunks covering [0, info.frames) exactly once (see module doc for the rule)."""
    if not isinstance(chunk_frames, int) or chunk_frames < 1:
        raise InputError(f"--chunk-frames: must be a positive integer, got {chunk_frames!r}")
    frames = info.frames
    keyframes = sorted(set(info.keyframes))
    key_dts = dict(zip(info.keyframes, info.keyframe_dts, strict=False))
    bounds = [0]
    if info.exact_seek:
        start = 0
        while start < frames:
            target = start + chunk_frames
            if frames - target <= chunk_frames // 2:
                break  # fold a short tail into this chunk rather than leave a sliver
            lo = bisect.bisect_left(keyframes, start + max(1, chunk_frames // 2))
            hi = bisect.bisect_right(keyframes, start + chunk_frames + chunk_frames // 2)
            near = [k for k in keyframes[lo:hi] if start < k < frames]
            end = min(near, key=lambda k: (abs(k - target), k)) if near else target
            if frames - end <= chunk_frames // 4:
                break
            bounds.append(end)
            start = end
    bounds.append(frames)

    chunks = []
    for index, (start, end) in enumerate(pairwise(bounds)):
        # the last keyframe at or before start; 0 (stream start) when none is
        k = bisect.bisect_right(keyframes, start) - 1
        seek_frame = keyframes[k] if k >= 0 else 0
        seek_dts = key_dts.get(seek_frame)
        chunks.append(Chunk(
            id=chunk_id(info.content_hash, start, end),
            index=index,
            start=start,
            end=end,
            seek_frame=seek_frame,
            start_pts=info.frame_pts[start],
            end_pts=info.frame_pts[end] if end < frames else None,
            seek_pts=info.frame_pts[seek_frame],
            time_base=info.time_base,
            video_stream_index=info.video_stream_index,
            exact_seek=info.exact_seek,
            frame_pts=tuple(info.frame_pts[start:end]),
            total_frames=frames,
            lead_pts=tuple(info.frame_pts[seek_frame:start]),
            seek_dts=seek_dts,
        ))
    return chunks
