"""The README opens with the two commands a new user runs; CI runs the second one."""

from pathlib import Path

from tests.readme_commands import readme_commands

ROOT = Path(__file__).resolve().parent.parent


def test_readme_opens_with_main_and_test_commands():
    main_cmd, test_cmd = readme_commands()
    assert "\n" not in main_cmd and "\n" not in test_cmd
    assert "qsit assess" in main_cmd and "pip install" in main_cmd
    assert "pytest" in test_cmd and '".[test]"' in test_cmd


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_commands.py test" in ci


def test_example_image_in_main_command_exists():
    main_cmd, _ = readme_commands()
    assert "examples/hopper_noise.jpg" in main_cmd and (ROOT / "examples" / "hopper_noise.jpg").is_file()
