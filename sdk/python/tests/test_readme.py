"""The README's `## Quickstart (Python)` block, run exactly as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

EXPECTED = [
    "hello world 0",
    'stdout hello {"prompt": "summarize this PR"}',
    "completed 0",
]


def quickstart_block() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.find("## Quickstart (Python)")
    assert start >= 0, "README.md has no '## Quickstart (Python)' section"
    end = readme.find("\n## ", start + 1)
    blocks = re.findall(r"```python\n(.*?)```", readme[start:end if end >= 0 else None], re.S)
    assert len(blocks) == 1, "the Python quickstart should have exactly one python block"
    return blocks[0]


def test_readme_python_quickstart_runs_as_printed(server, tmp_path):
    code = quickstart_block()
    # The `# ...` lines after the prints are the expected output.
    comments = [line.strip()[2:] for line in code.splitlines() if line.strip().startswith("# ")]
    assert all(line in comments for line in EXPECTED), comments
    script = tmp_path / "quickstart.py"
    script.write_text(code)
    env = dict(os.environ, AGENTTIER_API_URL=server.url, AGENTTIER_API_KEY=server.key)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == EXPECTED
