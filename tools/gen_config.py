#!/usr/bin/env python3
"""Writes config.toml: every setting with its default (from `voicerag config check` on built-in
defaults) and a one-line comment (the field's doc comment in the Rust source).

usage: tools/gen_config.py DEFAULTS.toml > config.toml
"""
import re
import sys
import tomllib

SOURCES = {
    "runtime": ("src/models/mod.rs", "RuntimeConfig"),
    "embedder": ("src/models/mod.rs", "EmbedderConfig"),
    "reranker": ("src/models/mod.rs", "RerankerConfig"),
    "store": ("src/store/mod.rs", "StoreConfig"),
    "retrieval": ("src/store/mod.rs", "RetrievalConfig"),
    "pipeline": ("actors/src/config.rs", "PipelineConfig"),
    "pipeline.restart": ("actors/src/config.rs", "RestartPolicy"),
    "nats": ("src/bus/config.rs", "NatsConfig"),
    "logging": ("src/config.rs", "LoggingConfig"),
    "metrics": ("src/config.rs", "MetricsConfig"),
}
ORDER = ["runtime", "embedder", "reranker", "store", "retrieval", "pipeline", "pipeline.restart", "nats",
         "logging", "metrics"]
OPTIONAL = {"nats": ["token", "user", "password", "nkey_seed", "credentials_file", "tls_ca"]}


def docs(path, struct):
    text = open(path).read()
    body = re.search(r"pub struct " + struct + r" \{(.*?)\n\}", text, re.S).group(1)
    out, pending = {}, []
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("///"):
            pending.append(line[3:].strip())
        elif m := re.match(r"pub (\w+):", line):
            out[m.group(1)] = " ".join(pending) or out.get("_last", "")
            out["_last"] = out[m.group(1)]
            pending = []
    out.pop("_last", None)
    return out


def value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def main():
    defaults = tomllib.load(open(sys.argv[1], "rb"))
    print("# voicerag configuration: every setting with its default.")
    print("# Precedence for every setting: command-line flag, then environment variable, then this file,")
    print("# then the built-in default. Environment: VOICERAG_<SECTION>__<KEY> (nested: VOICERAG_PIPELINE__RESTART__MAX_RESTARTS);")
    print("# ORT_DYLIB_PATH sets runtime.library. `voicerag config check` validates and prints the effective configuration.")
    for section in ORDER:
        path, struct = SOURCES[section]
        d = docs(path, struct)
        table = defaults
        for part in section.split("."):
            table = table[part]
        print(f"\n[{section}]")
        for key, v in table.items():
            if isinstance(v, dict):
                continue
            print(f"# {d.get(key, '')}".rstrip())
            print(f"{key} = {value(v)}")
        for key in OPTIONAL.get(section, []):
            print(f"# {d.get(key, '')} (unset by default)".rstrip())
            print(f"# {key} = \"\"")


main()
