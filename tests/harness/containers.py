"""Container engines for the compose tests, with no registry to pull from: Debian's podman 4.3
and Docker Engine 20.10 (docker.io), each rootful with a private configuration and store,
serving the Docker API on a socket of its own to docker-compose; and the images the stack
runs, built locally from Debian packages and cached between test runs.

    podman = Podman().start()              # podman system service on a private socket
    imgs = build_images(podman)            # {"base", "hubsync", "redis", "registry": ref}
    docker = Docker().start()              # a private dockerd
    docker.load(podman, imgs.values())     # the same images, copied over
    env = dict(os.environ, DOCKER_HOST=podman.docker_host)    # for docker-compose
    podman.check_health("myproject")       # what podman's systemd timer would do
    podman.stop(); docker.stop()

Podman's configuration (containers.conf, storage.conf) is the test's own, given through
CONTAINERS_CONF and CONTAINERS_STORAGE_CONF; the machine's is not read or changed. It holds
what podman 4.3 needs on hosts like the CI machines (cgroups v1/hybrid, no systemd, a
setrlimit-restricted sandbox): the runc runtime (crun refuses hybrid cgroups), the cgroupfs
cgroup manager, explicit nofile/nproc ulimits (podman's default nofile is refused), catatonit
for compose's `init: true`, and netavark with aardvark-dns so services find each other by
name. Without systemd podman cannot schedule health checks (it asks systemd for a timer), so
check_health() runs them, as the timer would.

Images, all on one Debian 12 base made with debootstrap from the Debian mirror apt uses here
(read from apt's own configuration), imported as debian:12 so that `FROM debian:12` needs no
registry: hubsync's from compose/Dockerfile, and stand-ins for the official redis and
registry images from Debian's redis-server and docker-registry packages. Builds use the host
network (apt inside reaches the same mirror). Each image is tagged with a key hashed from
what goes into it; an image whose key is in the store is not built (or loaded) again. The
stores live in HUBSYNC_IMAGE_CACHE (default ~/.cache/hubsync), podman/ and docker/.
Python standard library only.
"""
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse

from harness import ROOT

CACHE = os.environ.get("HUBSYNC_IMAGE_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hubsync")
SUITE = "bookworm"
LIBPOD = "/v4.0.0/libpod"  # podman's own API, beside the Docker one
BASE_TAG = "docker.io/library/debian:12"

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
init_path = "/usr/bin/catatonit"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{cache}/tmp"

[network]
network_backend = "netavark"
network_config_dir = "{cache}/networks"
"""

STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{cache}/storage"
runroot = "{cache}/run"
"""

# What compose/Dockerfile's build reads (its COPY lines, and .dockerignore).
HUBSYNC_INPUTS = [".dockerignore", ".ci/deps", ".ci/packages", "compose/Dockerfile", "Makefile",
                  "common", "coordinator", "worker"]

# Like the official redis image: redis-server as user redis in /data, protected mode off
# (the container's network is the boundary), redis-cli for the health check.
REDIS_DOCKERFILE = r"""FROM debian:12
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* && mkdir /data && chown redis:redis /data \
 && printf '#!/bin/sh\n[ "$1" != redis-server ] || set -- "$@" --protected-mode no\nexec "$@"\n' \
    > /usr/local/bin/redis-entrypoint && chmod 755 /usr/local/bin/redis-entrypoint
VOLUME /data
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/redis-entrypoint"]
CMD ["redis-server"]
"""

# Like the official registry:2 image: its configuration file, storage in /var/lib/registry,
# :5000, and a wget for the health check.
REGISTRY_DOCKERFILE = r"""FROM debian:12
RUN apt-get update && apt-get install -y --no-install-recommends docker-registry wget \
 && rm -rf /var/lib/apt/lists/* && mkdir -p /var/lib/registry \
 && printf '%s\n' 'version: 0.1' 'log:' '  fields:' '    service: registry' 'storage:' \
    '  cache:' '    blobdescriptor: inmemory' '  filesystem:' '    rootdirectory: /var/lib/registry' \
    'http:' '  addr: :5000' '  headers:' '    X-Content-Type-Options: [nosniff]' \
    > /etc/docker/registry/config.yml
VOLUME /var/lib/registry
EXPOSE 5000
ENTRYPOINT ["docker-registry"]
CMD ["serve", "/etc/docker/registry/config.yml"]
"""


class EngineError(RuntimeError):
    pass


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Engine:
    """A container engine serving the Docker API on a socket of its own while started: Podman
    or Docker below. What the tests do through it is plain Docker API, which both serve."""

    name = "engine"
    programs = ()

    def __init__(self, cache=CACHE):
        if os.geteuid() != 0:
            raise EngineError("the compose tests run a rootful %s: run them as root" % self.name)
        for prog in self.programs:
            if shutil.which(prog) is None:
                raise EngineError("%s is missing (.ci/deps installs the test packages)" % prog)
        self.cache = cache
        os.makedirs(cache, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="hubsync-%s-" % self.name)
        self.socket = os.path.join(self.dir, "api.sock")
        self.log_path = os.path.join(self.dir, "service.log")
        self.env = dict(os.environ)
        self.service = None

    @property
    def docker_host(self):
        return "unix://" + self.socket

    def service_command(self):
        raise NotImplementedError

    def start(self, timeout=60):
        log = open(self.log_path, "wb")
        self.service = subprocess.Popen(self.service_command(), env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.time() + timeout
        while True:
            try:
                if self.api("GET", "/_ping", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            if self.service.poll() is not None or time.time() > deadline:
                raise EngineError("%s did not answer on %s; log:\n%s"
                                  % (self.name, self.socket,
                                     open(self.log_path, errors="replace").read()[-3000:]))
            time.sleep(0.1)

    def stop(self):
        if self.service is not None and self.service.poll() is None:
            self.service.terminate()
            try:
                self.service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait()
        self.service = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def api(self, method, path, body=None, timeout=60):
        """(status, decoded JSON or text) of one request to the engine's API."""
        conn = _UnixHTTPConnection(self.socket, timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            r = conn.getresponse()
            raw = r.read()
        finally:
            conn.close()
        try:
            return r.status, json.loads(raw) if raw else None
        except ValueError:
            return r.status, raw.decode(errors="replace")

    def call(self, method, path, body=None, ok=(200, 201, 204)):
        status, out = self.api(method, path, body)
        if status not in ok:
            raise EngineError("%s %s %s: %s %s" % (self.name, method, path, status, out))
        return out

    def containers(self, project, service=None, all=False):
        """The container list of a compose project (and service)."""
        labels = ["com.docker.compose.project=" + project]
        if service:
            labels.append("com.docker.compose.service=" + service)
        return self.call("GET", "/containers/json?" + urllib.parse.urlencode(
            {"all": "1" if all else "0", "filters": json.dumps({"label": labels})}))

    def check_health(self, project):
        """Run the health checks the engine does not run by itself (see Podman)."""

    def create_network(self, name, image):
        """A bridge network (compose's default kind) kept up by an idle container of `image`
        (podman's netavark brings the bridge and its gateway address up only while a
        container is attached); returns the gateway address."""
        self.call("POST", "/networks/create", {"Name": name, "Driver": "bridge"})
        c = self.call("POST", "/containers/create?name=%s-keeper" % name,
                      {"Image": image, "Cmd": ["sleep", "infinity"],
                       "HostConfig": {"NetworkMode": name, "Init": True}})
        self.call("POST", "/containers/%s/start" % c["Id"])
        return self.call("GET", "/networks/" + name)["IPAM"]["Config"][0]["Gateway"]

    def remove_network(self, name):
        self.api("DELETE", "/containers/%s-keeper?force=1" % name)
        self.api("DELETE", "/networks/" + name)

    def remove_leftovers(self, pattern):
        """Remove the containers, volumes and networks whose name matches pattern, a regular
        expression whose group 1 is a process id, when that process is gone."""
        def gone(name):
            m = re.match(pattern, name.lstrip("/"))
            return m and not os.path.exists("/proc/" + m.group(1))
        for c in self.call("GET", "/containers/json?all=1"):
            if any(gone(n) for n in c["Names"]):
                self.api("DELETE", "/containers/%s?force=1&v=1" % c["Id"])
        for v in self.call("GET", "/volumes")["Volumes"] or []:
            if gone(v["Name"]):
                self.api("DELETE", "/volumes/%s?force=1" % v["Name"])
        for n in self.call("GET", "/networks"):
            if gone(n["Name"]):
                self.api("DELETE", "/networks/" + n["Name"])

    def has_image(self, ref):
        return self.api("GET", "/images/%s/json" % ref)[0] == 200

    def tag(self, ref, repo, tag):
        self.call("POST", "/images/%s/tag?%s" % (ref, urllib.parse.urlencode(
            {"repo": repo, "tag": tag})))


class Podman(Engine):
    """Rootful podman 4.3 with the configuration above (its store in `cache`), serving the
    Docker API with `podman system service`. It builds every image (build_images)."""

    name = "podman"
    programs = ("podman", "runc", "catatonit", "debootstrap", "docker-compose")

    def __init__(self, cache=CACHE):
        super().__init__(os.path.join(cache, "podman"))
        confs = {}
        for name, text in (("containers.conf", CONTAINERS_CONF),
                           ("storage.conf", STORAGE_CONF)):
            confs[name] = os.path.join(self.dir, name)
            with open(confs[name], "w") as f:
                f.write(text.format(cache=self.cache))
        self.env.update(CONTAINERS_CONF=confs["containers.conf"],
                        CONTAINERS_STORAGE_CONF=confs["storage.conf"])

    def service_command(self):
        return ["podman", "system", "service", "--time", "0", self.docker_host]

    def podman(self, *args, timeout=600, stdin=None):
        """Run podman with this configuration; stdout, or EngineError with its stderr."""
        p = subprocess.run(["podman"] + list(args), env=self.env, stdin=stdin,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        if p.returncode != 0:
            raise EngineError("podman %s: exit %d\n%s" % (" ".join(args[:3]), p.returncode,
                                                          p.stderr.decode(errors="replace")
                                                          [-3000:]))
        return p.stdout.decode(errors="replace")

    def check_health(self, project):
        """Run the health check of every running container of the project once, as the
        engine's timer would (podman schedules it through systemd, absent here)."""
        for c in self.containers(project):
            self.api("GET", LIBPOD + "/containers/%s/healthcheck" % c["Id"])


class Docker(Engine):
    """Debian's Docker Engine 20.10 (docker.io): a dockerd of its own with its store in
    `cache`, no default bridge and no iptables rules (the tests' networks are user-defined
    bridges, and published ports go through docker-proxy), so the host's network setup is
    left alone. It runs health checks itself. Images come from Podman (load)."""

    name = "docker"
    programs = ("dockerd", "containerd", "docker-compose")

    def __init__(self, cache=CACHE):
        super().__init__(os.path.join(cache, "docker"))

    def service_command(self):
        return ["dockerd", "--data-root", self.cache, "--exec-root",
                os.path.join(self.dir, "exec"), "--pidfile", os.path.join(self.dir, "pid"),
                "--host", self.docker_host, "--bridge", "none", "--iptables=false",
                "--ip-masq=false", "--exec-opt", "native.cgroupdriver=cgroupfs"]

    def load(self, podman, refs):
        """Copy the images it lacks from podman's store (podman save | POST /images/load)."""
        for ref in refs:
            if self.has_image(ref):
                continue
            save = subprocess.Popen(["podman", "save", ref], env=podman.env,
                                    stdout=subprocess.PIPE)
            conn = _UnixHTTPConnection(self.socket, 600)
            try:
                conn.request("POST", "/images/load?quiet=1", body=save.stdout,
                             headers={"Content-Type": "application/x-tar"},
                             encode_chunked=True)
                r = conn.getresponse()
                out = r.read().decode(errors="replace")
            finally:
                conn.close()
                save.stdout.close()
            if save.wait() != 0 or r.status != 200 or not self.has_image(ref):
                raise EngineError("docker could not load %s from podman: %s %s"
                                  % (ref, r.status, out[-2000:]))
            # Older loads of the same image go.
            repo = ref.rsplit(":", 1)[0]
            for image in self.call("GET", "/images/json?" + urllib.parse.urlencode(
                    {"filters": json.dumps({"reference": [repo]})})):
                for old in image["RepoTags"] or []:
                    if old != ref:
                        self.api("DELETE", "/images/" + old)
        self.api("POST", "/images/prune")


def _digest_paths(h, paths):
    for rel in paths:
        full = os.path.join(ROOT, rel)
        files = [full] if os.path.isfile(full) else sorted(
            os.path.join(d, f) for d, _, fs in os.walk(full) for f in fs)
        for path in files:
            h.update(os.path.relpath(path, ROOT).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read() + b"\0")


def _key(*parts, paths=()):
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() + b"\0")
    _digest_paths(h, paths)
    return h.hexdigest()[:16]


def debian_sources():
    """(the Debian mirror of the main suite, apt sources.list lines of every Debian suite,
    the apt.conf lines the mirror needs) as apt is configured on this host."""
    p = subprocess.run(["apt-get", "indextargets", "--format",
                        "$(ORIGIN)|$(REPO_URI)|$(RELEASE)|$(COMPONENT)", "Created-By: Packages"],
                       capture_output=True, text=True, check=True)
    suites = {}
    for line in sorted(set(p.stdout.split())):
        origin, uri, release, component = line.split("|")
        if origin == "Debian" and release.startswith(SUITE):
            suites.setdefault((uri, release), []).append(component)
    main = [uri for uri, release in suites if release == SUITE]
    if not main:
        raise EngineError("apt knows no Debian %s mirror (run apt-get update first)" % SUITE)
    lines = ["deb %s %s %s" % (uri, rel, " ".join(sorted(comps)))
             for (uri, rel), comps in sorted(suites.items())]
    conf = subprocess.run(["apt-config", "dump"], capture_output=True, text=True,
                          check=True).stdout.splitlines()
    keep = ("Acquire::Check-Valid-Until ", "Acquire::Check-Date ", "Acquire::http::Proxy ",
            "Acquire::https::Proxy ")
    return main[0], lines, [c for c in conf if c.startswith(keep)]


def _build_base(engine, tag, mirror, sources, apt_conf):
    root = tempfile.mkdtemp(prefix="hubsync-debootstrap-", dir=engine.cache)
    try:
        p = subprocess.run(["debootstrap", "--variant=minbase", SUITE, root, mirror],
                           capture_output=True, text=True, timeout=1800)
        if p.returncode != 0:
            raise EngineError("debootstrap: exit %d\n%s" % (p.returncode,
                                                            (p.stdout + p.stderr)[-3000:]))
        with open(os.path.join(root, "etc/apt/sources.list"), "w") as f:
            f.write("\n".join(sources) + "\n")
        with open(os.path.join(root, "etc/apt/apt.conf.d/50host-mirror"), "w") as f:
            f.write("\n".join(apt_conf) + "\n")
        for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for name in os.listdir(os.path.join(root, d)):
                path = os.path.join(root, d, name)
                if os.path.isfile(path):
                    os.unlink(path)
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        try:
            engine.podman("import", "--change", 'CMD ["bash"]', "-", tag, stdin=tar.stdout)
        finally:
            tar.stdout.close()
            tar.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _build(engine, tag, context, dockerfile):
    # No intermediate images kept: the store holds the images in use, not their history.
    engine.podman("build", "--network", "host", "--pull=never", "--layers=false", "-f",
                  dockerfile, "-t", tag, context, timeout=1800)
    # Older builds of the same image go.
    name = tag.rsplit(":", 1)[0]
    for ref in engine.podman("images", "--format", "{{.Repository}}:{{.Tag}}", name).split():
        if ref != tag:
            try:
                engine.podman("rmi", ref)
            except EngineError:
                pass  # in use by a container of a test running now
    engine.podman("image", "prune", "--force")


def build_images(engine, say=lambda text: None):
    """Build with podman what is missing; returns {"base", "hubsync", "redis", "registry":
    image reference} and says what it built, with the time taken."""
    mirror, sources, apt_conf = debian_sources()
    base_key = _key(SUITE, mirror, *sources, *apt_conf)
    base = "localhost/hubsync-test-base:" + base_key
    images = {
        "hubsync": ("localhost/hubsync-test:" + _key(base_key, paths=HUBSYNC_INPUTS),
                    ROOT, os.path.join(ROOT, "compose", "Dockerfile")),
        "redis": ("localhost/hubsync-test-redis:" + _key(base_key, REDIS_DOCKERFILE), None,
                  REDIS_DOCKERFILE),
        "registry": ("localhost/hubsync-test-registry:" + _key(base_key, REGISTRY_DOCKERFILE),
                     None, REGISTRY_DOCKERFILE),
    }
    t0 = time.time()
    if not engine.has_image(base):
        _build_base(engine, base, mirror, sources, apt_conf)
        say("base %s: debootstrap and import %.0fs" % (base, time.time() - t0))
    # FROM debian:12 in every Dockerfile is this base.
    engine.podman("tag", base, BASE_TAG)
    out = {"base": base}
    for name, (tag, context, dockerfile) in images.items():
        out[name] = tag
        if engine.has_image(tag):
            continue
        t1 = time.time()
        if context is None:
            context = tempfile.mkdtemp(prefix="hubsync-image-")
            try:
                with open(os.path.join(context, "Dockerfile"), "w") as f:
                    f.write(dockerfile)
                _build(engine, tag, context, os.path.join(context, "Dockerfile"))
            finally:
                shutil.rmtree(context, ignore_errors=True)
        else:
            _build(engine, tag, context, dockerfile)
        say("image %s: built in %.0fs" % (tag, time.time() - t1))
    say("images ready in %.1fs" % (time.time() - t0))
    return out
