"""Video files with PyAV: frames read one at a time, mp4 written as frames arrive (values rounded, not truncated
as in the reference), the input's audio carried over. Memory never holds more than the caller's frames."""

from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Optional

import numpy as np
import torch

from ..errors import InputError
from .output_files import output_file

#: audio codecs an mp4 takes as they are (others are re-encoded to AAC)
MP4_AUDIO_CODECS = {"aac", "mp3", "alac", "ac3", "eac3"}
AUDIO_BITRATE = 192_000


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8, rounded to nearest."""
    x = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous()


def write_video(path: str, video: torch.Tensor, fps: int = 8, crf: int = 14, folder: Optional[str] = None) -> None:
    """Write (3, T, H, W) in [-1, 1] as H.264 mp4 (even sizes required by yuv420p), all at once; ``folder``: the
    output folder it must stay in."""
    if video.ndim != 4 or video.shape[0] != 3 or 0 in video.shape:
        raise InputError(f"{path}: a video to write must be (3, frames, height, width), got {tuple(video.shape)}")
    with VideoWriter(path, fps, crf, folder=folder) as writer:
        writer.write(to_uint8_frames(video) if torch.isfinite(video).all() else video.movedim(0, -1))


class VideoWriter:
    """An H.264 mp4 written frame batch by frame batch through ``output_file`` (a private temporary name, renamed
    when the block ends without an error), so a failed or interrupted run never leaves a broken file nor destroys
    one that was there, and no link is ever written through. ``folder``: the output folder the file must stay in.
    ``audio_from``: a media file whose first audio stream is copied (or re-encoded to AAC); ``audio``: a waveform
    dict {"waveform": (C, S) or (1, C, S), "sample_rate"} (ComfyUI's AUDIO)."""

    def __init__(self, path: str, fps, crf: int = 14, audio_from: Optional[str] = None, audio: Optional[dict] = None,
                 bframes: Optional[int] = None, folder: Optional[str] = None):
        self.path, self.folder = path, folder
        self.output = None
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        self.crf, self.audio_from, self.audio, self.bframes = crf, audio_from, audio, bframes
        self.container = self.stream = self.audio_writer = None
        self.frames = 0

    def __enter__(self) -> "VideoWriter":
        import av

        self.output = output_file(self.path, self.folder)
        temporary = self.output.__enter__()
        try:
            self.container = av.open(temporary, mode="w", format="mp4")
        except BaseException:
            self.output.__exit__(*sys.exc_info())
            raise
        return self

    def write(self, frames: torch.Tensor) -> None:
        """(T, H, W, 3): uint8, or floats in [0, 1] (rounded)."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise InputError(f"{self.path}: frames to write must be (frames, height, width, 3), got {tuple(frames.shape)}")
        if frames.dtype != torch.uint8:
            if not torch.isfinite(frames).all():
                raise InputError(f"{self.path}: the video holds NaN/Inf values (fp16 overflow?); not written. Fix: run "
                                 "in bf16 or fp32")
            frames = (frames.float().clamp(0, 1) * 255).round().to(torch.uint8)
        array = frames.cpu().numpy()
        if self.stream is None:
            self._open_stream(array.shape[2], array.shape[1])
        for frame in array:
            for packet in self.stream.encode(self._av.VideoFrame.from_ndarray(frame, format="rgb24")):
                self.container.mux(packet)
        self.frames += len(array)

    def _open_stream(self, width: int, height: int) -> None:
        import av

        if height % 2 or width % 2:
            raise InputError(f"{self.path}: mp4 (yuv420p) needs even width and height, got {width}x{height}")
        self._av = av
        self.stream = self.container.add_stream("libx264", rate=self.fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.options = {"crf": str(self.crf), **({"bf": str(self.bframes)} if self.bframes is not None else {})}
        # every stream must exist before the first packet is written: the audio is added now, written at the end
        if self.audio_from is not None:
            self.audio_writer = _AudioCopy(self.audio_from, self.container)
        elif self.audio is not None:
            self.audio_writer = _WaveformAudio(self.audio, self.container)

    def __exit__(self, kind, error, traceback) -> None:
        try:
            try:
                if kind is None:
                    if self.stream is None:
                        raise InputError(f"{self.path}: no frames to write")
                    for packet in self.stream.encode():
                        self.container.mux(packet)
                    if self.audio_writer is not None:
                        self.audio_writer.write()
            finally:
                self.container.close()
        except BaseException:
            self.output.__exit__(*sys.exc_info())  # the temporary file is removed; the error goes on
            raise
        self.output.__exit__(kind, error, traceback)  # renamed into place only when the block succeeded


class _AudioCopy:
    """The first audio stream of ``source``: its packets as they are where mp4 takes the codec, else decoded and
    encoded to AAC. No audio stream: nothing."""

    def __init__(self, source: str, container):
        import av

        self.source, self.container, self.out, self.copy = source, container, None, False
        with av.open(source) as media:
            if not media.streams.audio:
                return
            audio = media.streams.audio[0]
            self.copy = audio.codec_context.name in MP4_AUDIO_CODECS
            if self.copy:
                self.out = container.add_stream_from_template(audio)
            else:
                self.out = container.add_stream("aac", rate=audio.rate)
                self.out.bit_rate = AUDIO_BITRATE

    def write(self) -> None:
        import av

        if self.out is None:
            return
        with av.open(self.source) as media:
            audio = media.streams.audio[0]
            if self.copy:
                for packet in media.demux(audio):
                    if packet.dts is not None:
                        packet.stream = self.out
                        self.container.mux(packet)
                return
            resampler = av.AudioResampler(format="fltp", layout=self.out.layout.name, rate=self.out.rate)
            for frame in media.decode(audio):
                for converted in resampler.resample(frame):
                    _mux_encoded(self.container, self.out, converted)
            _mux_encoded(self.container, self.out, None)


class _WaveformAudio:
    """ComfyUI's AUDIO ({"waveform": (1, C, S) or (C, S), "sample_rate"}) encoded to AAC (first two channels)."""

    def __init__(self, audio: dict, container):
        waveform = torch.as_tensor(audio["waveform"]).float()
        self.waveform = (waveform[0] if waveform.ndim == 3 else waveform)[:2].clamp(-1, 1).contiguous()
        self.rate, self.container, self.out = int(audio["sample_rate"]), container, None
        self.layout = "mono" if self.waveform.shape[0] == 1 else "stereo"
        if self.waveform.numel():
            self.out = container.add_stream("aac", rate=self.rate)
            self.out.bit_rate, self.out.layout = AUDIO_BITRATE, self.layout

    def write(self, chunk: int = 1 << 16) -> None:
        import av

        if self.out is None:
            return
        for start in range(0, self.waveform.shape[1], chunk):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(self.waveform[:, start:start + chunk].numpy()),
                                               format="fltp", layout=self.layout)
            frame.sample_rate = self.rate
            _mux_encoded(self.container, self.out, frame)
        _mux_encoded(self.container, self.out, None)


def _mux_encoded(container, stream, frame) -> None:
    for packet in stream.encode(frame):
        container.mux(packet)


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    fps: Fraction
    height: int
    width: int
    has_audio: bool


#: the largest input frame side read (8K); a bigger declared size is refused before a frame is decoded
MAX_INPUT_SIDE = 8192


def check_video_file(path: str) -> None:
    """The one gate for an input video, before any decoder opens it: a regular file (a FIFO or a device would
    block or stream forever in the decoder, a folder gives an errno nobody reads)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; give the path of a video file") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{path} cannot be opened ({getattr(e, 'strerror', None) or e}); give the path of a video "
                         "file") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path} is a folder; give the path of a video file (the file itself)")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path} is not a regular file (a pipe, socket or device); give the path of a video file")
    if st.st_size == 0:
        raise InputError(f"{path} is empty; give a video file")


def probe_video(path: str) -> VideoInfo:
    """Frame count (from the packets, nothing decoded), frame rate, size and whether there is audio."""
    import av

    check_video_file(path)
    try:
        with av.open(path) as media:
            if not media.streams.video:
                raise InputError(f"{path} has no video stream; give a video file (mp4, mov, mkv, webm, ...)")
            stream = media.streams.video[0]
            fps = stream.average_rate or stream.guessed_rate or Fraction(8)
            size = (stream.codec_context.height, stream.codec_context.width)
            has_audio = bool(media.streams.audio)
            frames = sum(1 for packet in media.demux(stream) if packet.size > 0)
    except av.error.FFmpegError as e:
        raise InputError(f"{path} cannot be read as a video ({e}); give an mp4, mov, mkv or webm file") from None
    if frames == 0 or min(size) < 1:
        raise InputError(f"{path} holds no video frames")
    if max(size) > MAX_INPUT_SIDE:
        raise InputError(f"{path} has {size[1]}x{size[0]} frames, over the {MAX_INPUT_SIDE} pixels a side this reads; "
                         "scale the video down first (e.g. ffmpeg -vf scale=-2:2160)")
    return VideoInfo(frames, Fraction(fps), size[0], size[1], has_audio)


def read_frames(path: str) -> Iterator[torch.Tensor]:
    """The frames of ``path`` one at a time, (H, W, 3) uint8 RGB."""
    import av

    check_video_file(path)
    with av.open(path) as media:
        stream = media.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in media.decode(stream):
            yield torch.from_numpy(frame.to_ndarray(format="rgb24"))


def concatenate(segments: list, path: str, audio_from: Optional[str] = None) -> int:
    """Join mp4 segments written by ``VideoWriter`` with the same size, rate and settings (no B-frames) into
    ``path``, packets as they are (no second encode), then the audio of ``audio_from``; written through
    ``output_file`` as ``VideoWriter`` does. Returns the number of frames."""
    import av

    if not segments:
        raise InputError(f"{path}: nothing to join")
    frames = 0
    with output_file(path) as temporary, av.open(segments[0]) as first, \
            av.open(temporary, mode="w", format="mp4") as container:
        template = first.streams.video[0]
        out = container.add_stream_from_template(template)
        audio = _AudioCopy(audio_from, container) if audio_from is not None else None
        offset = 0
        for segment in segments:
            with av.open(segment) as media:
                stream = media.streams.video[0]
                ticks = round(1 / (stream.average_rate * stream.time_base))  # one frame, in the segment's unit
                count = 0
                for packet in media.demux(stream):
                    if packet.dts is None:
                        continue
                    packet.pts, packet.dts = packet.pts + offset, packet.dts + offset
                    packet.stream = out
                    container.mux(packet)
                    count += 1
                offset += count * ticks
                frames += count
        if audio is not None:
            audio.write()
    return frames
