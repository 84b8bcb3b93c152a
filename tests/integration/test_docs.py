"""The README against the programs: its configuration reference matches `--help` of both
programs and every coordinator subcommand (flags, variables, defaults, both ways); every
HUBSYNC_* variable in compose/ and the README is an option of some program (or one of the
credential variables the workers read); every Redis key it names is one of common/keys.h;
and its redis-cli recipes run without an error against the Redis of a real sync."""
import glob
import os
import re
import shlex
import subprocess
import unittest

from demo.rig import COORDINATOR, WORKER, Rig
from harness import ROOT

README = os.path.join(ROOT, "README.md")
KEYS_H = os.path.join(ROOT, "common", "keys.h")
ENGINE_C = os.path.join(ROOT, "worker", "engine.c")
CREDS_H = os.path.join(ROOT, "common", "creds.h")
REFERENCE = "## Configuration reference"
RECIPES = "## Looking inside with redis-cli"


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


def programs():
    """{README heading: argv} for the worker and every coordinator subcommand."""
    progs = {"hubsync-worker": [WORKER]}
    top = run_help([COORDINATOR])
    commands = top.split("commands:", 1)[1]
    for m in re.finditer(r"^  ([a-z]+)\s{2,}", commands, re.M):
        progs["hubsync-coordinator " + m.group(1)] = [COORDINATOR, m.group(1)]
    return progs


def section(text, heading):
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start:end if end >= 0 else len(text)]


def recipe_commands(recipes):
    """argv of every redis-cli command of the README's recipes section (its text)."""
    block = recipes.split("```sh\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines()
            if line.startswith("redis-cli ")]


def subsections(text):
    """{### title: body} of a section."""
    parts = re.split(r"^### (.+)$", text, flags=re.M)
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
        with open(README) as f:
            cls.readme = f.read()
        cls.reference = subsections(section(cls.readme, REFERENCE))
        cls.progs = programs()
        cls.helps = {name: run_help(argv) for name, argv in cls.progs.items()}

    def test_every_command_has_a_reference_table(self):
        self.assertIn("hubsync-coordinator sync", self.progs)
        for name in self.progs:
            self.assertIn(name, self.reference, "README: no '### %s' in %s" % (name, REFERENCE))

    def test_every_flag_variable_and_default_is_documented(self):
        for name, text in self.helps.items():
            opts = help_options(text)
            self.assertIn("--help", opts, name)
            rows = table_rows(self.reference.get(name, ""))
            for flag, (env, default) in opts.items():
                with self.subTest(command=name, flag=flag):
                    self.assertTrue(flag in rows, "README: %s %s is not documented" % (name, flag))
                    self.assertEqual(rows[flag][0], env, "README: %s %s variable" % (name, flag))
                    if default:
                        self.assertEqual(rows[flag][1], default,
                                         "README: %s %s default" % (name, flag))

    def test_no_documented_flag_is_stale(self):
        for title, body in self.reference.items():
            rows = table_rows(body)
            if not rows:
                continue
            self.assertIn(title, self.progs, "README documents '%s', which is not a command"
                          % title)
            opts = help_options(self.helps[title])
            for flag in rows:
                self.assertTrue(flag in opts, "README: %s %s is not in --help" % (title, flag))


class VariablesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.known = set()
        for argv in programs().values():
            cls.known.update(v for v, _ in help_options(run_help(argv)).values() if v)
        # The workers read credentials per registry role under these prefixes (creds_lookup);
        # creds.h documents the suffixes.
        with open(ENGINE_C) as f:
            engine = f.read()
        call = engine[engine.index("creds_lookup("):]
        prefixes = re.findall(r'"(HUBSYNC_[A-Z]+)"', call[:200])
        with open(CREDS_H) as f:
            creds_doc = f.read()
        suffixes = [s for s in ("_USERNAME", "_PASSWORD", "_PASSWORD_FILE")
                    if "<PREFIX>" + s in creds_doc]
        cls.credentials = {p + s for p in prefixes for s in suffixes}
        with open(README) as f:
            cls.readme = f.read()

    def test_credential_variables_are_found_and_documented(self):
        self.assertEqual(len(self.credentials), 6, self.credentials)
        creds = subsections(section(self.readme, REFERENCE))["Credentials (environment only)"]
        for v in self.credentials:
            self.assertIn("`%s`" % v, creds)

    def test_every_variable_in_compose_and_readme_exists(self):
        files = sorted(glob.glob(os.path.join(ROOT, "compose", "*")) +
                       glob.glob(os.path.join(ROOT, "compose", ".env.example")) + [README])
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
        with open(README) as f:
            cls.recipes = section(f.read(), RECIPES)
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
                            "README names %s, which common/keys.h does not list" % key)

    def test_recipes_run_against_a_real_sync(self):
        rig = Rig("hello-world").start()
        self.addCleanup(rig.stop)
        rig.worker("--id", "recipe-worker", log="worker.log")
        p = subprocess.run(rig.sync_command("--json"), capture_output=True, text=True,
                           timeout=180)
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        cli = rig.redis.cli_raw
        source = [k for k in cli("--scan", "--pattern", "hubsync:budget:*").split()
                  if not k.endswith(":inflight")][0][len("hubsync:budget:"):]
        values = {
            "<target>": rig.target_host,
            "<source>": source,
            "<run>": cli("ZREVRANGE", "hubsync:runs", "0", "0").strip(),
            "<worker>": "recipe-worker",
            "<entry>": "0-1",
            "<digest>": cli("SRANDMEMBER", "hubsync:present:%s:library/hello-world"
                            % rig.target_host).strip(),
        }
        cmds = self.commands()
        self.assertGreater(len(cmds), 25)
        outputs = {}
        for argv in cmds:
            self.assertEqual(argv[0], "redis-cli")
            args = [re.sub(r"<[a-z]+>", lambda m: values[m.group(0)], a) for a in argv[1:]]
            out = subprocess.run(["redis-cli", "-p", str(rig.redis.port)] + args,
                                 capture_output=True, text=True, timeout=30)
            text = out.stdout + out.stderr
            self.assertEqual(out.returncode, 0, (args, text))
            self.assertNotRegex(text, r"^(\(error\) )?(ERR|WRONGTYPE)", (args, text))
            outputs[" ".join(argv[1:3])] = text
        self.assertIn("state", outputs["HGETALL hubsync:run:<run>"])
        self.assertIn("remaining", outputs["HGETALL hubsync:budget:<source>"])
        self.assertIn('"pid"', outputs["GET hubsync:worker:<worker>"])
        self.assertRegex(outputs["GET hubsync:synced-commit"], r"^[0-9a-f]{40}\n")
        self.assertEqual(outputs["SISMEMBER hubsync:present:<target>:library/alpine"].strip(),
                         "0")
        self.assertEqual(cli("EXISTS", "hubsync:ctl:paused").strip(), "0")


if __name__ == "__main__":
    unittest.main()
