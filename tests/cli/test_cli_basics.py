"""The CLI's group, help and info command, driven through click's runner."""

from __future__ import annotations

from click.testing import CliRunner

from audiogen_cli.main import cli


def test_help_lists_commands_without_importing_them() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "codec" in result.output and "info" in result.output


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "0.1.0" in result.output


def test_info_prints_device_and_blas() -> None:
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 0, result.output
    assert "device" in result.output and "cpu blas" in result.output


def test_unknown_command() -> None:
    result = CliRunner().invoke(cli, ["nope"])
    assert result.exit_code == 2 and "No such command" in result.output
