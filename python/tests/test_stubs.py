"""The type stubs describe the native module that exists: every stubbed class, method and
attribute is there at run time, and every public native name is stubbed."""

from __future__ import annotations

import ast
from pathlib import Path

import voicerag
from voicerag import _native

STUBS = Path(voicerag.__file__).with_name("_native.pyi")
TYPING_ONLY = {"Transcript", "Mode", "Override"}
# Only in a build with the `latency-trace` feature (diagnosis, never shipped).
DIAGNOSTIC_ONLY = {"_trace"}


def test_stubs_match_the_native_module():
    tree = ast.parse(STUBS.read_text())
    stubbed = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name not in TYPING_ONLY:
            stubbed.add(node.name)
            cls = getattr(_native, node.name)
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    assert hasattr(cls, item.name), f"{node.name}.{item.name}"
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    assert hasattr(cls, item.target.id), f"{node.name}.{item.target.id}"
        elif isinstance(node, ast.FunctionDef):
            stubbed.add(node.name)
            assert hasattr(_native, node.name), node.name
    public = {n for n in dir(_native) if not n.startswith("__")} - DIAGNOSTIC_ONLY
    assert public - stubbed == set(), f"not stubbed: {public - stubbed}"
