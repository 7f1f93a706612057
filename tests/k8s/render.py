#!/usr/bin/env python3
"""Renders a kustomization as `kustomize build` would, for exactly the subset
of kustomize that k8s/ uses, so CI can validate the manifests without the
kustomize binary.

Supported, and nothing else (any other field, option or patch form fails):
  - kustomization: apiVersion, kind, resources, namespace, patches, images,
    secretGenerator, generatorOptions
  - resources: YAML files inside the kustomization directory, and
    directories holding a kustomization (rendered recursively)
  - patches: `- path: FILE` holding one strategic-merge patch, matched by
    kind and name (exactly one target); list merge keys as Kubernetes
    declares them for the fields listed in MERGE_KEYS, other lists replaced;
    a null value deletes the key; `$patch` directives are refused
  - namespace: set on every namespaced object; a Namespace object must be
    named like it (kustomize versions disagree on renaming it otherwise)
  - images: name, newName, newTag, digest, applied to containers and
    initContainers anywhere in an object
  - secretGenerator: name, type, literals, options; configMapGenerator:
    name, literals, files (`PATH` or `KEY=PATH`, UTF-8 text inside the
    kustomization directory), options; generatorOptions:
    disableNameSuffixHash (must end up true: hashed names would need the
    reference rewriting kustomize does), labels, annotations
  - kinds: the built-in ones listed below, prometheus-operator's
    ServiceMonitor, PodMonitor and PrometheusRule, and CloudNativePG's
    Cluster and Database (all namespaced)

Usage: render.py DIR [-o FILE]   (multi-document YAML on stdout or in FILE)
"""

from __future__ import annotations

import argparse
import base64
import copy
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml


class RenderError(Exception):
    """The kustomization uses something this renderer does not support, or is wrong."""


# ----------------------------------------------------------------------------- YAML
class Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 core schema scalars, as kustomize (go-yaml v3) reads them:
    only true/false are booleans, no sexagesimal numbers, no `yes`/`on`."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (
        "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"))


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    value = loader.construct_scalar(node)
    if re.fullmatch(r"[-+]?0[0-9]+|0o[0-7]+", value):
        # kubectl's YAML 1.1 reader and kustomize's YAML 1.2 reader disagree
        # on these (octal or decimal; number or string).
        raise RenderError(f"ambiguous number {value} at {node.start_mark}: write it in decimal")
    if value.startswith("0x"):
        return int(value[2:], 16)
    return int(value, 10)


Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml_documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.load_all(handle, Loader=Yaml12Loader) if doc is not None]


def dump_yaml_documents(objects: list[dict]) -> str:
    return "---\n".join(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False) for obj in objects)


# ----------------------------------------------------------------------------- objects
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
    "CustomResourceDefinition", "PriorityClass", "IngressClass",
}
NAMESPACED = {
    "ConfigMap", "Secret", "Service", "ServiceAccount", "Deployment", "StatefulSet", "DaemonSet",
    "Job", "CronJob", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
    "PersistentVolumeClaim", "Ingress", "Role",
    # prometheus-operator (k8s/monitoring, overlays/prod-ha/monitoring).
    "ServiceMonitor", "PodMonitor", "PrometheusRule",
    # CloudNativePG (overlays/prod-ha).
    "Cluster", "Database",
}
# kustomize's legacy output order (resmap's orderFirst / orderLast).
ORDER_FIRST = [
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
    "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap",
    "Secret", "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume",
    "PersistentVolumeClaim", "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget",
]
ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]


def group_of(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def object_id(obj: dict) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return (group_of(obj["apiVersion"]), obj["kind"], meta.get("namespace", ""), meta["name"])


def describe(obj: dict) -> str:
    group, kind, namespace, name = object_id(obj)
    return f"{kind}{'.' + group if group else ''}/{name}" + (f" (namespace {namespace})" if namespace else "")


def check_object(obj: Any, source: Path) -> dict:
    if not isinstance(obj, dict):
        raise RenderError(f"{source}: a document is not a mapping")
    for field in ("apiVersion", "kind"):
        if not isinstance(obj.get(field), str) or not obj[field]:
            raise RenderError(f"{source}: an object has no {field}")
    if obj["kind"].endswith("List"):
        raise RenderError(f"{source}: {obj['kind']} objects are not supported; list the items as documents")
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise RenderError(f"{source}: {obj['kind']} without metadata.name (generateName is not supported)")
    if obj["kind"] not in CLUSTER_SCOPED | NAMESPACED:
        raise RenderError(f"{source}: kind {obj['kind']} is not known to this renderer (is it namespaced?)")
    if obj["kind"] in {"RoleBinding", "ClusterRoleBinding"}:
        raise RenderError(f"{source}: {obj['kind']} subjects would need namespace rewriting, not supported")
    return obj


# ----------------------------------------------------------------------------- strategic merge
# Lists Kubernetes merges by a key (patchStrategy: merge, patchMergeKey) for the
# fields patches here may touch. "ports" depends on where it is.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "topologySpreadConstraints": "topologyKey",
    "hostAliases": "ip",
    "resourceClaims": "name",
}
# Lists Kubernetes merges in ways not implemented here.
UNSUPPORTED_LISTS = {"finalizers", "ownerReferences", "conditions", "podIPs", "subsets"}


def merge_key_for(field: str, path: tuple[str, ...], kind: str) -> str | None:
    if field == "ports":
        if len(path) >= 2 and path[-1] == "[]" and path[-2] in ("containers", "initContainers", "ephemeralContainers"):
            return "containerPort"
        if kind == "Service" and path == ("spec",):
            return "port"
        raise RenderError(f"patching the list {'/'.join(path + (field,))} of a {kind} is not supported")
    return MERGE_KEYS.get(field)


def strategic_merge(target: Any, patch: Any, kind: str, path: tuple[str, ...] = ()) -> Any:
    if not isinstance(patch, dict) or not isinstance(target, dict):
        return copy.deepcopy(patch)
    result = dict(target)
    for key, value in patch.items():
        if isinstance(key, str) and key.startswith("$"):
            raise RenderError(f"patch directive {key} at {'/'.join(path) or '/'} is not supported")
        if value is None:
            result.pop(key, None)
            continue
        if isinstance(value, list):
            if key in UNSUPPORTED_LISTS:
                raise RenderError(f"patching {'/'.join(path + (key,))} is not supported")
            merge_key = merge_key_for(key, path, kind)
            current = result.get(key)
            if merge_key is None or not isinstance(current, list):
                result[key] = copy.deepcopy(value)
                continue
            merged = [copy.deepcopy(item) for item in current]
            for item in value:
                if not isinstance(item, dict) or merge_key not in item:
                    raise RenderError(f"{'/'.join(path + (key,))}: every patch item needs its merge key {merge_key}")
                if any(isinstance(k, str) and k.startswith("$") for k in item):
                    raise RenderError(f"patch directives in {'/'.join(path + (key,))} are not supported")
                # kustomize merges a Service's ports by port *and* protocol: a
                # patch item without protocol matches no port that names one
                # and is silently added instead of merged.
                keys = (merge_key, "protocol") if kind == "Service" and merge_key == "port" else (merge_key,)
                if "protocol" in keys and "protocol" not in item:
                    raise RenderError(f"{'/'.join(path + (key,))}: a Service port patch item needs protocol "
                                      "(kustomize merges Service ports by port and protocol)")
                for index, existing in enumerate(merged):
                    if isinstance(existing, dict) and all(existing.get(k) == item[k] for k in keys):
                        merged[index] = strategic_merge(existing, item, kind, path + (key, "[]"))
                        break
                else:
                    merged.append(copy.deepcopy(item))
            result[key] = merged
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = strategic_merge(result[key], value, kind, path + (key,))
        else:
            result[key] = copy.deepcopy(value)
    return result


# ----------------------------------------------------------------------------- images
IMAGE_FIELDS = {"name", "newName", "newTag", "digest"}


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """name, tag, digest; a registry port (host:5000/x) is part of the name."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        image, tag = image[:colon], image[colon + 1:]
    return image, tag, digest


def apply_images(obj: Any, images: list[dict]) -> None:
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for container in value:
                    if isinstance(container, dict) and isinstance(container.get("image"), str):
                        container["image"] = rewrite_image(container["image"], images)
            apply_images(value, images)
    elif isinstance(obj, list):
        for item in obj:
            apply_images(item, images)


def rewrite_image(image: str, images: list[dict]) -> str:
    name, tag, digest = split_image(image)
    for entry in images:
        if entry["name"] != name:
            continue
        name = entry.get("newName", name)
        if "digest" in entry:
            return f"{name}@{entry['digest']}"
        if "newTag" in entry:
            return f"{name}:{entry['newTag']}"
        return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    return image


# ----------------------------------------------------------------------------- generators
GENERATOR_FIELDS = {"Secret": {"name", "type", "literals", "options"},
                    "ConfigMap": {"name", "literals", "files", "options"}}
OPTION_FIELDS = {"disableNameSuffixHash", "labels", "annotations"}
DATA_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def remove_quotes(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def generator_data(spec: dict, kind: str, directory: Path, where: Path) -> dict[str, str]:
    """KEY -> text of a generator's literals and files, as kustomize reads them."""
    data: dict[str, str] = {}

    def add(key: str, value: str) -> None:
        if not DATA_KEY.fullmatch(key):
            raise RenderError(f"{where}: {key!r} is not a valid {kind} key")
        if key in data:
            raise RenderError(f"{where}: {kind} key {key!r} given twice")
        data[key] = value

    for literal in spec.get("literals") or []:
        if not isinstance(literal, str) or "=" not in literal:
            raise RenderError(f"{where}: literal {literal!r} is not KEY=VALUE")
        key, value = literal.split("=", 1)
        add(key, remove_quotes(value))
    for entry in spec.get("files") or []:
        if not isinstance(entry, str) or not entry:
            raise RenderError(f"{where}: file entry {entry!r} is not PATH or KEY=PATH")
        key, _, relative = entry.rpartition("=")
        path = directory / relative
        if not path.is_file() or not inside(path, directory):
            raise RenderError(f"{where}: file {relative} missing or outside the kustomization root (kustomize "
                              "refuses it)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise RenderError(f"{where}: file {relative} is not UTF-8 text (binaryData is not supported)") from error
        add(key or path.name, text)
    return data


def generate(kind: str, spec: dict, global_options: dict, directory: Path, where: Path) -> dict:
    """The Secret or ConfigMap a secretGenerator or configMapGenerator entry makes."""
    generator = f"{kind[0].lower()}{kind[1:]}Generator"
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise RenderError(f"{where}: {generator} entry {spec!r} has no name")
    unknown = set(spec) - GENERATOR_FIELDS[kind]
    if unknown:
        raise RenderError(f"{where}: {generator} fields not supported: {sorted(unknown)}")
    options = dict(global_options)
    own = spec.get("options") or {}
    if set(own) - OPTION_FIELDS:
        raise RenderError(f"{where}: {generator} options not supported: {sorted(set(own) - OPTION_FIELDS)}")
    for field in ("labels", "annotations"):
        if field in own:
            options[field] = {**options.get(field, {}), **own[field]}
    if "disableNameSuffixHash" in own:
        options["disableNameSuffixHash"] = own["disableNameSuffixHash"]
    if options.get("disableNameSuffixHash") is not True:
        raise RenderError(f"{where}: {generator} {spec.get('name')}: name hash suffixes are not supported; "
                          "set disableNameSuffixHash: true")
    data = generator_data(spec, kind, directory, where)
    metadata: dict[str, Any] = {"name": spec["name"]}
    if options.get("labels"):
        metadata["labels"] = dict(options["labels"])
    if options.get("annotations"):
        metadata["annotations"] = dict(options["annotations"])
    if kind == "ConfigMap":
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": spec.get("type", "Opaque"),
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


# ----------------------------------------------------------------------------- kustomization
KUSTOMIZATION_FIELDS = {
    "apiVersion", "kind", "resources", "namespace", "patches", "images", "secretGenerator", "configMapGenerator",
    "generatorOptions",
}
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def find_kustomization(directory: Path) -> Path:
    found = [directory / name for name in KUSTOMIZATION_FILES if (directory / name).is_file()]
    if len(found) != 1:
        raise RenderError(f"{directory}: expected exactly one kustomization file, found {len(found)}")
    return found[0]


def inside(path: Path, root: Path) -> bool:
    return os.path.commonpath([path.resolve(), root.resolve()]) == str(root.resolve())


def render(directory: Path | str, _stack: tuple[Path, ...] = ()) -> list[dict]:
    directory = Path(directory)
    if directory.resolve() in _stack:
        raise RenderError(f"{directory}: kustomization cycle")
    source = find_kustomization(directory)
    docs = load_yaml_documents(source)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise RenderError(f"{source}: expected one mapping")
    kustomization = docs[0]
    unknown = set(kustomization) - KUSTOMIZATION_FIELDS
    if unknown:
        raise RenderError(f"{source}: fields not supported by this renderer: {sorted(unknown)}")
    if kustomization.get("apiVersion", "kustomize.config.k8s.io/v1beta1") != "kustomize.config.k8s.io/v1beta1":
        raise RenderError(f"{source}: apiVersion {kustomization['apiVersion']} not supported")
    if kustomization.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{source}: kind {kustomization['kind']} not supported (Components are not)")

    objects: list[dict] = []
    for entry in kustomization.get("resources") or []:
        if not isinstance(entry, str) or "://" in entry or entry.startswith(("github.com/", "git@")):
            raise RenderError(f"{source}: resource {entry!r}: only local files and directories are supported")
        path = directory / entry
        if path.is_dir():
            objects.extend(render(path, _stack + (directory.resolve(),)))
        elif path.is_file():
            if not inside(path, directory):
                raise RenderError(f"{source}: file {entry} is outside the kustomization root (kustomize refuses it)")
            objects.extend(check_object(doc, path) for doc in load_yaml_documents(path))
        else:
            raise RenderError(f"{source}: resource {entry} does not exist")

    global_options = kustomization.get("generatorOptions") or {}
    if set(global_options) - OPTION_FIELDS:
        raise RenderError(f"{source}: generatorOptions not supported: {sorted(set(global_options) - OPTION_FIELDS)}")
    for spec in kustomization.get("configMapGenerator") or []:
        objects.append(generate("ConfigMap", spec, global_options, directory, source))
    for spec in kustomization.get("secretGenerator") or []:
        objects.append(generate("Secret", spec, global_options, directory, source))

    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        if object_id(obj) in seen:
            raise RenderError(f"{source}: {describe(obj)} defined twice")
        seen.add(object_id(obj))

    for entry in kustomization.get("patches") or []:
        if not isinstance(entry, dict) or set(entry) != {"path"}:
            raise RenderError(f"{source}: patch {entry!r}: only `- path: FILE` (strategic merge) is supported")
        path = directory / entry["path"]
        if not path.is_file() or not inside(path, directory):
            raise RenderError(f"{source}: patch file {entry['path']} missing or outside the kustomization root")
        patch_docs = load_yaml_documents(path)
        if len(patch_docs) != 1:
            raise RenderError(f"{path}: expected exactly one patch document, found {len(patch_docs)}")
        patch = check_object(patch_docs[0], path)
        group, kind, namespace, name = object_id(patch)
        matches = [i for i, obj in enumerate(objects)
                   if object_id(obj)[0] == group and obj["kind"] == kind and obj["metadata"]["name"] == name
                   and (not namespace or obj["metadata"].get("namespace", "") == namespace)]
        if len(matches) != 1:
            raise RenderError(f"{path}: patch matches {len(matches)} objects, expected exactly one")
        objects[matches[0]] = strategic_merge(objects[matches[0]], patch, kind)

    namespace = kustomization.get("namespace")
    if namespace is not None:
        for obj in objects:
            if obj["kind"] == "Namespace":
                if obj["metadata"]["name"] != namespace:
                    raise RenderError(f"{source}: Namespace {obj['metadata']['name']} differs from namespace {namespace}")
            elif obj["kind"] in NAMESPACED:
                obj["metadata"]["namespace"] = namespace

    images = kustomization.get("images") or []
    for entry in images:
        if not isinstance(entry, dict) or "name" not in entry or set(entry) - IMAGE_FIELDS:
            raise RenderError(f"{source}: image entry {entry!r} not supported (fields: {sorted(IMAGE_FIELDS)})")
        for field in ("newName", "newTag", "digest"):
            if field in entry and not isinstance(entry[field], str):
                raise RenderError(f"{source}: image {entry['name']}: {field} must be a string (quote it)")
    if images:
        for obj in objects:
            apply_images(obj, images)
    return objects


def legacy_order(objects: list[dict]) -> list[dict]:
    def rank(kind: str) -> int:
        if kind in ORDER_FIRST:
            return ORDER_FIRST.index(kind) - len(ORDER_FIRST)
        if kind in ORDER_LAST:
            return ORDER_LAST.index(kind) + 1
        return 0

    def key(obj: dict) -> tuple:
        group, kind, namespace, name = object_id(obj)
        version = obj["apiVersion"].split("/")[-1]
        return (rank(kind), f"{group}_{version}_{kind}", namespace, name)

    return sorted(objects, key=key)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    try:
        text = dump_yaml_documents(legacy_order(render(args.directory)))
    except (RenderError, yaml.YAMLError, OSError) as error:
        print(f"render.py: {args.directory}: {error}", file=sys.stderr)
        return 1
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
