import os
import subprocess
import sys

import pytest

from engine.cli import build_parser
from tests.helpers import ROOT


def cli(home, *args, timeout=180):
    env = dict(os.environ, SLMOPS_HOME=str(home), SLMOPS_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_help_lists_every_command(tmp_path):
    result = cli(tmp_path, "--help")
    assert result.returncode == 0
    for command in ("models", "chat", "runs", "run"):
        assert command in result.stdout


def test_every_subcommand_has_help_text():
    parser = build_parser()
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            assert sub.description or action._choices_actions, name
            for choice in action._choices_actions:
                assert choice.help, f"{choice.dest} has no help"


def test_models_add_list_chat_runs(tmp_path, tiny_model_dir):
    home = tmp_path / "ws"
    added = cli(home, "models", "add", str(tiny_model_dir), "--name", "tiny")
    assert added.returncode == 0, added.stderr
    listed = cli(home, "models", "list")
    assert "tiny" in listed.stdout and "LlamaForCausalLM" in listed.stdout
    chat = cli(home, "chat", "--model", "tiny", "--prompt", "Hello", "--max-new-tokens", "5")
    assert chat.returncode == 0, chat.stderr
    assert "tok/s" in chat.stderr
    config = tmp_path / "selftest.yaml"
    config.write_text("kind: selftest\nmodel_id: tiny\nprompts: [Hi]\nmax_new_tokens: 3\n")
    ran = cli(home, "run", "--config", str(config))
    assert ran.returncode == 0, ran.stderr
    assert "succeeded" in ran.stderr
    runs = cli(home, "runs", "list")
    assert "selftest" in runs.stdout and "succeeded" in runs.stdout
    shown = cli(home, "runs", "show", "1")
    assert '"kind": "selftest"' in shown.stdout and "decode_tok_s" in shown.stdout


@pytest.mark.parametrize("args, message", [
    (("models", "add", "/no/such/folder"), "neither an existing folder"),
    (("models", "add", "someone/some-model"), "offline"),
    (("runs", "show", "99"), "No run with id 99"),
    (("chat", "--model", "ghost", "--prompt", "hi"), "No model named 'ghost'"),
    (("serve", "--model", "ghost", "--adapter", "a"), "No model named 'ghost'"),
])
def test_errors_are_one_clear_line(tmp_path, args, message):
    result = cli(tmp_path / "ws", *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_job_flags_come_from_the_config_fields():
    from engine import BenchmarkConfig, EvaluateConfig, QuantizeConfig
    from engine.cli import build_parser
    from engine.cli_flags import config_from_args

    parser = build_parser()
    for command, cls in (("quantize", QuantizeConfig), ("benchmark", BenchmarkConfig), ("eval", EvaluateConfig)):
        sub = parser._subparsers._group_actions[0].choices[command]
        flags = {a.dest: a for a in sub._actions}
        assert set(cls.model_fields) <= set(flags), command  # every field has its flag
        for name, field in cls.model_fields.items():
            assert flags[name].help == field.description.replace("%", "%%")  # argparse formats help with %
        assert "--help" in sub.format_help()
    args = parser.parse_args(["quantize", "--model", "m", "--name", "out", "--block-size", "64", "--no-symmetric",
                              "--method", "builder"])
    config = config_from_args(args, "quantize")
    assert (config.model_id, config.output_name, config.block_size, config.symmetric, config.method) == \
        ("m", "out", 64, False, "builder")
    assert config.kernel == QuantizeConfig.model_fields["kernel"].default  # not given: the config's default
    args = parser.parse_args(["benchmark", "--model", "a", "--model", "b", "--reps", "3"])
    assert config_from_args(args, "benchmark").model_ids == ["a", "b"]
