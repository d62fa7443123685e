"""What a person sees: a quiet default, a live bar on a terminal only, errors in one or two lines with exit codes."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beam_gbif.testing.gcs_emulator import NO_METADATA_ENV
from pipelines.gbif_media import run

ROOT = Path(__file__).resolve().parents[1]
# A GBIF API that is not there: a closed loopback port.
UNREACHABLE_API = "http://127.0.0.1:9/v1"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, **NO_METADATA_ENV, "PYTHONPATH": str(ROOT), **extra}


def _demo_command(output: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines.demo", f"--output={output}"]


def test_the_demo_prints_only_beam_gbif_lines_and_no_bar_in_a_pipe(tmp_path: Path) -> None:
    done = subprocess.run(_demo_command(tmp_path / "out"), capture_output=True, text=True, env=_env(), timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    lines = text.splitlines()
    assert len(lines) <= 30, text
    assert not [line for line in lines if "apache_beam" in line or "INFO" in line], text
    assert "GBIF read plan" in text and "150 files in the dataset" in text
    assert "\r" not in text and "\x1b[" not in text, "no carriage return or cursor escape outside a terminal"
    assert "downloading:" not in text


def _run_in_pty(command: list[str], cwd: Path) -> tuple[int, str]:
    """Runs ``command`` with stdout and stderr on a pseudo-terminal; returns its exit code and everything it drew."""
    primary, secondary = pty.openpty()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, env=_env(COLUMNS="120"), cwd=cwd)
    os.close(secondary)
    chunks = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 1)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal closes when the process ends
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif process.poll() is not None:
            break
    os.close(primary)
    return process.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_shows_live_reading_and_download_bars_ending_at_n_of_n(tmp_path: Path) -> None:
    code, drawn = _run_in_pty(_demo_command(tmp_path / "out"), tmp_path)
    assert code == 0, drawn
    assert "downloading:" in drawn and "\r" in drawn, drawn
    final = [part for part in drawn.replace("\n", "\r").split("\r") if part.startswith("downloading:")][-1]
    assert "150/150 files" in final and "files/s" in final and "0 failed" in final and "MB" in final, final
    assert "download: " not in drawn, "the bar replaces the periodic log line"
    reading = [part for part in drawn.replace("\n", "\r").split("\r") if part.startswith("reading GBIF:")][-1]
    assert reading.startswith("reading GBIF: 214 occurrences") and "occurrences/s" in reading, reading


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return [line for line in (captured.out + captured.err).splitlines() if line.strip()]


def test_an_unreachable_gbif_api_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [f"--gbif_api_url={UNREACHABLE_API}", '--query={"speciesKey": [1]}', f"--output={tmp_path / 'out'}"]
    assert run(argv) == 1
    lines = _error_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith("beam-gbif: error: cannot reach the GBIF API at http://127.0.0.1:9/v1 (ConnectionError: connection refused)")
    assert "check --gbif_api_url" in lines[0]


def test_an_api_answering_4xx_is_one_line_and_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from beam_gbif.testing.fake_gbif import FakeGbifApi
    from beam_gbif.testing.synthetic import SyntheticOccurrences

    with FakeGbifApi(SyntheticOccurrences([1], ["d"], per_stream=2)) as api:
        # A path the fake API does not serve: HTTP 404, never retried.
        assert run([f"--gbif_api_url={api.base_url}/nowhere", '--query={"speciesKey": [1]}', f"--output={tmp_path / 'out'}"]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and "HTTP 404" in lines[0] and "check --query and --gbif_api_url" in lines[0], lines


@pytest.mark.parametrize("where", ["file", "unwritable"])
def test_an_output_that_cannot_be_a_folder_is_bad_usage_in_one_line(tmp_path: Path, where: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    if where == "file":
        output = tmp_path / "a_file"
        output.write_text("x")
    else:
        (tmp_path / "locked").mkdir(mode=0o500)
        output = tmp_path / "locked" / "dataset"
        if os.access(tmp_path / "locked", os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
    assert run([f"--gbif_api_url={UNREACHABLE_API}", '--query={"speciesKey": [1]}', f"--output={output}"]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("beam-gbif: error: --output") and str(output) in lines[0], lines
    assert "not a folder" in lines[0] if where == "file" else "cannot write there" in lines[0]


def test_an_output_under_a_file_is_bad_usage_even_as_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a_file").write_text("x")
    output = tmp_path / "a_file" / "dataset"
    assert run([f"--gbif_api_url={UNREACHABLE_API}", '--query={"speciesKey": [1]}', f"--output={output}"]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and "cannot write there" in lines[0] and "choose a folder" in lines[0], lines


def test_missing_gcs_credentials_are_two_lines_and_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in NO_METADATA_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no gcloud application-default credentials there
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    assert run([f"--gbif_api_url={UNREACHABLE_API}", '--query={"speciesKey": [1]}', "--output=gs://some-bucket/data"]) == 1
    lines = _error_lines(capsys)
    assert len(lines) == 2 and "no Google Cloud credentials" in lines[0] and "gcloud auth application-default login" in lines[1]


def test_debug_shows_the_traceback_and_v_q_are_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.options import normalize_argv

    assert normalize_argv(["-v", "-q"]) == ["--log_level=debug", "--log_level=warning"]
    (tmp_path / "a_file").write_text("x")
    assert run([f"--gbif_api_url={UNREACHABLE_API}", '--query={"speciesKey": [1]}', f"--output={tmp_path / 'a_file'}",
                "--log_level=debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("exists and is not a folder")


@pytest.mark.parametrize(("flag", "cause"), [("--nb_samples=abc", "invalid int value: 'abc'"),
                                             ("--log_level=loud", "invalid choice: 'loud'")])
def test_a_flag_argparse_refuses_is_one_line_not_a_usage_page(tmp_path: Path, flag: str, cause: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert run([flag, f"--output={tmp_path / 'out'}"]) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and cause in lines[0] and lines[0].endswith("see beam-gbif --help"), lines
    assert not (tmp_path / "out").exists()
