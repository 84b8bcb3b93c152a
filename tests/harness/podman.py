"""Pull through a hubsync target as a podman or CRI-O host does: a registries.conf whose
docker.io entry lists the target as a mirror (docker-hub-facts.md §6.4).

Podman runs rootful (we are root) with every bit of its state in one temporary directory
(--root, --runroot, --tmpdir, vfs storage, an empty auth file), and inside a private mount
namespace with empty tmpfs over /var/lib, because rootful containers/image keeps its
blob-info cache in /var/lib/containers/cache whatever --root says, and over the system's
registries.conf.d, so that only our registries.conf decides where images come from.
Nothing outlives close().
Python standard library only.
"""
import json
import os
import shutil
import subprocess
import tempfile

DROP_INS = "/etc/containers/registries.conf.d"


def registries_conf(upstream, mirror, insecure=True):
    """registries.conf text: docker.io images come from `mirror` (host:port[/namespace]) first
    and from `upstream` (Docker Hub's registry-1.docker.io in production) only when the
    mirror does not have them. insecure=True allows plain http (loopback demo and tests)."""
    flag = "insecure = true\n" if insecure else ""
    return ("# docker.io/library/* is served by the hubsync target; Docker Hub is the fallback.\n"
            "unqualified-search-registries = [\"docker.io\"]\n\n"
            "[[registry]]\n"
            "prefix = \"docker.io\"\n"
            "location = \"%s\"\n%s\n"
            "[[registry.mirror]]\n"
            "location = \"%s\"\n%s" % (upstream, flag, mirror, flag))


class PodmanError(RuntimeError):
    pass


class Podman:
    """A throw-away rootful podman configured with one registries.conf text."""

    def __init__(self, conf_text):
        if os.geteuid() != 0:
            raise PodmanError("the podman mirror pull runs rootful podman: run it as root")
        if shutil.which("podman") is None or shutil.which("unshare") is None:
            raise PodmanError("podman and unshare are needed (apt-get install podman)")
        self.dir = tempfile.mkdtemp(prefix="hubsync-podman-")
        self.conf = os.path.join(self.dir, "registries.conf")
        with open(self.conf, "w") as f:
            f.write(conf_text)
        # No credentials: neither root's podman login nor docker's config is consulted.
        self.auth = os.path.join(self.dir, "auth.json")
        with open(self.auth, "w") as f:
            f.write('{"auths": {}}\n')

    def command(self, *args):
        d = self.dir
        podman = ["podman", "--root", os.path.join(d, "root"), "--runroot",
                  os.path.join(d, "run"), "--tmpdir", os.path.join(d, "tmp"),
                  "--storage-driver", "vfs", "--events-backend", "none"] + list(args)
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                "mount -t tmpfs -o mode=0755 hubsync-podman /var/lib && "
                "{ [ ! -d %s ] || mount -t tmpfs -o mode=0755 hubsync-podman %s; } && "
                'exec "$@"' % (DROP_INS, DROP_INS), "sh"] + podman

    def run(self, *args, timeout=180):
        env = dict(os.environ, CONTAINERS_REGISTRIES_CONF=self.conf,
                   REGISTRY_AUTH_FILE=self.auth)
        p = subprocess.run(self.command(*args), env=env, capture_output=True, text=True,
                           timeout=timeout)
        if p.returncode != 0:
            raise PodmanError("podman %s: exit %d\n%s" % (" ".join(args), p.returncode,
                                                          p.stderr.strip()[-3000:]))
        return p

    def pull(self, ref, *options):
        """Pull ref (options: podman pull's, e.g. --tls-verify=false); returns (image id,
        podman's progress text)."""
        p = self.run("pull", *options, ref)
        return p.stdout.strip(), p.stderr

    def digest(self, ref):
        """The manifest digest podman resolved ref to (the index for a multi-arch tag)."""
        return self.run("image", "inspect", "--format", "{{.Digest}}", ref).stdout.strip()

    def repo_digests(self, ref):
        """Every manifest digest the local image is known by (one image can be reached
        through several tags, each with its own index)."""
        out = self.run("image", "inspect", "--format", "{{json .RepoDigests}}", ref).stdout
        return {d.rsplit("@", 1)[1] for d in json.loads(out)}

    def close(self):
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
