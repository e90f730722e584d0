"""flashvideo_queue over a folder of videos (``--videos DIR``), without a host: which files count, how prompts pair
with videos, the name each video is uploaded under, and the multipart upload (checked by the fake ComfyUI's own
parser, support/fake_comfy_server.py)."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
from pathlib import Path

import pytest

from flashvideo_queue import InputError
from flashvideo_queue.client import UPLOAD_CHUNK, ComfyClient, FileChunks, multipart_form
from flashvideo_queue.errors import HttpError, InputFileError
from flashvideo_queue.prompts import Prompt
from flashvideo_queue.videos import (UPLOAD_SUBFOLDER, VIDEO_EXTENSIONS, Video, list_videos, pair_prompts,
                                     videos_sha256)
from support.fake_comfy_server import FakeComfy

PROMPTS = ["A red fox in fresh snow, cinematic.", "A whale beside a sailboat, spray in the sun.",
           "Rain on a neon street at night."]


@pytest.fixture
def fakes():
    started = []

    def make(**kwargs) -> FakeComfy:
        fake = FakeComfy(**kwargs).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


def clip_bytes(name: str, size: int = 64) -> bytes:
    """Distinct fake mp4 content per name (the fake server never decodes it)."""
    seed = hashlib.sha256(name.encode()).digest()
    return (b"\x00\x00\x00\x18ftypisom" + seed * (size // len(seed) + 1))[:size]


def make_clips(folder: Path, names=("b_take.mp4", "a take.MOV", "c.webm"), extra=()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*names, *extra):
        (folder / name).write_bytes(clip_bytes(name))
    return folder


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the folder ---------------------------------------------------------------------------------------------------
def test_folder_lists_videos_directly_in_it_by_name_any_case_and_hashes_each(tmp_path):
    folder = make_clips(tmp_path / "clips", names=("b.mp4", "a.MKV", "C.Gif", "d.m4v", "e.avi", "f.webm", "g.mov"),
                        extra=("notes.txt", "thumb.jpg", "._a.mp4", "mp4"))
    (folder / "sub").mkdir()
    (folder / "sub" / "nested.mp4").write_bytes(b"x")
    (folder / "dir.mp4").mkdir()  # a folder with a video's name is not a video
    videos = list_videos(folder)
    assert [v.name for v in videos] == ["C.Gif", "a.MKV", "b.mp4", "d.m4v", "e.avi", "f.webm", "g.mov"]
    assert all(v.size == 64 and v.sha256 == sha(clip_bytes(v.name)) for v in videos)
    assert videos[2].record() == {"name": "b.mp4", "size": 64, "sha256": sha(clip_bytes("b.mp4"))}
    assert videos_sha256(videos) != videos_sha256(videos[:-1])


@pytest.mark.parametrize("case, message", [
    ("empty folder", "--videos {d}: no video files in it (looked for .mp4 .mov .mkv .webm .avi .m4v .gif, any case"),
    ("no such folder", "--videos {d}: no such folder"),
    ("a file", "--videos {d}: not a folder"),
    ("empty video", "--videos: {d}/b.mp4 is empty (0 bytes), not a video; remove it from {d}"),
    ("unreadable", "--videos: cannot read {d}/b.mp4: Permission denied; fix its permissions or move it out of {d}"),
])
def test_folder_refusals_name_the_folder_or_file_and_the_fix(tmp_path, monkeypatch, case, message):
    import flashvideo_queue.videos as videos_module

    folder = tmp_path / "clips"
    if case == "empty folder":
        make_clips(folder, names=(), extra=("readme.txt",))
    elif case == "a file":
        folder.write_text("not a folder")
    elif case == "empty video":
        make_clips(folder, names=("a.mp4",))
        (folder / "b.mp4").write_bytes(b"")
    elif case == "unreadable":
        make_clips(folder, names=("a.mp4", "b.mp4"))

        def refuse(path, *args, **kwargs):  # root ignores mode bits: refuse like an unreadable file would
            if Path(path).name == "b.mp4":
                raise PermissionError(13, "Permission denied", str(path))
            return open(path, *args, **kwargs)

        monkeypatch.setattr(videos_module, "open", refuse, raising=False)
    with pytest.raises(InputError) as err:
        list_videos(folder)
    assert message.format(d=folder) in str(err.value)
    assert VIDEO_EXTENSIONS == (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif")


def test_upload_name_is_plain_ascii_and_names_the_content(tmp_path):
    one, two = Video(tmp_path / "Prise n°1 (final).MP4", 5, "ab" * 32), Video(tmp_path / "x.mp4", 5, "cd" * 32)
    assert one.upload_name == "Prise-n1-final_abababababab.mp4"
    assert one.expected_reference == f"{UPLOAD_SUBFOLDER}/Prise-n1-final_abababababab.mp4"
    assert Video(tmp_path / "日本.mov", 1, "ef" * 32).upload_name == "video_efefefefefef.mov"
    assert one.upload_name != Video(one.path, 5, "ac" * 32).upload_name  # other content, other name
    assert two.upload_name == "x_cdcdcdcdcdcd.mp4"


# -- prompts and videos --------------------------------------------------------------------------------------------
def test_prompts_pair_with_videos_one_for_all_or_one_each(tmp_path):
    videos = [Video(tmp_path / f"{n}.mp4", 1, str(n) * 64) for n in range(3)]
    prompts = [Prompt(i, 2 + i, text) for i, text in enumerate(PROMPTS)]
    assert pair_prompts(prompts[:1], videos, "p.txt", tmp_path) == prompts[:1] * 3
    assert pair_prompts(prompts, videos, "p.txt", tmp_path) == prompts
    assert pair_prompts([], videos, "p.txt", tmp_path) == [None] * 3
    with pytest.raises(InputError) as err:
        pair_prompts(prompts[:2], videos, "p.txt", tmp_path)
    assert str(err.value) == (f"p.txt has 2 prompts and --videos {tmp_path} has 3 videos: give one prompt (used for "
                              "every video) or exactly 3 (paired with the videos in name order)")


# -- the upload ---------------------------------------------------------------------------------------------------
def test_multipart_body_parses_back_to_the_fields_and_the_exact_bytes():
    content = bytes(range(256)) * 40 + b"\r\n--flashvideo-b\r\n\r\n"  # even a line that looks like the boundary
    head, tail = multipart_form({"type": "input", "subfolder": "flashvideo_batch", "overwrite": "true"}, "image",
                                "clip_0123.mp4", "video/mp4", "flashvideo-b0c1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: multipart/form-data; boundary=flashvideo-b0c1\r\n\r\n" + head + content + tail)
    parts = list(message.iter_parts())
    assert [(p.get_param("name", header="content-disposition"), p.get_filename()) for p in parts] == [
        ("type", None), ("subfolder", None), ("overwrite", None), ("image", "clip_0123.mp4")]
    assert [p.get_payload(decode=True) for p in parts[:3]] == [b"input", b"flashvideo_batch", b"true"]
    assert parts[3].get_content_type() == "video/mp4" and parts[3].get_payload(decode=True) == content
    for bad in ('a"b.mp4', "a\r\nb.mp4", "a\\b.mp4"):
        with pytest.raises(ValueError, match="needs quoting"):
            multipart_form({}, "image", bad, "video/mp4", "b")


def test_upload_streams_the_file_once_in_chunks_and_returns_the_servers_reference(tmp_path, fakes):
    fake = fakes(upload_rename="renamed-")
    data = clip_bytes("big", 2 * UPLOAD_CHUNK + 12345)
    path = tmp_path / "big.mp4"
    path.write_bytes(data)
    with open(path, "rb") as f:
        chunks = [len(c) for c in FileChunks(f, path, len(data))]
    assert chunks == [UPLOAD_CHUNK, UPLOAD_CHUNK, 12345]  # never the whole file in memory

    reference = ComfyClient(fake.url).upload_input(path, "big_0123.mp4", UPLOAD_SUBFOLDER, len(data), sha(data))
    assert reference == f"{UPLOAD_SUBFOLDER}/renamed-big_0123.mp4"  # the name the server answered
    (upload,) = fake.uploads
    assert upload["fields"] == {"type": "input", "subfolder": UPLOAD_SUBFOLDER, "overwrite": "true"}
    assert (upload["field"], upload["filename"], upload["content_type"]) == ("image", "big_0123.mp4", "video/mp4")
    assert upload["size"] == len(data) and upload["sha256"] == sha(data)
    assert "Transfer-Encoding" not in upload["headers"]  # a plain Content-Length body, as aiohttp's limit expects
    assert fake.input_sha256(reference) == sha(data)


def test_upload_refusals_name_the_file_or_the_status(tmp_path, fakes, monkeypatch):
    import builtins

    fake = fakes()
    client = ComfyClient(fake.url)
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"0123456789")
    with pytest.raises(InputFileError, match=f"{path} changed since the run started"):
        client.upload_input(path, "clip.mp4", "s", 10, sha(b"something else"))
    with pytest.raises(InputFileError, match=f"{path} got shorter since the run started"):
        client.upload_input(path, "clip.mp4", "s", 20, sha(b"x"))
    real_open = builtins.open

    def refuse(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refuse)
    with pytest.raises(InputFileError, match=f"cannot read {path}: Permission denied"):
        client.upload_input(path, "clip.mp4", "s", 10, sha(b"0123456789"))
    monkeypatch.undo()
    fake.upload_status = 413
    with pytest.raises(HttpError) as err:
        client.upload_input(path, "clip.mp4", "s", 10, sha(b"0123456789"))
    assert err.value.status == 413
