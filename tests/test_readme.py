"""The README is the contract: its Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch, data_dir):
    monkeypatch.chdir(tmp_path)  # the examples write ./lmc_runs
    monkeypatch.setenv("LMC_DATA_DIR", str(data_dir))
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})


def test_readme_shows_the_two_commands():
    text = README.read_text()
    assert re.search(r"^python3 -m venv .*pip install -e \. && lmc demo$", text, re.M)
    assert re.search(r'^python3 -m venv .*pip install -e "\.\[test\]" && pytest -q$', text, re.M)
