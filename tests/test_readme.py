"""The README's promises that can drift: the configuration reference, and its verification snippet."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from pipeline.config_reference import render
from stages.webhook import sign

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_configuration_reference_matches_the_config_models():
    match = re.search(r"current -->\n(.*)<!-- end of generated reference -->", README, re.S)
    assert match, "the generated reference block is missing"
    assert match.group(1) == render(), "run: python -m pipeline.config_reference, and paste it into the README"


def readme_verify():
    code = re.search(r"```python\n(import hashlib, hmac, time.*?)```", README, re.S)
    assert code, "the verification snippet is missing"
    namespace: dict[str, object] = {}
    exec(code.group(1), namespace)
    return namespace["verify"]


def test_readme_verification_snippet_accepts_a_signed_body_and_refuses_a_changed_one():
    verify = readme_verify()
    body = json.dumps({"id": "x", "score": 0.9}).encode()
    header = sign("secret", body, int(time.time()))
    assert verify("secret", body, header)
    assert not verify("secret", body.replace(b"0.9", b"0.8"), header)
    assert not verify("other", body, header)
