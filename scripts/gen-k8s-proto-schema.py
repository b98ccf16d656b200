#!/usr/bin/env python3
"""Generates controlplane/apiserver/src/protobuf/schema.json: the protobuf wire layout
(field numbers, wire types, nested message types) of the Kubernetes API types the API
server serves, with each field's JSON name.

Kubernetes clients (client-go, so kubectl's typed commands) send built-in types as
protobuf. The layout comes from the field attributes of the `k8s-pb` crate (prost code
generated from Kubernetes' generated.proto files) and the JSON names from `k8s-openapi`'s
deserializers; both are read from the local cargo registry. Run after upgrading either:

    scripts/gen-k8s-proto-schema.py > controlplane/apiserver/src/protobuf/schema.json
"""
import glob
import json
import os
import re
import sys

REG = os.path.expanduser("~/.cargo/registry/src")


def newest(name):
    found = sorted(glob.glob(f"{REG}/*/{name}-*"), key=lambda p: [int(x) for x in re.findall(r"\d+", p.rsplit("-", 1)[1])])
    if not found:
        sys.exit(f"{name} is not in the cargo registry; run `cargo fetch` first")
    return found[-1]


PB = newest("k8s-pb")
OA = newest("k8s-openapi")
OA_VERSION = "v1_33"

# Packages whose messages the served types reach.
ROOTS = ["api/core/v1", "api/apps/v1", "api/coordination/v1", "api/discovery/v1", "api/networking/v1",
         "api/autoscaling/v1", "api/policy/v1", "apimachinery/pkg/apis/meta/v1",
         "apimachinery/pkg/api/resource", "apimachinery/pkg/util/intstr", "apimachinery/pkg/runtime"]

FIELD_ATTR = re.compile(r'#\[prost\((?P<attr>[^\]]*)\)\]')
FIELD_DECL = re.compile(r'pub (?P<name>r#\w+|\w+): (?P<ty>.+),$')


def module_of(path):
    rel = os.path.relpath(os.path.dirname(path), os.path.join(PB, "src"))
    return rel.replace(os.sep, "/")


def resolve(ty, module):
    ty = re.sub(r'::core::option::Option<(.*)>$', r'\1', ty.strip())
    ty = re.sub(r'::prost::alloc::vec::Vec<(.*)>$', r'\1', ty)
    m = re.match(r'::prost::alloc::collections::BTreeMap<[^,]+,\s*(.*)>$', ty)
    if m:
        ty = m.group(1).strip()
    parts = ty.split("::")
    base = module.split("/")
    while parts and parts[0] == "super":
        base = base[:-1]
        parts = parts[1:]
    if parts and parts[0] == "crate":
        base = []
        parts = parts[1:]
    return "/".join(base + parts[:-1]) + "." + parts[-1]


def parse_pb():
    messages = {}
    for path in glob.glob(f"{PB}/src/**/mod.rs", recursive=True):
        module = module_of(path)
        # Join field declarations rustfmt split over several lines into one.
        lines, pending = [], None
        for raw in open(path).read().splitlines():
            s = raw.strip()
            if pending is not None:
                pending += " " + s
                if pending.count("<") == pending.count(">") and pending.endswith(","):
                    lines.append(re.sub(r",?\s*>", ">", re.sub(r"<\s+", "<", pending)))
                    pending = None
                continue
            if s.startswith("pub ") and not s.startswith(("pub struct ", "pub mod ", "pub enum ", "pub fn ", "pub use ", "pub const ", "pub trait ", "pub type ")) and not s.endswith(","):
                pending = s
                continue
            lines.append(s)
        current, attr = None, None
        for line in lines:
            s = line.strip()
            m = re.match(r'pub struct (\w+) \{', s)
            if m:
                current = f"{module}.{m.group(1)}"
                messages[current] = []
                continue
            if s == "}":
                current = None
                continue
            if current is None:
                continue
            m = FIELD_ATTR.search(s)
            if m:
                attr = m.group("attr")
                continue
            m = FIELD_DECL.match(s)
            if m and attr is not None:
                tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                kind = attr.split(",")[0].strip()
                field = {"tag": tag, "rust": m.group("name").replace("r#", "")}
                if kind.startswith("btree_map"):
                    k, v = re.search(r'btree_map = "(\w+), (\w+)"', attr).groups()
                    field["map"] = [k, v]
                    if v == "message":
                        field["type"] = resolve(m.group("ty"), module)
                elif kind.startswith("bytes"):
                    field["kind"] = "bytes"
                else:
                    field["kind"] = kind
                    if kind == "message":
                        field["type"] = resolve(m.group("ty"), module)
                if "repeated" in attr:
                    field["repeated"] = True
                messages[current].append(field)
                attr = None
    return messages


def json_names():
    """struct path -> {normalized rust field name: (JSON name, required)} from k8s-openapi."""
    names = {}
    root = f"{OA}/src/{OA_VERSION}"
    for path in glob.glob(f"{root}/**/*.rs", recursive=True):
        text = open(path).read()
        module = os.path.relpath(os.path.dirname(path), root).replace(os.sep, "/")
        for struct, body in re.findall(r'pub struct (\w+) \{(.*?)\n\}', text, re.S):
            optional = set(re.findall(r'pub (\w+): Option<', body))
            keys = dict(re.findall(r'"(\w+)" => Field::Key_(\w+),', text))
            names[f"{module}.{struct}"] = {v.replace("_", "").lower(): (k, v not in optional) for k, v in keys.items()}
    return names


def camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def main():
    messages = parse_pb()
    names = json_names()
    # Keep the messages reachable from the root packages.
    keep, todo = set(), [m for m in messages if any(m.startswith(r + ".") for r in ROOTS)]
    while todo:
        m = todo.pop()
        if m in keep or m not in messages:
            continue
        keep.add(m)
        todo.extend(f["type"] for f in messages[m] if "type" in f)
    out = {}
    for m in sorted(keep):
        known = names.get(m, {})
        fields = {}
        for f in messages[m]:
            norm = f["rust"].replace("_", "").lower()
            f["json"], required = known.get(norm, (camel(f["rust"]), False))
            if required:
                f["required"] = True
            del f["rust"]
            fields[str(f.pop("tag"))] = f
        out[m] = fields
    json.dump(out, sys.stdout, indent=None, separators=(",", ":"), sort_keys=True)
    sys.stdout.write("\n")


main()
