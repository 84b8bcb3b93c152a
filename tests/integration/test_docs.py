"""The documentation against the programs: docs/configuration.md matches `--help` of both
programs and every coordinator subcommand (flags, variables, defaults, both ways); every
HUBSYNC_* variable in compose/, the README and docs/ is an option of some program (or one of
the credential variables the workers read); every Redis key docs/redis-cli.md names is one of
common/keys.h, and its redis-cli recipes run without an error against the Redis of a real
sync; the README links every guide in docs/ and names every module."""
import glob
import os
import re
import shlex
import subprocess
import unittest

from harness import ROOT, programs
from harness.stack import Stack

README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
REFERENCE = os.path.join(DOCS, "configuration.md")
RECIPES = os.path.join(DOCS, "redis-cli.md")
KEYS_H = os.path.join(ROOT, "common", "keys.h")
ENGINE_C = os.path.join(ROOT, "worker", "engine.c")
CREDS_H = os.path.join(ROOT, "common", "creds.h")


def run_help(argv):
    p = subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, (argv, p.returncode, p.stderr)
    return p.stdout + p.stderr


def help_options(text):
    """{flag: (variable or "", default or "")} from a cfg option table."""
    opts = {}
    for line in text.splitlines():
        m = re.match(r"^  (--[a-z0-9-]+)(?: [A-Z]+)?\s{2,}(.*)$", line)
        if m:
            env = re.search(r"\(env (HUBSYNC_\w+)\)\s*$", m.group(2))
            default = re.search(r"\[default: (.*?)\]", m.group(2))
            opts[m.group(1)] = (env.group(1) if env else "", default.group(1) if default else "")
    return opts


def program_argvs():
    """{README heading: argv} for the worker and every coordinator subcommand."""
    progs = {"hubsync-worker": programs.worker()}
    top = run_help(programs.coordinator())
    commands = top.split("commands:", 1)[1]
    for m in re.finditer(r"^  ([a-z]+)\s{2,}", commands, re.M):
        progs["hubsync-coordinator " + m.group(1)] = programs.coordinator(m.group(1))
    return progs


def read(path):
    with open(path) as f:
        return f.read()


def recipe_commands(recipes):
    """argv of every redis-cli command of the recipes (the text of docs/redis-cli.md)."""
    block = recipes.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines()
            if line.startswith("redis-cli ")]


def recipe_values(cli, target, source, run, worker):
    """{<placeholder>: value} for the recipes, read with cli(*args) -> text from a Redis
    after a complete run of hello-world into target."""
    epoch = cli("HGET", "hubsync:target:" + target, "epoch").strip()
    return {
        "<target>": target,
        "<epoch>": epoch,
        "<source>": source,
        "<run>": run,
        "<worker>": worker,
        "<entry>": "0-1",
        "<commit>": cli("GET", "hubsync:synced-commit").strip(),
        "<digest>": cli("SRANDMEMBER", "hubsync:present:%s:%s:library/hello-world"
                        % (target, epoch)).strip(),
    }


def recipe_args(argv, values):
    """A recipe's redis-cli arguments with its placeholders filled from values."""
    return [re.sub(r"<[a-z]+>", lambda m: values[m.group(0)], a) for a in argv[1:]]


def subsections(text):
    """{## title: body} of a document."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def table_rows(body):
    """{flag: (variable, default)} from the rows `| `--flag ARG` | `VAR` | `default` | ... |`."""
    rows = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`--"):
            flag = cells[0].strip("`").split()[0]
            rows[flag] = (cells[1].strip("`"), cells[2].strip("`"))
    return rows


class ReferenceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.reference = subsections(read(REFERENCE))
        cls.progs = program_argvs()
        cls.helps = {name: run_help(argv) for name, argv in cls.progs.items()}

    def test_every_command_has_a_reference_table(self):
        self.assertIn("hubsync-coordinator sync", self.progs)
        for name in self.progs:
            self.assertIn(name, self.reference, "no '## %s' in %s" % (name, REFERENCE))

    def test_every_flag_variable_and_default_is_documented(self):
        for name, text in self.helps.items():
            opts = help_options(text)
            self.assertIn("--help", opts, name)
            rows = table_rows(self.reference.get(name, ""))
            for flag, (env, default) in opts.items():
                with self.subTest(command=name, flag=flag):
                    self.assertTrue(flag in rows, "docs: %s %s is not documented" % (name, flag))
                    self.assertEqual(rows[flag][0], env, "docs: %s %s variable" % (name, flag))
                    if default:
                        self.assertEqual(rows[flag][1], default,
                                         "docs: %s %s default" % (name, flag))

    def test_no_documented_flag_is_stale(self):
        for title, body in self.reference.items():
            rows = table_rows(body)
            if not rows:
                continue
            self.assertIn(title, self.progs, "docs document '%s', which is not a command"
                          % title)
            opts = help_options(self.helps[title])
            for flag in rows:
                self.assertTrue(flag in opts, "docs: %s %s is not in --help" % (title, flag))


class VariablesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.known = set()
        for argv in program_argvs().values():
            cls.known.update(v for v, _ in help_options(run_help(argv)).values() if v)
        # The workers read credentials per registry role under these prefixes (creds_find);
        # creds.h documents the suffixes.
        with open(ENGINE_C) as f:
            engine = f.read()
        call = engine[engine.index("creds_find("):]
        prefixes = re.findall(r'"(HUBSYNC_[A-Z]+)"', call[:200])
        with open(CREDS_H) as f:
            creds_doc = f.read()
        suffixes = [s for s in ("_USERNAME", "_PASSWORD", "_PASSWORD_FILE")
                    if "<PREFIX>" + s in creds_doc]
        cls.credentials = {p + s for p in prefixes for s in suffixes}

    def test_credential_variables_are_found_and_documented(self):
        self.assertEqual(len(self.credentials), 6, self.credentials)
        creds = subsections(read(REFERENCE))["Credentials (environment only)"]
        for v in self.credentials:
            self.assertIn("`%s`" % v, creds)

    def test_every_variable_in_compose_and_readme_exists(self):
        files = sorted(glob.glob(os.path.join(ROOT, "compose", "*")) +
                       glob.glob(os.path.join(ROOT, "compose", ".env.example")) + [README] +
                       glob.glob(os.path.join(DOCS, "*.md")))
        seen = 0
        for path in files:
            with open(path) as f:
                text = f.read()
            for v in sorted(set(re.findall(r"\bHUBSYNC_[A-Z0-9_]+\b", text))):
                seen += 1
                with self.subTest(file=os.path.relpath(path, ROOT), variable=v):
                    self.assertTrue(v in self.known | self.credentials,
                                    "%s: %s is no option of any program" % (path, v))
        self.assertGreater(seen, 40)


class RedisRecipesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.recipes = read(RECIPES)
        with open(KEYS_H) as f:
            keys_doc = f.read()
        names = re.findall(r"^ \* <p>(\S+)\s", keys_doc, re.M)
        cls.key_patterns = [re.compile("^hubsync:" + re.sub(r"<[a-z]+>", "[^ ]+", re.escape(n))
                                       + "$") for n in names]

    def commands(self):
        return recipe_commands(self.recipes)

    def test_every_key_named_is_a_hubsync_key(self):
        self.assertGreater(len(self.key_patterns), 20)
        keys = set(re.findall(r"hubsync:[A-Za-z0-9:<>._/*@-]+", self.recipes))
        self.assertGreater(len(keys), 15)
        for key in keys:
            probe = key.replace("*", "part:part")  # a glob stands for one or more parts
            self.assertTrue(any(p.match(probe) for p in self.key_patterns),
                            "docs/redis-cli.md names %s, which common/keys.h does not list" % key)

    def test_recipes_run_against_a_real_sync(self):
        stack = Stack("hello-world").start()
        self.addCleanup(stack.stop)
        stack.worker("--id", "recipe-worker", log="worker.log")
        p = subprocess.run(stack.sync_argv(), capture_output=True, text=True, timeout=180)
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        cli = stack.redis.cli_raw
        source = [k for k in cli("--scan", "--pattern", "hubsync:budget:*").split()
                  if not k.endswith(":inflight")][0][len("hubsync:budget:"):]
        values = recipe_values(cli, stack.target.url, source,
                               cli("ZREVRANGE", "hubsync:runs", "0", "0").strip(),
                               "recipe-worker")
        cmds = self.commands()
        self.assertGreater(len(cmds), 25)
        outputs = {}
        for argv in cmds:
            self.assertEqual(argv[0], "redis-cli")
            args = recipe_args(argv, values)
            out = subprocess.run(["redis-cli", "-p", str(stack.redis.port)] + args,
                                 capture_output=True, text=True, timeout=30)
            text = out.stdout + out.stderr
            self.assertEqual(out.returncode, 0, (args, text))
            self.assertNotRegex(text, r"^(\(error\) )?(ERR|WRONGTYPE)", (args, text))
            outputs[" ".join(argv[1:3])] = text
        self.assertIn("state", outputs["HGETALL hubsync:run:<run>"])
        self.assertIn("remaining", outputs["HGETALL hubsync:budget:<source>"])
        self.assertIn('"pid"', outputs["GET hubsync:worker:<worker>"])
        self.assertRegex(outputs["GET hubsync:synced-commit"], r"^[0-9a-f]{40}\n")
        self.assertEqual(outputs["SISMEMBER hubsync:present:<target>:<epoch>:library/alpine"]
                         .strip(), "0")
        self.assertIn("marker", outputs["HGETALL hubsync:target:<target>"])
        self.assertEqual(cli("EXISTS", "hubsync:ctl:paused").strip(), "0")


class FrontDoorTest(unittest.TestCase):
    """The README is the way in: it stays short, links every guide and names every module."""

    def setUp(self):
        self.readme = read(README)

    def test_short(self):
        self.assertLessEqual(len(self.readme.splitlines()), 170)

    def test_links_every_guide(self):
        guides = sorted(os.path.basename(p) for p in glob.glob(os.path.join(DOCS, "*.md")))
        self.assertGreater(len(guides), 5)
        for g in guides:
            self.assertIn("](docs/%s)" % g, self.readme)
        for link in re.findall(r"\]\((docs/[^)#]+)", self.readme):
            self.assertTrue(os.path.exists(os.path.join(ROOT, link)), link)

    def test_names_every_module(self):
        for d in ("common", "coordinator", "worker"):
            for path in glob.glob(os.path.join(ROOT, d, "*.c")):
                name = os.path.splitext(os.path.basename(path))[0]
                if name == "main":
                    continue
                with self.subTest(module=d + "/" + name):
                    self.assertRegex(self.readme, r"`(%s/)?%s`" % (d, re.escape(name)))


if __name__ == "__main__":
    unittest.main()
