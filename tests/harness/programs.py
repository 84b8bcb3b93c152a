"""The command lines of hubsync's programs, built in one place for the tests, the demo and
the benchmark: the coordinator's commands and the worker with the settings every caller
gives (Redis, official-images, upstream, target, repositories, ref, logging). Servers may be
given as objects with a url (RedisServer, Registry, Standin) or as URLs; a keyword left at
None is not passed (the program's own default or environment applies). `bin` is the
directory of the programs (build/asan/bin for the sanitizer tests).
"""
import json
import os
import subprocess

from harness import BIN, OFFICIAL_IMAGES


def _url(server):
    return server if isinstance(server, str) else server.url


def _options(redis=None, official_images=None, upstream=None, target=None, repos=None,
             ref=None, log_level=None, log_format=None):
    out = []
    for flag, value in (("--redis", redis and _url(redis)),
                        ("--official-images", official_images),
                        ("--upstream", upstream and _url(upstream)),
                        ("--target", target and _url(target)),
                        ("--repos", repos if repos is None or isinstance(repos, str)
                         else ",".join(repos)),
                        ("--ref", ref), ("--log-level", log_level),
                        ("--log-format", log_format)):
        if value is not None:
            out += [flag, value]
    return out


def coordinator(command=None, *extra, bin=BIN, **options):
    """argv of `hubsync-coordinator COMMAND` (None: no command, as for the top-level
    --help): the options (redis=, official_images=, upstream=, target=, repos=, ref=,
    log_level=, log_format=), then extra."""
    return ([os.path.join(bin, "hubsync-coordinator")] + ([command] if command else []) +
            _options(**options) + [str(x) for x in extra])


def sync(*extra, once=True, wait=True, json_report=True, **options):
    """argv of `hubsync-coordinator sync`: by default one run (--once) that waits for its
    jobs (--wait) and prints its report as JSON."""
    flags = (["--once"] if once else []) + (["--wait"] if wait else []) + \
        (["--json"] if json_report else [])
    return coordinator("sync", *(flags + list(extra)), **options)


def bundle(command, directory, *extra, **options):
    """argv of `hubsync-coordinator export DIR` or `import DIR` (command), with --json."""
    return coordinator(command, directory, "--json", *extra, **options)


def worker(*extra, bin=BIN, redis=None, upstream=None, target=None, log_level=None,
           log_format=None):
    """argv of hubsync-worker."""
    return ([os.path.join(bin, "hubsync-worker")] +
            _options(redis=redis, upstream=upstream, target=target, log_level=log_level,
                     log_format=log_format) + [str(x) for x in extra])


def catalog(repos, ref=None, source=OFFICIAL_IMAGES, bin=BIN):
    """`hubsync-coordinator catalog --json` of these repositories; RuntimeError with the
    coordinator's own message if it fails."""
    p = subprocess.run(coordinator("catalog", "--json", bin=bin, official_images=source,
                                   repos=repos, ref=ref), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("hubsync-coordinator catalog: %s" % p.stderr.strip())
    return json.loads(p.stdout)
