"""Checks deploy/ beyond what a schema can: run by .ci/lint-deploy inside its venv.

    python .ci/lint_deploy.py kubernetes   # deploy/kubernetes: strict schemas + references
    python .ci/lint_deploy.py compose      # deploy/compose.yaml: references (schema: check-jsonschema)
    python .ci/lint_deploy.py secrets      # nothing that looks like an Ably key in the deploy files

Offline: kubernetes-validate ships the Kubernetes OpenAPI schemas it validates against.
Each command prints one line per problem and a closing summary line, and exits 1 on a problem.
"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "deploy" / "kubernetes"
COMPOSE = ROOT / "deploy" / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
# Oldest Kubernetes the manifests support (native sidecar containers are on by default from
# 1.29) and the newest the installed kubernetes-validate knows.
K8S_MIN_VERSION = "1.29.0"
SIDECAR = "ably-tokend"
TEMPLATE_SUFFIX = ".example.yaml"  # templates: validated, never listed in kustomization.yaml

problems: list[str] = []


def problem(where: str, message: str) -> None:
    problems.append(f"{where}: {message}")


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def dockerfile_cmd() -> list[str]:
    """The final stage's ENTRYPOINT + CMD (exec form), e.g. ably-tokend serve --config FILE."""
    import json

    entry: list[str] = []
    cmd: list[str] = []
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "FROM":
            entry, cmd = [], []
        elif word.upper() == "ENTRYPOINT":
            entry = json.loads(rest)
        elif word.upper() == "CMD":
            cmd = json.loads(rest)
    return entry + cmd


def config_path_from_args(args: list[str], where: str) -> str | None:
    if "--config" in args and args.index("--config") + 1 < len(args):
        return args[args.index("--config") + 1]
    problem(where, f"the command {args} names no --config FILE")
    return None


# ---------------------------------------------------------------------------------------------
# Kubernetes


def load_yaml_docs(path: Path) -> list[dict]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        problem(rel(path), f"not valid YAML: {e}")
        return []
    for d in docs:
        if not isinstance(d, dict) or "apiVersion" not in d or "kind" not in d:
            problem(rel(path), "a document without apiVersion and kind")
    return [d for d in docs if isinstance(d, dict) and "kind" in d]


def check_kubernetes() -> int:
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    versions = [K8S_MIN_VERSION, latest_version()]
    kustomization_path = K8S_DIR / "kustomization.yaml"
    if not kustomization_path.exists():
        problem(rel(K8S_DIR), "no kustomization.yaml")
        return 0
    kustomization = yaml.safe_load(kustomization_path.read_text()) or {}
    known = {"apiVersion", "kind", "resources", "configMapGenerator", "images", "namespace"}
    for key in set(kustomization) - known:
        problem(rel(kustomization_path), f"unexpected key {key!r} (this check knows {sorted(known)})")
    if kustomization.get("kind") != "Kustomization":
        problem(rel(kustomization_path), "kind is not Kustomization")

    # Objects: (where, object). Listed resources, templates, and the generated ConfigMaps.
    objects: list[tuple[str, dict]] = []
    listed = kustomization.get("resources") or []
    for name in listed:
        path = K8S_DIR / name
        if not path.is_file():
            problem(rel(kustomization_path), f"resource {name} does not exist")
            continue
        if name.endswith(TEMPLATE_SUFFIX):
            problem(rel(kustomization_path), f"{name} is a template and must not be applied")
        objects += [(rel(path), d) for d in load_yaml_docs(path)]
    templates: list[tuple[str, dict]] = []
    for path in sorted(K8S_DIR.rglob("*.y*ml")):
        name = str(path.relative_to(K8S_DIR))
        if name == "kustomization.yaml" or name in listed:
            continue
        if name.endswith(TEMPLATE_SUFFIX):
            templates += [(rel(path), d) for d in load_yaml_docs(path)]
        else:
            problem(rel(path), "a manifest not listed in kustomization.yaml resources")

    generated: dict[str, dict] = {}
    for gen in kustomization.get("configMapGenerator") or []:
        data = {}
        for f in gen.get("files") or []:
            key, source = f.split("=", 1) if "=" in f else (Path(f).name, f)
            path = K8S_DIR / source
            if not path.is_file():
                problem(rel(kustomization_path), f"configMapGenerator {gen.get('name')}: {source} does not exist")
                continue
            data[key] = path.read_text()
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen.get("name")}, "data": data}
        generated[gen.get("name")] = {"object": cm, "hashed": not (gen.get("options") or {}).get("disableNameSuffixHash", False)}
        objects.append((f"{rel(kustomization_path)} configMapGenerator {gen.get('name')}", cm))

    # Schemas, strict: unknown fields are errors.
    checked = 0
    for where, obj in objects + templates:
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(top)"
                problem(where, f"{obj['kind']}/{obj.get('metadata', {}).get('name')} "
                               f"against Kubernetes {e.version}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problem(where, e.message)
            checked += 1

    image_names = {i.get("name") for i in kustomization.get("images") or []}
    secrets = {o["metadata"]["name"]: o for _, o in objects + templates if o["kind"] == "Secret"}
    deployments = [(w, o) for w, o in objects if o["kind"] == "Deployment"]
    if not deployments:
        problem(rel(K8S_DIR), "no Deployment")
    for where, dep in deployments:
        check_pod(where, dep, generated, secrets, image_names)

    check_policy_copies(generated)
    print(f"kubernetes: {len(objects) + len(templates)} objects ({len(templates)} template), "
          f"{checked} schema validations against Kubernetes {' and '.join(v.rsplit('.', 1)[0] for v in versions)} (strict)")
    return checked


def check_pod(where: str, dep: dict, generated: dict, secrets: dict, image_names: set) -> None:
    spec = dep["spec"]["template"]["spec"]
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for c in containers:
        image = c.get("image", "")
        if image.split(":")[0] not in image_names:
            problem(where, f"container {c['name']}: image {image} has no entry in kustomization.yaml images")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
            if isinstance(port, str) and port not in ports:
                problem(where, f"container {c['name']}: {probe} uses port {port!r}, which it does not declare")
        for m in c.get("volumeMounts") or []:
            if m["name"] not in volumes:
                problem(where, f"container {c['name']}: volumeMount {m['name']} has no volume")
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                secret = secrets.get(ref["name"])
                keys = set((secret or {}).get("stringData") or {}) | set((secret or {}).get("data") or {})
                if secret is None:
                    problem(where, f"container {c['name']}: env {e['name']} reads Secret {ref['name']}, which no manifest or template defines")
                elif ref["key"] not in keys:
                    problem(where, f"container {c['name']}: env {e['name']} reads key {ref['key']} that Secret {ref['name']} lacks")
    for v in volumes.values():
        name = (v.get("configMap") or {}).get("name")
        if name and name not in generated:
            problem(where, f"volume {v['name']}: ConfigMap {name} is not generated by kustomization.yaml")

    sidecars = [c for c in containers if c["name"] == SIDECAR]
    if len(sidecars) != 1:
        problem(where, f"expected one container named {SIDECAR}")
        return
    check_sidecar(where, sidecars[0], volumes, generated)


def mounted_file(container: dict, volumes: dict, generated: dict, path: str) -> tuple[str, str, bool] | None:
    """(ConfigMap name, key, updates in place) of the file at `path`, when a ConfigMap provides it."""
    for m in container.get("volumeMounts") or []:
        cm = (volumes.get(m["name"], {}).get("configMap") or {}).get("name")
        if cm is None:
            continue
        if m.get("subPath"):
            if m["mountPath"] == path:
                return cm, m["subPath"], False
        elif path.startswith(m["mountPath"].rstrip("/") + "/"):
            return cm, path[len(m["mountPath"].rstrip("/")) + 1:], True
    return None


def check_sidecar(where: str, c: dict, volumes: dict, generated: dict) -> None:
    w = f"{where}: container {SIDECAR}"
    args = (c.get("command") or dockerfile_cmd()[:1]) + (c.get("args") or dockerfile_cmd()[1:])
    config_path = config_path_from_args(args, w)
    if "ABLY_API_KEY" not in {e["name"] for e in c.get("env") or [] if e.get("valueFrom", {}).get("secretKeyRef")}:
        problem(w, "ABLY_API_KEY must come from a Secret (env valueFrom.secretKeyRef)")
    for e in c.get("env") or []:
        if "KEY" in e["name"] and "value" in e:
            problem(w, f"env {e['name']} has a literal value; keys come from a Secret")
    sc = c.get("securityContext") or {}
    for key, want in (("runAsNonRoot", True), ("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False)):
        if sc.get(key) is not want:
            problem(w, f"securityContext.{key} must be {str(want).lower()}")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problem(w, "securityContext.capabilities.drop must include ALL")
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(kind) or {}):
                problem(w, f"resources.{kind}.{r} is not set")
    paths = {p: ((c.get(p) or {}).get("httpGet") or {}).get("path") for p in ("readinessProbe", "livenessProbe")}
    if paths != {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}:
        problem(w, f"probes must be readiness /readyz and liveness /healthz, not {paths}")

    if config_path is None:
        return
    found = mounted_file(c, volumes, generated, config_path)
    if found is None:
        problem(w, f"nothing mounts the config file {config_path}")
        return
    cm, key, _ = found
    text = generated.get(cm, {}).get("object", {}).get("data", {}).get(key)
    if text is None:
        problem(w, f"ConfigMap {cm} has no key {key} for {config_path}")
        return
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problem(f"ConfigMap {cm} {key}", f"not valid TOML: {e}")
        return
    if "api_key" in config.get("ably", {}) or "api_keys" in config.get("ably", {}):
        problem(f"ConfigMap {cm} {key}", "holds an API key; it belongs in the Secret")
    bind = {e["name"]: e.get("value") for e in c.get("env") or []}.get("ABLY_TOKEND_SERVER__BIND") \
        or config.get("server", {}).get("bind", "127.0.0.1:8080")
    host, _, port = bind.rpartition(":")
    if host not in ("0.0.0.0", "[::]"):
        problem(w, f"binds {bind}: the kubelet's probes reach the pod IP, so bind 0.0.0.0")
    ports = {p["containerPort"] for p in c.get("ports") or []}
    if int(port) not in ports:
        problem(w, f"binds port {port} but declares container ports {sorted(ports)}")
    policy = config.get("policy", {}).get("path", "policies/default.toml")
    if not policy.startswith("/"):
        policy = "/etc/ably-tokend/" + policy  # the image's WORKDIR
    found = mounted_file(c, volumes, generated, policy)
    if found is None:
        problem(w, f"nothing mounts the policy file {policy}")
        return
    cm, key, in_place = found
    if not in_place:
        problem(w, f"the policy {policy} is a subPath mount, which never sees ConfigMap updates")
    if generated.get(cm, {}).get("hashed", True):
        problem(w, f"ConfigMap {cm} holds the policy but gets a name hash: updates would roll out instead of hot-reloading (options.disableNameSuffixHash)")
    if key not in generated.get(cm, {}).get("object", {}).get("data", {}):
        problem(w, f"ConfigMap {cm} has no key {key} for {policy}")


def check_policy_copies(generated: dict) -> None:
    """The example policy in the ConfigMap is the repository's, which the policy tests cover."""
    for name, gen in generated.items():
        for key, text in gen["object"]["data"].items():
            original = ROOT / "policies" / key
            if key.endswith(".toml") and "[roles" in text and original.is_file() and original.read_text() != text:
                problem(f"ConfigMap {name} {key}",
                        f"differs from policies/{key}: run cp policies/{key} deploy/kubernetes/policies/{key}")


# ---------------------------------------------------------------------------------------------
# Compose


def check_compose() -> int:
    compose_dir = COMPOSE.parent
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc.get("services") or {}
    if SIDECAR not in services:
        problem(rel(COMPOSE), f"no service {SIDECAR}")
    for name, svc in services.items():
        w = f"{rel(COMPOSE)}: service {name}"
        if "image" not in svc and "build" not in svc:
            problem(w, "neither image nor build")
        build = svc.get("build")
        if isinstance(build, str):
            build = {"context": build}
        if build:
            context = (compose_dir / build.get("context", ".")).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problem(w, f"build: {rel(dockerfile)} does not exist")
            elif dockerfile.resolve() != DOCKERFILE:
                problem(w, f"build: uses {rel(dockerfile)}, not the repository's Dockerfile")
        env = svc.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.partition("=")[::2] for e in env)
        for key, value in env.items():
            if "KEY" in key and value not in (None, "") and not str(value).startswith("${"):
                problem(w, f"environment {key} has a literal value; take it from the shell (${{{key}}})")
        if "ABLY_API_KEY" not in env:
            problem(w, "no ABLY_API_KEY in environment")
        mounts: dict[str, Path] = {}
        for v in svc.get("volumes") or []:
            if isinstance(v, dict):
                source, target = v.get("source", ""), v.get("target", "")
            else:
                source, target = (v.split(":") + [""])[:2]
            if source.startswith((".", "/")):
                path = (compose_dir / source).resolve()
                if not path.exists():
                    problem(w, f"volume source {source} does not exist ({rel(path)})")
                mounts[target] = path
        for p in svc.get("ports") or []:
            if not str(p).startswith("127.0.0.1:"):
                problem(w, f"port {p} is published beyond the host's loopback")
        if svc.get("read_only") is not True:
            problem(w, "read_only: true expected (the binary writes no files)")
        command = svc.get("command") or dockerfile_cmd()[1:]
        if isinstance(command, str):
            command = shlex.split(command)
        config_path = config_path_from_args(command, w)
        if config_path is None:
            continue
        config_file = mounts.get(config_path)
        if config_file is None or not config_file.is_file():
            problem(w, f"the config file {config_path} is not a mounted file")
            continue
        config = tomllib.loads(config_file.read_text())
        if "api_key" in config.get("ably", {}) or "api_keys" in config.get("ably", {}):
            problem(rel(config_file), "holds an API key; it belongs in ABLY_API_KEY")
        if command[0] == "serve":
            policy = config.get("policy", {}).get("path", "policies/default.toml")
            if not policy.startswith("/"):
                policy = "/etc/ably-tokend/" + policy
            directory, _, base = policy.rpartition("/")
            source = mounts.get(directory)
            if not (source and (source / base).is_file()) and not (mounts.get(policy) or Path("/nonexistent")).is_file():
                problem(w, f"the policy {policy} is not provided by a mount")
    print(f"compose: {len(services)} services checked")
    return len(services)


# ---------------------------------------------------------------------------------------------
# Secrets

# appId.keyId:secret with a real-looking secret (Ably's are 43 base64 characters).
KEY_PATTERN = re.compile(r"\b[A-Za-z0-9_]{4,}\.[A-Za-z0-9_]{4,}:[A-Za-z0-9][A-Za-z0-9_+/=-]{29,}")


def check_secrets() -> int:
    files = [DOCKERFILE, ROOT / ".dockerignore"] + sorted(p for p in (ROOT / "deploy").rglob("*") if p.is_file())
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if KEY_PATTERN.search(line):
                problem(f"{rel(path)}:{n}", "looks like an Ably API key; keys come from ABLY_API_KEY at run time")
    for n, line in enumerate(DOCKERFILE.read_text().splitlines(), 1):
        word = line.strip().split(" ", 1)[0].upper()
        if word in ("ENV", "ARG") and "ABLY_API_KEY" in line:
            problem(f"Dockerfile:{n}", "ABLY_API_KEY must not be baked into the image")
    ignored = set((ROOT / ".dockerignore").read_text().split())
    for entry in ("target", ".git", "**/node_modules"):
        if entry not in ignored and entry + "/" not in ignored:
            problem(".dockerignore", f"does not exclude {entry}")
    print(f"secrets: {len(files)} files scanned")
    return len(files)


if __name__ == "__main__":
    commands = {"kubernetes": check_kubernetes, "compose": check_compose, "secrets": check_secrets}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(commands)}")
    commands[sys.argv[1]]()
    for p in problems:
        print(f"  {p}")
    sys.exit(1 if problems else 0)
