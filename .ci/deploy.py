"""Runs `tutela serve --check` with the arguments and environment of every tutela container in
rendered Kubernetes manifests, so that CI proves the manifests' settings are ones the real binary
accepts, with the files they mount where they mount them.

For each Deployment, the pod's volumes are laid out in a scratch directory: ConfigMaps with their
rendered content, Secrets with generated stand-in values (these manifests never carry secrets),
emptyDirs and claims empty. Mount paths in the containers' environment and arguments are
rewritten to point there. Init steps run in order: a tutela `serve --check` as it is, a tutela
`migrate` as `serve --check` with the same flags (the check connects to no database), and the
`install -m MODE SRC DST` copy step emulated. The main container is checked with `--check`
added. Any problem or warning fails.

It also fails when a container takes a value from a Secret through an environment variable
(secrets are files here), when a probe asks health for a name the process does not report, and
when an http(s)/postgres URL in the environment names a host that is neither a Service in the
same manifests nor a CloudNativePG cluster's service.

Usage: deploy.py TUTELA_BINARY RENDERED.yaml..."""

import base64
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from urllib.parse import urlsplit

import yaml

# A public P-256 key (no private part exists anywhere): stands in for the identity provider's
# JWKS, which must parse and carry a usable key.
JWKS = (
    '{"keys": [{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "ci",'
    ' "x": "70gTVnLZS0B8Cl91GSSUNU2W2FH8tnSD9Qf3RfdBiX0",'
    ' "y": "AZoANa86dulMQsRozNrWfdikIhgRfrQr5CBgZqcwHkE"}]}\n'
)

# Stand-in content of the Secrets the manifests mount, by the key they mount.
SECRET_KEYS = {
    "kek": lambda: "ci-1:" + base64.b64encode(secrets.token_bytes(32)).decode() + "\n",
    "audit-key": lambda: secrets.token_urlsafe(36) + "\n",
    "jwks.json": lambda: JWKS,
    "pgpass": lambda: "*:5432:*:*:" + secrets.token_urlsafe(16) + "\n",
    "ca.crt": lambda: "-----BEGIN CERTIFICATE-----\nY2k=\n-----END CERTIFICATE-----\n",
}
# Secrets whose keys are data (one service token per tenant): one tenant stands in.
SECRET_DIRECTORIES = {"tutela-consent-tokens": {"default": "ci.service.token\n"}}

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def secret_files(name, items):
    if name in SECRET_DIRECTORIES:
        return dict(SECRET_DIRECTORIES[name])
    keys = [i["key"] for i in items] if items else None
    if keys is None:
        # Without items every key of the Secret appears: the ones tutela's Secrets carry.
        if name.endswith("-keys"):
            keys = ["kek", "audit-key"]
        elif name == "tutela-jwks":
            keys = ["jwks.json"]
        else:
            fail(f"secret {name}: no stand-in content known; add it to .ci/deploy.py")
            return {}
    files = {}
    for key in keys:
        if key not in SECRET_KEYS:
            fail(f"secret {name}: no stand-in for key {key}; add it to .ci/deploy.py")
            continue
        files[key] = SECRET_KEYS[key]()
    return files


def lay_out(volume, root, config_maps, fs_group):
    """Creates the volume's content under root; returns its directory."""
    path = os.path.join(root, "volumes", volume["name"])
    os.makedirs(path)
    if "configMap" in volume:
        source = volume["configMap"]
        data = config_maps.get(source["name"])
        if data is None:
            fail(f"volume {volume['name']}: ConfigMap {source['name']} is not in the manifests")
            return path
        files = dict(data)
        mode = source.get("defaultMode", 0o644)
    elif "secret" in volume:
        source = volume["secret"]
        files = secret_files(source["secretName"], source.get("items"))
        mode = source.get("defaultMode", 0o644)
    else:
        # emptyDir, persistentVolumeClaim: an empty, writable directory.
        return path
    paths = {i["key"]: i["path"] for i in source.get("items") or []}
    for key, content in files.items():
        if paths and key not in paths:
            continue
        file = os.path.join(path, paths.get(key, key))
        os.makedirs(os.path.dirname(file), exist_ok=True)
        with open(file, "w") as f:
            f.write(content)
        # As the kubelet does: an fsGroup makes the files group-readable.
        os.chmod(file, mode | (0o440 if fs_group is not None else 0))
    return path


def rewrite(value, mounts):
    for mount_path, directory in sorted(mounts.items(), key=lambda m: -len(m[0])):
        if value == mount_path:
            return directory
        value = value.replace(mount_path + "/", directory + "/")
    return value


def environment(container, config_maps, where):
    env = {}
    for source in container.get("envFrom") or []:
        if "secretRef" in source:
            fail(f"{where}: envFrom a Secret; secrets are mounted as files")
        elif "configMapRef" in source:
            env.update(config_maps.get(source["configMapRef"]["name"], {}))
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            fail(f"{where}: {var['name']} comes from a Secret; secrets are mounted as files")
        else:
            env[var["name"]] = "10.0.0.1"
    return env


def check_urls(env, hosts, where):
    for name, value in env.items():
        if not re.match(r"^(https?|postgres(ql)?)://", value):
            continue
        host = urlsplit(value).hostname or ""
        if "." not in host and host not in hosts:
            fail(f"{where}: {name} names host {host!r}, which no Service here provides")


def run_check(binary, args, env, where):
    command = [binary, *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    report = result.stdout + result.stderr
    print(f"--- {where}: tutela {' '.join(args)}")
    print(report.rstrip())
    if result.returncode != 0:
        fail(f"{where}: the check failed")
    elif not re.search(r"\b0 warning\(s\)", report):
        fail(f"{where}: the check reported warnings")
    hosted = re.search(r"^ok\s+services: (.*)$", report, re.MULTILINE)
    return hosted.group(1).split(", ") if hosted else []


def check_deployment(binary, deployment, config_maps, hosts, images):
    where = f"Deployment {deployment['metadata']['name']}"
    pod = deployment["spec"]["template"]["spec"]
    fs_group = (pod.get("securityContext") or {}).get("fsGroup")
    root = tempfile.mkdtemp(prefix="tutela-manifest-")
    try:
        volumes = {
            v["name"]: lay_out(v, root, config_maps, fs_group) for v in pod.get("volumes") or []
        }
        steps = [(c, True) for c in pod.get("initContainers") or []]
        steps += [(c, False) for c in pod["containers"]]
        for container, init in steps:
            here = f"{where}, container {container['name']}"
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts") or []}
            if not container["image"].startswith(images):
                command = container.get("command") or []
                if init and len(command) == 5 and command[:2] == ["install", "-m"]:
                    source, target = rewrite(command[3], mounts), rewrite(command[4], mounts)
                    shutil.copyfile(source, target)
                    os.chmod(target, int(command[2], 8))
                elif init:
                    fail(f"{here}: unknown init step {command}; teach .ci/deploy.py what it does")
                continue
            if container.get("command"):
                fail(f"{here}: overrides the image's entrypoint")
                continue
            args = list(container.get("args") or ["serve"])
            if args[0] == "migrate":
                # The same flags; the check stops where migrate would connect.
                args[0] = "serve"
            elif args[0] != "serve":
                fail(f"{here}: unexpected subcommand {args[0]!r}")
                continue
            if "--check" not in args:
                args.append("--check")
            env = environment(container, config_maps, here)
            check_urls(env, hosts, here)
            env = {k: rewrite(v, mounts) for k, v in env.items()}
            # The kubelet sets these; the check warns about a loopback listen address in a pod.
            env.update(KUBERNETES_SERVICE_HOST="10.96.0.1", KUBERNETES_SERVICE_PORT="443")
            hosted = run_check(binary, [rewrite(a, mounts) for a in args], env, here)
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                grpc = (container.get(probe) or {}).get("grpc")
                if grpc is not None and grpc.get("service", "") not in ["", *hosted]:
                    fail(f"{here}: {probe} asks health for {grpc.get('service')!r}; "
                         f"the process reports '' and {', '.join(hosted)}")
    finally:
        shutil.rmtree(root)


def main():
    binary, files = sys.argv[1], sys.argv[2:]
    for file in files:
        with open(file) as f:
            objects = [o for o in yaml.safe_load_all(f) if o]
        print(f"=== {file}")
        config_maps = {
            o["metadata"]["name"]: o.get("data") or {} for o in objects if o["kind"] == "ConfigMap"
        }
        hosts = {o["metadata"]["name"] for o in objects if o["kind"] == "Service"}
        for o in objects:
            if o["kind"] == "Cluster" and o["apiVersion"].startswith("postgresql.cnpg.io/"):
                hosts |= {o["metadata"]["name"] + s for s in ("-rw", "-ro", "-r")}
        images = tuple(
            c["image"].rsplit(":", 1)[0].split("@")[0]
            for o in objects
            if o["kind"] == "Deployment"
            for c in o["spec"]["template"]["spec"]["containers"]
            if c["name"] == "tutela"
        )
        deployments = [o for o in objects if o["kind"] == "Deployment"]
        checked = 0
        for deployment in deployments:
            containers = deployment["spec"]["template"]["spec"]["containers"]
            if any(c["image"].startswith(images) for c in containers):
                check_deployment(binary, deployment, config_maps, hosts, images)
                checked += 1
        if checked == 0:
            fail(f"{file}: no tutela Deployment found")
    if failures:
        print(f"\n{len(failures)} failure(s):")
        for failure in failures:
            print(f"  {failure}")
        sys.exit(1)
    print("\nevery tutela container's arguments and environment pass `tutela serve --check`")


main()
