"""`voicebot test --fake-server`: every step passes against a healthy fake server, and a step
whose server-side facts do not hold fails with its reason and exit code 1."""

from __future__ import annotations

from typer.testing import CliRunner

from realtime_voicebot.cli import app
from realtime_voicebot.fake.config import FakeServerConfig
from realtime_voicebot.selftest import STEPS, Step, StepResult, format_result, run_and_report
from realtime_voicebot.testing import scaled

STEP_NAMES = [step.name for step in STEPS]


def step(name: str) -> list[Step]:
    return [s for s in STEPS if s.name == name]


def test_the_command_passes_every_step() -> None:
    result = CliRunner().invoke(app, ["test", "--fake-server"])
    lines = result.output.splitlines()
    assert result.exit_code == 0, result.output
    assert STEP_NAMES == [
        "normal turn",
        "barge-in",
        "compaction",
        "dropped connection",
        "session rollover",
    ]
    for name in STEP_NAMES:
        assert any(line.startswith(f"✔ {name}  ") for line in lines), result.output
    assert not any(line.startswith("✘") for line in lines)
    assert lines[-1].startswith("total ") and lines[-1].endswith("5/5 passed")


def test_without_fake_server_it_explains_and_exits_2() -> None:
    result = CliRunner().invoke(app, ["test"])
    assert result.exit_code == 2
    assert "voicebot test --fake-server" in result.output


def test_rejected_deletes_fail_the_compaction_step() -> None:
    """The server refuses every delete: the summary goes in, the old turns stay, and the step
    says so (the bot keeps running: this is a failure the app survives, not a crash)."""

    def reject_deletes(config: FakeServerConfig) -> None:
        config.faults.reject_deletes = 1000

    lines: list[str] = []
    code = run_and_report(lines.append, steps=step("compaction"), adjust_server=reject_deletes)
    assert code == 1
    assert lines[0].startswith("✘ compaction  ")
    assert "summarized items are still on the server" in lines[0]
    assert lines[-1].endswith("0/1 passed, 1 failed")


def test_a_rejected_key_fails_the_step_with_the_bots_message() -> None:
    def only_another_key(config: FakeServerConfig) -> None:
        config.api_keys = frozenset({"sk-someone-else"})

    lines: list[str] = []
    code = run_and_report(lines.append, steps=step("normal turn"), adjust_server=only_another_key)
    assert code == 1
    assert lines[0].startswith("✘ normal turn  ")
    assert "bot stopped" in lines[0] and "401" in lines[0]


def test_a_reply_that_never_comes_fails_the_normal_turn() -> None:
    """The server holds every reply back for a minute: the step fails on the missing reply
    once the runner's wait is over."""

    def no_replies(config: FakeServerConfig) -> None:
        config.faults.response_delay_s = 60.0

    lines: list[str] = []
    code = run_and_report(
        lines.append, steps=step("normal turn"), adjust_server=no_replies, wait_s=1.5
    )
    assert code == 1
    wanted = f"no reply to 'what is the capital of France' on the server within {scaled(1.5):g} s"
    assert wanted in lines[0]


def test_the_barge_in_step_passes_in_the_beta_dialect() -> None:
    lines: list[str] = []
    assert run_and_report(lines.append, steps=step("barge-in"), dialect="beta") == 0, lines
    assert lines[0].startswith("✔ barge-in  ") and "truncated at" in lines[0]


def test_checklist_lines() -> None:
    assert format_result(StepResult("normal turn", True, 0.844)) == "✔ normal turn  0.84 s"
    failed = StepResult("barge-in", False, 3.016, reason="no truncate")
    assert format_result(failed) == "✘ barge-in  3.02 s  no truncate"
