"""flashvideo_queue over a folder of videos (``--videos DIR``), without a host: which files count, how prompts pair
with videos, the multipart upload (checked by the fake's own parser), where the video goes in the graph, output
names, and resuming or restarting when a video changed. The fake ComfyUI (support/fake_comfy_server.py) stores
uploads in its input folder, rejects a LoadVideo naming a file it does not have, and writes into each "video"
the sha256 of the file its LoadVideo read. tests/test_queue_real_host.py runs a folder on real hosts."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import io
import json
import threading
from pathlib import Path

import pytest

from flashvideo_queue import InputError, Options, run
from flashvideo_queue.cli import main
from flashvideo_queue.client import UPLOAD_CHUNK, ComfyClient, FileChunks, multipart_form
from flashvideo_queue.errors import HttpError, InputFileError
from flashvideo_queue.prompts import Prompt
from flashvideo_queue.videos import (UPLOAD_SUBFOLDER, VIDEO_EXTENSIONS, Video, list_videos, pair_prompts,
                                     videos_sha256)
from flashvideo_queue.workflow import parse_video_targets
from support.fake_comfy_server import FLAKY
from support.queue_runs import manifest, run_quiet

REPO = Path(__file__).resolve().parent.parent
ENHANCE = json.loads((REPO / "example_workflows" / "api" / "flashvideo_enhance_video.json").read_text())
#: core nodes only: what a batch over videos needs when the workflow takes no prompt
COPY = {"1": {"class_type": "LoadVideo", "inputs": {"file": "placeholder.mp4"}, "_meta": {"title": "Clip"}},
        "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "x", "format": "mp4",
                                                    "codec": "h264"}}}
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


def write_inputs(tmp_path: Path, prompts=PROMPTS[:1], workflow=ENHANCE) -> tuple[Path, Path]:
    prompts_file, workflow_file = tmp_path / "prompts.txt", tmp_path / "workflow.json"
    prompts_file.write_text("\n".join(prompts) + "\n", "utf-8")
    workflow_file.write_text(json.dumps(workflow), "utf-8")
    return prompts_file, workflow_file


def options(tmp_path: Path, fake, **kwargs) -> Options:
    values = dict(prompts=tmp_path / "prompts.txt", workflow=tmp_path / "workflow.json", servers=[fake.url],
                  output_dir=tmp_path / "out", videos=tmp_path / "clips", poll_interval=0.05, server_grace=0.4,
                  connect_timeout=2.0, http_timeout=5.0)
    values.update(kwargs)
    return Options(**values)


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


@pytest.mark.parametrize("case, message", [
    ("2 prompts, 3 videos", "prompts.txt has 2 prompts and --videos {d} has 3 videos: give one prompt"),
    ("file and --prompt", "a prompts file ({t}/prompts.txt) and --prompt: give one or the other"),
    ("no prompt, workflow takes one", "the workflow takes a prompt (node 2) and none was given: pass a prompts file"),
    ("no prompt, no videos", "no prompts: give a prompts file (one prompt per line) or --prompt TEXT"),
    ("video target without videos", "--video-target only goes with --videos DIR"),
    ("no LoadVideo", "--videos: the workflow has no LoadVideo node to put the videos in; add a Load Video node, or "
                     "name the input that takes the file with --video-target NODE.INPUT"),
    ("bad video target", "--video-target '20.path': node 20 (LoadVideo) has no input 'path' (inputs: file)"),
    ("empty --prompt", "--prompt is empty"),
])
def test_bad_video_batches_exit_2_with_one_clear_line(tmp_path, capsys, case, message):
    prompts_file, workflow_file = write_inputs(tmp_path, prompts=PROMPTS[:2])
    folder = make_clips(tmp_path / "clips")
    args = [str(prompts_file), "--videos", str(folder)]
    if case == "file and --prompt":
        args += ["--prompt", "a fox"]
    elif case == "no prompt, workflow takes one":
        args = ["--videos", str(folder)]
    elif case == "no prompt, no videos":
        args = []
    elif case == "video target without videos":
        args = ["--prompt", "a fox", "--video-target", "20.file"]
    elif case == "no LoadVideo":
        workflow = json.loads(json.dumps({k: v for k, v in ENHANCE.items() if k not in ("20", "21")}))
        for node in workflow.values():  # and the links to them (a dangling link is refused first)
            node["inputs"] = {k: v for k, v in node["inputs"].items() if not (isinstance(v, list) and v[0] in ("20", "21"))}
        workflow_file.write_text(json.dumps(workflow))
        args = ["--prompt", "a fox", "--videos", str(folder)]
    elif case == "bad video target":
        args = ["--prompt", "a fox", "--videos", str(folder), "--video-target", "20.path"]
    elif case == "empty --prompt":
        args = ["--prompt", "  ", "--videos", str(folder)]
    code = main([*args, "--workflow", str(workflow_file), "--server", "http://127.0.0.1:1",
                 "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message.format(d=folder, t=tmp_path) in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_video_targets_default_to_every_load_video_and_resolve_like_set(tmp_path):
    graph = json.loads(json.dumps(ENHANCE))
    assert parse_video_targets(graph, []) == [("20", "file")]
    assert parse_video_targets(graph, ["Video to enhance.file"]) == parse_video_targets(graph, ["LoadVideo.file"]) == [
        ("20", "file")]
    graph["22"] = {"class_type": "LoadVideo", "inputs": {"file": "b.mp4"}, "_meta": {"title": "Second"}}
    assert parse_video_targets(graph, []) == [("20", "file"), ("22", "file")]
    assert parse_video_targets(graph, ["22.file"]) == [("22", "file")]
    with pytest.raises(InputError, match="--video-target 'LoadVideo.file' is ambiguous"):
        parse_video_targets(graph, ["LoadVideo.file"])


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


# -- whole batches --------------------------------------------------------------------------------------------------
def test_folder_batch_uploads_each_video_and_renders_it_with_the_prompt_and_a_seed(tmp_path, fakes):
    fake = fakes()
    write_inputs(tmp_path)
    make_clips(tmp_path / "clips", extra=("notes.txt",))
    summary = run_quiet(options(tmp_path, fake, seed_base=100))
    assert summary.exit_code == 0 and len(summary.done) == 3, summary.report()
    names = ["a take.MOV", "b_take.mp4", "c.webm"]
    assert [u["filename"] for u in fake.uploads] == [Video(Path(n), 64, sha(clip_bytes(n))).upload_name for n in names]
    data = manifest(tmp_path)
    assert data["videos"]["count"] == 3 and data["videos"]["path"] == str(tmp_path / "clips")
    for i, (name, received, item) in enumerate(zip(names, fake.received, data["items"])):
        graph = received["graph"]
        assert graph["20"]["inputs"]["file"] == f"{UPLOAD_SUBFOLDER}/{fake.uploads[i]['filename']}"
        assert graph["2"]["inputs"]["prompt"] == PROMPTS[0]
        assert graph["22"]["inputs"]["seed"] == 100 + i  # the Enhance Video node's one seed
        assert item["video"] == {"name": name, "size": 64, "sha256": sha(clip_bytes(name))}
        assert item["line"] == 1 and item["seed"] == 100 + i
        (output,) = item["outputs"]
        assert output.startswith(f"{i:04d}_{['a-take', 'b_take', 'c'][i].replace('_', '-')}_15_")
        assert f"|video={sha(clip_bytes(name))}".encode() in (tmp_path / "out" / output).read_bytes()
    assert "done    #0000 a take.MOV: 0000_a-take_15_" in summary.report()

    again = run_quiet(options(tmp_path, fake, seed_base=100))  # resumed: nothing uploaded or rendered twice
    assert again.exit_code == 0 and again.skipped == 3 and len(fake.uploads) == 3 and len(fake.received) == 3


def test_one_prompt_per_video_pairs_them_in_name_order(tmp_path, fakes):
    fake = fakes()
    write_inputs(tmp_path, prompts=PROMPTS)
    make_clips(tmp_path / "clips")
    summary = run_quiet(options(tmp_path, fake))
    assert summary.exit_code == 0, summary.report()
    assert fake.texts() == PROMPTS and [i["line"] for i in manifest(tmp_path)["items"]] == [1, 2, 3]


def test_prompt_on_the_command_line_and_a_workflow_without_a_prompt(tmp_path, fakes):
    fake = fakes()
    _, workflow_file = write_inputs(tmp_path)
    make_clips(tmp_path / "clips", names=("a.mp4",))
    summary = run_quiet(options(tmp_path, fake, prompts=None, prompt="  a calm lake  "))
    assert summary.exit_code == 0 and fake.texts() == ["a calm lake"], summary.report()
    assert manifest(tmp_path)["prompts"]["text"] == "a calm lake"

    workflow_file.write_text(json.dumps(COPY))  # LoadVideo -> SaveVideo: no prompt needed, none given
    other = Options(**{**options(tmp_path, fake).__dict__, "prompts": None, "output_dir": tmp_path / "copy"})
    summary = run_quiet(other)
    assert summary.exit_code == 0, summary.report()
    graph = fake.received[-1]["graph"]
    assert graph["1"]["inputs"]["file"].startswith(f"{UPLOAD_SUBFOLDER}/a_") and "prompt" not in json.dumps(graph)
    assert summary.done[0]["outputs"][0].startswith("0000_a_2_")


def test_video_target_puts_the_file_where_asked(tmp_path, fakes):
    fake = fakes()
    workflow = json.loads(json.dumps(COPY))
    workflow["3"] = {"class_type": "LoadVideo", "inputs": {"file": "kept.mp4"}, "_meta": {"title": "Other"}}
    fake.in_dir.mkdir(parents=True)
    (fake.in_dir / "kept.mp4").write_bytes(b"already there")
    write_inputs(tmp_path, workflow=workflow)
    make_clips(tmp_path / "clips", names=("a.mp4",))
    summary = run_quiet(options(tmp_path, fake, prompts=None, video_targets=["Clip.file"]))
    assert summary.exit_code == 0, summary.report()
    graph = fake.received[0]["graph"]
    assert graph["1"]["inputs"]["file"].startswith(f"{UPLOAD_SUBFOLDER}/a_")
    assert graph["3"]["inputs"]["file"] == "kept.mp4"


def test_each_video_is_uploaded_once_per_server_and_run(tmp_path, fakes):
    fake = fakes(exec_error=FLAKY)  # every prompt's first attempt fails: the retry reuses the upload
    write_inputs(tmp_path, prompts=PROMPTS)
    make_clips(tmp_path / "clips", names=("a.mp4", "b.mp4"))
    (tmp_path / "clips" / "c.mp4").write_bytes(clip_bytes("a.mp4"))  # the same content under another name
    summary = run_quiet(options(tmp_path, fake, retries=1))
    assert summary.exit_code == 0 and len(fake.received) == 6, summary.report()
    assert sorted(u["filename"] for u in fake.uploads) == sorted({u["filename"] for u in fake.uploads})
    assert len(fake.uploads) == 2


def test_changed_video_is_refused_on_resume_and_restart_renders_only_it(tmp_path, fakes):
    fake = fakes()
    write_inputs(tmp_path)
    folder = make_clips(tmp_path / "clips")
    assert run_quiet(options(tmp_path, fake)).exit_code == 0
    before = manifest(tmp_path)
    (folder / "b_take.mp4").write_bytes(clip_bytes("an edited take"))
    with pytest.raises(InputError, match="belongs to another batch \\(videos changed.*--restart"):
        run_quiet(options(tmp_path, fake))
    summary = run_quiet(options(tmp_path, fake, restart=True))
    assert summary.exit_code == 0, summary.report()
    assert len(fake.received) == 4 and fake.uploads[-1]["sha256"] == sha(clip_bytes("an edited take"))
    after = manifest(tmp_path)
    assert after["items"][1]["video"]["sha256"] == sha(clip_bytes("an edited take"))
    assert after["items"][1]["prompt_id"] != before["items"][1]["prompt_id"]
    assert [after["items"][i]["prompt_id"] for i in (0, 2)] == [before["items"][i]["prompt_id"] for i in (0, 2)]
    output = tmp_path / "out" / after["items"][1]["outputs"][0]
    assert f"|video={sha(clip_bytes('an edited take'))}".encode() in output.read_bytes()


def test_manifest_item_with_another_video_is_rendered_again(tmp_path, fakes):
    fake = fakes()
    write_inputs(tmp_path)
    make_clips(tmp_path / "clips")
    assert run_quiet(options(tmp_path, fake)).exit_code == 0
    data = manifest(tmp_path)
    data["items"][2]["video"]["sha256"] = "0" * 64  # an edit: the record no longer describes c.webm
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(data))
    summary = run_quiet(options(tmp_path, fake))
    assert summary.exit_code == 0 and summary.skipped == 2
    assert "manifest item 2 (c.webm): its video differs; rendering it" in summary.log
    assert len(fake.received) == 4


def test_upload_refused_as_too_large_fails_the_item_once_with_the_fix(tmp_path, fakes):
    fake = fakes(upload_status=413)
    write_inputs(tmp_path)
    make_clips(tmp_path / "clips", names=("a.mp4",))
    summary = run_quiet(options(tmp_path, fake, retries=2))
    assert summary.exit_code == 1 and len(fake.uploads) == 1 and not fake.received
    error = summary.failed[0]["error"]
    assert "refused the upload of a.mp4 (0.0 MB) as too large (HTTP 413)" in error
    assert "--max-upload-size" in error and "not retried" in error
    assert "FAILED  #0000 a.mp4 (1 attempt)" in summary.report()


def test_video_deleted_during_the_run_fails_its_item_with_the_file_named(tmp_path, fakes):
    hold = threading.Event()
    fake = fakes(hold=hold)
    write_inputs(tmp_path)
    folder = make_clips(tmp_path / "clips", names=("a.mp4", "b.mp4"))
    log, result = io.StringIO(), {}
    thread = threading.Thread(target=lambda: result.update(summary=run(options(tmp_path, fake), stream=log, tty=False)))
    thread.start()
    try:
        while not fake.received:
            thread.join(0.01)
        (folder / "b.mp4").unlink()
    finally:
        hold.set()
        thread.join(20)
    summary = result["summary"]
    assert summary.exit_code == 1 and [i["index"] for i in summary.done] == [0], log.getvalue()
    error = summary.failed[0]["error"]
    assert f"cannot read {folder / 'b.mp4'}: No such file or directory" in error and "rerun" in error
    assert len(fake.uploads) == 1
