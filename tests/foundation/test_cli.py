from __future__ import annotations

import json
from pathlib import Path

import pytest

from riskguard import __version__
from tests._cli import run


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"riskguard {__version__}"


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for cmd in ("init", "doctor", "demo"):
        assert cmd in out


def test_init_then_doctor_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "init", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "riskguard.toml").is_file()
    assert (tmp_path / "policies" / "model.conf").is_file()
    assert (tmp_path / "audit").is_dir()
    code, out, err = run(capsys, "--config", str(tmp_path / "riskguard.toml"), "doctor", "--json")
    assert code == 0, out + err
    report = json.loads(out)
    assert report["ok"] is True
    names = [c["name"] for c in report["checks"]]
    assert names[:4] == ["config", "database driver", "database reachable", "schema"]


def test_second_init_refuses_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "init", str(tmp_path))[0] == 0
    cfg = tmp_path / "riskguard.toml"
    cfg.write_text(cfg.read_text() + "# edited by hand\n")
    policy = tmp_path / "policies" / "policy.csv"
    policy.write_text("p, edited, *, *, *, allow\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, _, err = run(capsys, "init", str(tmp_path))
    assert code == 2
    assert "refusing to overwrite" in err and "--force" in err
    assert "Traceback" not in err
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before
    assert run(capsys, "init", str(tmp_path), "--force")[0] == 0
    assert "edited" not in policy.read_text()


def test_doctor_reports_a_missing_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "riskguard.toml"
    cfg.write_text('[database]\nurl = "sqlite:///empty.db"\n')
    code, out, _ = run(capsys, "--config", str(cfg), "doctor", "--json")
    assert code == 1
    schema = next(c for c in json.loads(out)["checks"] if c["name"] == "schema")
    assert schema["ok"] is False and "missing tables" in schema["detail"]


def test_doctor_unreachable_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "riskguard.toml"
    cfg.write_text(
        '[database]\nurl = "postgresql://nobody@127.0.0.1:1/none"\nconnect_timeout_s = 1\n'
    )
    code, out, _ = run(capsys, "--config", str(cfg), "doctor", "--json")
    assert code == 1
    reach = next(c for c in json.loads(out)["checks"] if c["name"] == "database reachable")
    assert reach["ok"] is False


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[database]\nurll = 1\n", "unknown key 'database.urll'"),
        ("[database\n", "malformed TOML"),
        ('[database]\nurl = "oracle://x/y"\n', "unsupported database URL scheme"),
        ("[database]\necho = 3\n", "invalid value for 'database.echo'"),
    ],
)
def test_config_errors_exit_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str
) -> None:
    cfg = tmp_path / "riskguard.toml"
    cfg.write_text(text)
    code, _, err = run(capsys, "--config", str(cfg), "doctor")
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err
    assert str(cfg.resolve()) in err or "database.url" in err


def test_debug_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "riskguard.toml"
    cfg.write_text("[database]\nurll = 1\n")
    code, _, err = run(capsys, "--debug", "--config", str(cfg), "doctor")
    assert code == 2
    assert "Traceback" in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "doctor", "--no-such-flag")
    assert code == 2
    assert "no-such-flag" in err


def test_demo_runs_on_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "demo", "--dir", str(tmp_path / "demo"))
    assert code == 0, out + err
    assert "demo finished" in out
    assert (tmp_path / "demo" / "riskguard.db").is_file()
