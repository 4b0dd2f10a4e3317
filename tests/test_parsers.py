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


def test_sections_use_the_random_marker_only():
    marker = "@@abc:"
    out = 'junk\n@@abc:user\n0\n@@abc:python\n@@evil:json\n{}\n@@abc:json\n{"a": 1}\n@@abc:end\n'
    sections = probe.split_sections(out, marker)
    assert sections["user"] == "0"
    assert sections["python"] == "@@evil:json\n{}"
    assert sections["json"] == '{"a": 1}'
    assert "end" in sections


def test_last_line_of_traceback():
    tb = "Traceback (most recent call last):\n  File \"<string>\", line 1\nModuleNotFoundError: No module named 'x'\n"
    assert probe.last_line(tb) == "ModuleNotFoundError: No module named 'x'"
