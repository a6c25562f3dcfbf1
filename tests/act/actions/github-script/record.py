"""Append {script, env, files, token_set} of one github-script call to github-script.jsonl."""

import json
import os
import re
from pathlib import Path

script = os.environ["SCRIPT"]
env_names = sorted(set(re.findall(r"process\.env\.([A-Za-z_]\w*)", script)))
file_names = sorted(set(re.findall(r"readFileSync\(\s*['\"]([^'\"]+)['\"]", script)))
record = {
    "script": script,
    "env": {name: os.environ.get(name) for name in env_names},
    "files": {
        name: Path(name).read_text() if Path(name).is_file() else None for name in file_names
    },
    "token_set": bool(os.environ.get("TOKEN")),
}
folder = Path(os.environ.get("ACT_RECORDS", "/tmp/act-records"))
folder.mkdir(parents=True, exist_ok=True)
with (folder / "github-script.jsonl").open("a") as out:
    out.write(json.dumps(record) + "\n")
print(f"github-script stand-in recorded a call reading {file_names or 'no files'}")
