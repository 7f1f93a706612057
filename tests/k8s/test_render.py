#!/usr/bin/env python3
"""Unit tests of render.py: the kustomize behaviours it reproduces, and the
loud failures for everything it does not. Run by validate.sh; alone:
    .tools/venv-k8s/bin/python -m unittest tests/k8s/test_render.py
"""

from __future__ import annotations

import base64
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import render  # noqa: E402

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: registry.local:5000/team/web:1.0
          args: ["--a"]
          env:
            - {name: A, value: "1"}
            - {name: B, value: "2"}
          ports:
            - {name: http, containerPort: 8080}
        - name: sidecar
          image: busybox:1.36
"""


class Tree:
    """A scratch directory of kustomization files."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self.root = Path(self._dir.name)

    def write(self, path: str, text: str) -> Path:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text), encoding="utf-8")
        return target

    def render(self, path: str = ".") -> list[dict]:
        return render.render(self.root / path)

    def close(self) -> None:
        self._dir.cleanup()


class RenderTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tree = Tree()
        self.tree.write("base/deployment.yaml", DEPLOYMENT)
        self.tree.write("base/kustomization.yaml", "resources: [deployment.yaml]\n")

    def tearDown(self) -> None:
        self.tree.close()

    def overlay(self, kustomization: str, **files: str) -> list[dict]:
        for name, text in files.items():
            self.tree.write(f"overlay/{name}", text)
        self.tree.write("overlay/kustomization.yaml", kustomization)
        return self.tree.render("overlay")

    def test_strategic_merge_by_key_and_replace(self) -> None:
        patch = """\
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: web}
            spec:
              template:
                spec:
                  containers:
                    - name: web
                      args: ["--b"]
                      env:
                        - {name: B, value: "3"}
                        - {name: C, value: "4"}
                      ports:
                        - {containerPort: 8080, protocol: TCP}
                    - name: extra
                      image: extra:2
            """
        [dep] = self.overlay("resources: [../base]\npatches:\n  - path: p.yaml\n", **{"p.yaml": patch})
        containers = dep["spec"]["template"]["spec"]["containers"]
        self.assertEqual([c["name"] for c in containers], ["web", "sidecar", "extra"])
        web = containers[0]
        self.assertEqual(web["args"], ["--b"], "lists without a merge key are replaced")
        self.assertEqual(web["env"], [{"name": "A", "value": "1"}, {"name": "B", "value": "3"},
                                      {"name": "C", "value": "4"}])
        self.assertEqual(web["ports"], [{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
        self.assertEqual(web["image"], "registry.local:5000/team/web:1.0")

    def test_null_deletes(self) -> None:
        patch = """\
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: web}
            spec:
              selector: null
            """
        [dep] = self.overlay("resources: [../base]\npatches:\n  - path: p.yaml\n", **{"p.yaml": patch})
        self.assertNotIn("selector", dep["spec"])

    def test_namespace_and_images(self) -> None:
        kustomization = """\
            namespace: shop
            resources: [../base, ns.yaml]
            images:
              - {name: registry.local:5000/team/web, newName: example.org/web, newTag: "2.0"}
              - {name: busybox, digest: "sha256:abc"}
            """
        objects = self.overlay(kustomization, **{"ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n"})
        dep = next(o for o in objects if o["kind"] == "Deployment")
        ns = next(o for o in objects if o["kind"] == "Namespace")
        self.assertEqual(dep["metadata"]["namespace"], "shop")
        self.assertNotIn("namespace", ns["metadata"])
        images = [c["image"] for c in dep["spec"]["template"]["spec"]["containers"]]
        self.assertEqual(images, ["example.org/web:2.0", "busybox@sha256:abc"])

    def test_namespace_object_must_match(self) -> None:
        with self.assertRaisesRegex(render.RenderError, "differs"):
            self.overlay("namespace: shop\nresources: [ns.yaml]\n",
                         **{"ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: other\n"})

    def test_secret_generator(self) -> None:
        kustomization = """\
            secretGenerator:
              - name: creds
                literals: ["url=postgres://u:p@h/db?x=1", "quoted='a b'"]
                options:
                  labels: {team: x}
            generatorOptions:
              disableNameSuffixHash: true
            """
        [secret] = self.overlay(kustomization)
        self.assertEqual(secret["kind"], "Secret")
        self.assertEqual(secret["type"], "Opaque")
        self.assertEqual(secret["metadata"], {"name": "creds", "labels": {"team": "x"}})
        decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        self.assertEqual(decoded, {"url": "postgres://u:p@h/db?x=1", "quoted": "a b"})

    def test_hashed_generator_names_are_refused(self) -> None:
        with self.assertRaisesRegex(render.RenderError, "disableNameSuffixHash"):
            self.overlay("secretGenerator:\n  - name: creds\n    literals: [a=b]\n")
        with self.assertRaisesRegex(render.RenderError, "configMapGenerator board: name hash suffixes"):
            self.overlay("configMapGenerator:\n  - name: board\n    literals: [a=b]\n")

    def test_config_map_generator_from_files(self) -> None:
        kustomization = """\
            namespace: shop
            configMapGenerator:
              - name: board
                files:
                  - shop.json=dashboards/board.json
                  - notes.txt
                literals: ["mode='x y'"]
                options:
                  disableNameSuffixHash: true
                  labels: {grafana_dashboard: "1"}
            generatorOptions:
              labels: {team: x}
              annotations: {note: kept}
            """
        board = '{\n  "title": "Shop",\n  "expr": "rate(x[5m]) > 0.5"\n}\n'
        [config_map] = self.overlay(kustomization, **{"dashboards/board.json": board, "notes.txt": "é\n"})
        self.assertEqual(config_map["apiVersion"], "v1")
        self.assertEqual(config_map["kind"], "ConfigMap")
        self.assertEqual(config_map["metadata"], {
            "name": "board", "labels": {"team": "x", "grafana_dashboard": "1"}, "annotations": {"note": "kept"},
            "namespace": "shop"})
        self.assertEqual(config_map["data"], {"mode": "x y", "shop.json": board, "notes.txt": "é\n"})
        # The text survives the YAML round trip byte for byte.
        [again] = list(render.yaml.safe_load_all(render.dump_yaml_documents([config_map])))
        self.assertEqual(again["data"]["shop.json"], board)

    def test_config_map_generator_refusals(self) -> None:
        self.tree.write("outside.json", "{}\n")
        (self.tree.root / "overlay").mkdir()
        (self.tree.root / "overlay" / "binary.bin").write_bytes(b"\xff\xfe\x00")
        cases = [
            ("files: [../outside.json]", "outside the kustomization root"),
            ("files: [missing.json]", "missing"),
            ("files: [binary.bin]", "not UTF-8"),
            ("files: [a.json=board.json, a.json=board.json]", "given twice"),
            ("files: [bad/key=board.json]", "not a valid ConfigMap key"),
            ("behavior: merge\n    literals: [a=b]", "fields not supported: \\['behavior'\\]"),
            ("type: Opaque\n    literals: [a=b]", "fields not supported: \\['type'\\]"),
        ]
        for entry, message in cases:
            with self.subTest(entry=entry):
                with self.assertRaisesRegex(render.RenderError, message):
                    self.overlay(f"configMapGenerator:\n  - name: board\n    {entry}\n"
                                 "generatorOptions:\n  disableNameSuffixHash: true\n", **{"board.json": "{}\n"})

    def test_prometheus_operator_kinds_are_namespaced(self) -> None:
        monitor = """\
            apiVersion: monitoring.coreos.com/v1
            kind: ServiceMonitor
            metadata: {name: web}
            spec:
              selector: {matchLabels: {app: web}}
              endpoints: [{port: metrics}]
            """
        [obj] = self.overlay("namespace: shop\nresources: [sm.yaml]\n", **{"sm.yaml": monitor})
        self.assertEqual(obj["metadata"]["namespace"], "shop")

    def test_unsupported_fields_fail(self) -> None:
        for kustomization, message in [
            ("commonLabels: {a: b}\nresources: [../base]\n", "not supported"),
            ("namePrefix: x-\nresources: [../base]\n", "not supported"),
            ("resources: [../base]\npatches:\n  - path: p.yaml\n    target: {kind: Deployment}\n", "only `- path"),
            ("resources: [https://github.com/x/y]\n", "only local"),
            ("resources: [../base/deployment.yaml]\n", "outside the kustomization root"),
            ("kind: Component\n", "Components"),
        ]:
            with self.subTest(kustomization=kustomization):
                with self.assertRaisesRegex(render.RenderError, message):
                    self.overlay(kustomization, **{"p.yaml": DEPLOYMENT})

    def test_patch_directives_and_misses_fail(self) -> None:
        cases = {
            "$patch": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  $patch: replace\n",
            "matches 0": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: nope}\nspec: {}\n",
            "merge key": ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n"
                          "    spec:\n      containers:\n        - image: x\n"),
        }
        for message, patch in cases.items():
            with self.subTest(message=message):
                with self.assertRaisesRegex(render.RenderError, message.replace("$", r"\$")):
                    self.overlay("resources: [../base]\npatches:\n  - path: p.yaml\n", **{"p.yaml": patch})

    def test_duplicates_fail(self) -> None:
        with self.assertRaisesRegex(render.RenderError, "defined twice"):
            self.overlay("resources: [../base, d.yaml]\n", **{"d.yaml": DEPLOYMENT})

    def test_yaml_1_2_scalars(self) -> None:
        path = self.tree.write("scalars.yaml", "a: yes\nb: on\nc: true\nd: 12\ne: 1:30\n")
        [doc] = render.load_yaml_documents(path)
        self.assertEqual(doc, {"a": "yes", "b": "on", "c": True, "d": 12, "e": "1:30"})
        path = self.tree.write("octal.yaml", "mode: 0644\n")
        with self.assertRaisesRegex(render.RenderError, "ambiguous"):
            render.load_yaml_documents(path)

    def test_image_names_with_registry_ports(self) -> None:
        self.assertEqual(render.split_image("host:5000/a/b:1.2@sha256:ff"), ("host:5000/a/b", "1.2", "sha256:ff"))
        self.assertEqual(render.split_image("host:5000/a/b"), ("host:5000/a/b", None, None))
        self.assertEqual(render.rewrite_image("b:1", [{"name": "b", "newName": "r/b"}]), "r/b:1")
        self.assertEqual(render.rewrite_image("bb:1", [{"name": "b", "newTag": "2"}]), "bb:1")


if __name__ == "__main__":
    unittest.main()
