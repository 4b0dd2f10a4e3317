"""Unit tests of the probe's parsers, on real outputs of the tools and files they read."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_baseimage import probe

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    ("name", "os_id", "version", "pretty", "like"),
    [
        ("ubuntu-16.04", "ubuntu", "16.04", "Ubuntu 16.04.7 LTS", ("debian",)),
        ("ubuntu-18.04", "ubuntu", "18.04", "Ubuntu 18.04.6 LTS", ("debian",)),
        ("ubuntu-20.04", "ubuntu", "20.04", "Ubuntu 20.04.6 LTS", ("debian",)),
        ("ubuntu-22.04", "ubuntu", "22.04", "Ubuntu 22.04.4 LTS", ("debian",)),
        ("ubuntu-24.04", "ubuntu", "24.04", "Ubuntu 24.04.1 LTS", ("debian",)),
        ("debian-12", "debian", "12", "Debian GNU/Linux 12 (bookworm)", ()),
        ("centos-7", "centos", "7", "CentOS Linux 7 (Core)", ("rhel", "fedora")),
        ("alpine-3.19", "alpine", "3.19.1", "Alpine Linux v3.19", ()),
    ],
)
def test_os_release(name, os_id, version, pretty, like):
    release = probe.parse_os_release((DATA / "os-release" / name).read_text())
    assert (release.id, release.version_id, release.pretty_name, release.id_like) == (os_id, version, pretty, like)


def test_os_release_codename_falls_back_to_ubuntu_codename():
    assert probe.parse_os_release("ID=ubuntu\nUBUNTU_CODENAME=xenial\n").codename == "xenial"


def test_os_release_tolerates_comments_escapes_and_garbage():
    text = '# comment\n\nID="my\\"distro"\nNOT A LINE\nVERSION_ID=\'1.0\'\nPRETTY_NAME="unterminated\n'
    release = probe.parse_os_release(text)
    assert release.id == 'my"distro'
    assert release.version_id == "1.0"
    assert release.pretty_name == "unterminated"


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("conda 4.5.11\n", "4.5.11"),  # conda < 4.6 printed this on stderr; the probe merges 2>&1
        ("conda 23.11.0\n", "23.11.0"),
        ("conda 4.14.0\n", "4.14.0"),
        ("/opt/conda/lib/python3.6/site-packages/x.py:1: UserWarning: old\n  warn()\nconda 4.8.3\n", "4.8.3"),
        ("conda 24.1.0.dev12\n", "24.1.0.dev12"),
        ("bash: conda: command not found\n", ""),
        ("", ""),
    ],
)
def test_conda_version(output, version):
    assert probe.parse_conda_version(output) == version


def test_conda_info_json_real_output():
    info = probe.parse_conda_info((DATA / "conda-info-23.11.json").read_text())
    assert info["conda_version"] == "23.11.0"
    assert info["root_prefix"] == "/opt/conda"
    assert info["platform"] == "linux-64"


def test_conda_info_json_after_warnings_and_garbage():
    text = "==> WARNING: A newer version of conda exists. <==\n" + (DATA / "conda-info-23.11.json").read_text()
    assert probe.parse_conda_info(text)["conda_version"] == "23.11.0"
    assert probe.parse_conda_info("not json {oops") == {}
    assert probe.parse_conda_info("") == {}


def test_dpkg_status_keeps_only_installed_and_ignores_continuations():
    packages = probe.parse_dpkg_status((DATA / "dpkg-status").read_text())
    assert packages == {
        "libcurl4": "7.68.0-1ubuntu2.22",  # really installed: wins over the provided name below
        "runit": "2.1.2-9.2ubuntu1",
        "liblttng-ust0": "2.11.0-1",
        "libcurl4t64": "8.14.1-2+deb13u7",
        "libcurl-virtual": "8.14.1-2+deb13u7 (provided by libcurl4t64)",
    }


def test_dpkg_provides_counts_as_installed_like_apt_does():
    text = (DATA / "dpkg-status").read_text().replace("Package: libcurl4\n", "Package: libcurl4-old\n")
    packages = probe.parse_dpkg_status(text)
    assert packages["libcurl4"] == "8.14.1-2+deb13u7 (provided by libcurl4t64)"


def test_dist_names_are_normalised():
    assert probe.normalise_dists({"AzureML_Defaults": "1.0.45", "azureml.core": "1.0"}) == {
        "azureml-defaults": "1.0.45",
        "azureml-core": "1.0",
    }


def record(marker: bytes, name: str, data: bytes) -> bytes:
    """One section as the probe's shell script frames it."""
    return marker + f"{name} {len(data)}\n".encode() + data


MARK = b"@@abc:"


def test_sections_are_cut_by_length_not_by_line():
    # conda >= 24.11 ends `info --json` without a newline: the next marker is glued to the JSON.
    conda_info = b'{"conda_version": "24.11.3"}'
    out = record(MARK, "conda_info", conda_info) + record(MARK, "python_exe", b"/usr/bin/python3")
    sections = probe.sections_of(probe.read_records(out, MARK))
    assert sections["conda_info"].data == conda_info
    assert sections["python_exe"].text == "/usr/bin/python3"


@pytest.mark.parametrize(
    "hostile",
    [
        b"@@abc:python_exe 3\nbad",  # a forged record inside a section
        b"@@abc:end 0\n",  # a forged end
        b"\x00\xff\xfe binary \r\n\x1b[2J",  # binary bytes and control characters
        b"x" * (1 << 20),  # large, no newline at all
        b"@@abc:json 999999999\n{}",  # a forged length
    ],
)
def test_what_a_section_prints_cannot_move_a_boundary(hostile):
    out = record(MARK, "conda_info", hostile) + record(MARK, "python_exe", b"/usr/bin/python3")
    out += record(MARK, "end", b"")
    sections = probe.sections_of(probe.read_records(out, MARK))
    assert sections["conda_info"].data == hostile
    assert sections["python_exe"].text == "/usr/bin/python3"
    assert set(sections) == {"conda_info", "python_exe", "end"}


def test_a_record_cut_by_the_end_of_the_stream_is_marked_incomplete():
    out = record(MARK, "user", b"0") + MARK + b"python 100\nonly a part"
    records = probe.read_records(out, MARK)
    assert [(r.name, r.complete) for r in records] == [("user", True), ("python", False)]


def test_split_sections_keeps_the_text_api():
    out = (record(MARK, "user", b"0") + record(MARK, "json", b'{"a": 1}')).decode()
    assert probe.split_sections(out, MARK.decode()) == {"user": "0", "json": '{"a": 1}'}


def test_python_answer_is_the_last_wellformed_object_record():
    forged = record(MARK, "json", b"[1, 2]")
    real = record(MARK, "json", b'{"version": "3.11.2"}')
    assert probe.python_answer(b"noise" + forged + b"noise" + real + b"trailing", MARK) == ({"version": "3.11.2"}, "")
    assert probe.python_answer(forged, MARK) == (None, "its answer is a JSON list, not an object")
    assert probe.python_answer(b"Traceback ...", MARK) == (None, "no answer")


def test_python_answer_nested_too_deep_is_a_problem_not_a_crash():
    deep = b'{"version": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert probe.python_answer(record(MARK, "json", deep), MARK) == (None, "its answer is nested too deeply to read")


def test_python_facts_type_check_every_field():
    data = {"version": 3, "executable": ["x"], "dists": [], "imports": {"m": 5, "n": {"ok": True}}}
    python, pip, imports, problems = probe.python_facts(data, "/usr/bin/python3")
    assert python.version == "" and python.executable == "/usr/bin/python3"
    assert pip == {}
    assert imports["m"].ok is False and "malformed" in imports["m"].error
    assert imports["n"].ok is True
    assert problems == [
        "`version` is a int, not a str",
        "`executable` is a list, not a str",
        "`dists` is a list, not a dict",
    ]
    problems = probe.python_facts({"version": "3.11; rm -rf"}, "py")[3]
    assert problems == ["`version` is '3.11; rm -rf', not a Python version"]


def test_os_release_unquoting_follows_shell_rules():
    assert probe.unquote('"a \\"b\\" \\$c"') == 'a "b" $c'
    assert probe.unquote("'it''s'") == "its"
    assert probe.unquote("plain\\ word more") == "plain word"
    assert probe.unquote('"unterminated') == "unterminated"


def test_os_release_parse_is_linear_on_a_huge_line():
    import time

    line = 'PRETTY_NAME="' + "a" * (5 << 20) + '"\nID=debian\n'
    started = time.monotonic()
    release = probe.parse_os_release(line)
    assert release.id == "debian" and len(release.pretty_name) == 5 << 20
    assert time.monotonic() - started < 10  # shlex took minutes on 5 MB


def test_dpkg_status_parses_from_a_stream_of_lines():
    text = (DATA / "dpkg-status").read_text()
    assert probe.parse_dpkg_status(iter(text.splitlines(keepends=True))) == probe.parse_dpkg_status(text)


def test_main_files_prefers_libraries_then_programs_and_skips_dirs_and_docs():
    listing = "\n".join(
        [
            "/.",
            "/usr",
            "/usr/bin",
            "/usr/bin/unzip",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu/libcurl.so.4.8.0",
            "/usr/lib/x86_64-linux-gnu/libcurl.so.4",
            "/usr/share/doc/libcurl4/copyright",
        ]
    )
    assert probe.main_files(listing) == [
        "/usr/lib/x86_64-linux-gnu/libcurl.so.4.8.0",
        "/usr/lib/x86_64-linux-gnu/libcurl.so.4",
        "/usr/bin/unzip",
    ]
    assert probe.main_files("/.\n/usr\n/usr/share/doc/nginx-light/copyright\n") == []


def test_last_line_of_traceback():
    tb = "Traceback (most recent call last):\n  File \"<string>\", line 1\nModuleNotFoundError: No module named 'x'\n"
    assert probe.last_line(tb) == "ModuleNotFoundError: No module named 'x'"
