"""flashvideo_queue over a folder of videos (``--videos DIR``), without a host: which files count, how prompts pair
with videos, and the name each video is uploaded under."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from flashvideo_queue import InputError
from flashvideo_queue.prompts import Prompt
from flashvideo_queue.videos import (UPLOAD_SUBFOLDER, VIDEO_EXTENSIONS, Video, list_videos, pair_prompts,
                                     videos_sha256)

PROMPTS = ["A red fox in fresh snow, cinematic.", "A whale beside a sailboat, spray in the sun.",
           "Rain on a neon street at night."]


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
