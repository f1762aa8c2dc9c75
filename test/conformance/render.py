#!/usr/bin/env python3
"""Turn critest runs into result files and docs/conformance.md.

    render.py summary OUT_DIR        one run's counts, per-spec table and failures (stdout)
    render.py record ENGINE OUT_DIR  store a full run as results/ENGINE.json
    render.py doc [--check]          write docs/conformance.md from results/*.json
    render.py commit                 the HCR commit a run starting now tests

engines/<ENGINE>.md, when present, is shown above the engine's table.

Every spec that does not pass needs a reason. Reasons come from the rule
files engines/common.tsv and engines/<ENGINE>.tsv, one rule per line:

    skip<TAB>spec regex<TAB>reason   run.sh passes the regex to -ginkgo.skip
    fail<TAB>spec regex<TAB>reason   an expected failure and why

A failed or skipped spec no rule explains is shown with critest's own message
and counted as unexplained; `doc --check` then exits 1.
"""
import datetime
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(HERE, "results")
DOC = os.path.join(ROOT, "docs", "conformance.md")
ENGINES = ["docker", "hyper", "unikernel"]
SUITE_NODES = ("[BeforeSuite]", "[AfterSuite]", "[SynchronizedBeforeSuite]",
               "[SynchronizedAfterSuite]", "[ReportBeforeSuite]", "[ReportAfterSuite]")

ENGINE_BLURB = {
    "docker": "namespaces + cgroups through dockerd and runc",
    "hyper": "one QEMU microVM per pod, containers run by the guest agent",
    "unikernel": "one unikernel VM per container",
}


# critest area -> the CI tests that check the same behaviour ("cri-docker" and
# "areas" are the two test files named in the doc).
CI_COVERAGE = [
    ("Runtime info", "cri-docker: answers Version and Status"),
    ("PodSandbox: run, stop, remove", "cri-docker: the whole pod and container lifecycle; the idempotency rules"),
    ("PodSandbox: sysctls", "cri-docker: DNS config, hostname and sysctls; areas: safe and unsafe namespaced sysctls"),
    ("Container: create, start, stop, remove, stats",
     "cri-docker: the whole lifecycle; idempotency rules; resources and stats; OOMKilled"),
    ("Container: execSync, execSync with timeout", "cri-docker: ExecSync with exit codes, stderr and timeouts"),
    ("Container: volumes", "cri-docker: env, args, working dir, user and mounts"),
    ("Container: log, reopen log", "cri-docker: exit codes, reasons and CRI logs; reopens the log after rotation"),
    ("Image Manager", "cri-docker: the image service; areas: every reference kind and a digest pull, "
     "one image under three tags and three images, image user as uid or name"),
    ("Multiple Containers", "areas: exec in each, a log per container, the shared pod network"),
    ("Networking: DNS, hostname", "cri-docker: DNS config, hostname and sysctls; every pod an IP, pods reach each other"),
    ("Networking: port mapping", "areas: host port on loopback; container port on the pod IP"),
    ("Security Context: namespaces",
     "areas: hostNetwork, hostPID and hostIPC true/false; PodPID and ContainerPID"),
    ("Security Context: users and groups",
     "areas: RunAsUser, RunAsGroup, RunAsUserName, SupplementalGroups, groups from the image's /etc/group, "
     "RunAsGroup without RunAsUser refused"),
    ("Security Context: capabilities, privileged, read-only rootfs",
     "cri-docker: applies the security context; areas: adding ALL capabilities, dropping ALL"),
    ("Security Context: MaskedPaths, ReadonlyPaths, NoNewPrivs, seccomp",
     "areas: masked and read-only paths; no_new_privs; RuntimeDefault, Unconfined and Localhost seccomp, "
     "a profile path without localhost/ refused"),
    ("Container Mount Propagation", "areas: rprivate, rslave and rshared with host mounts in both directions"),
    ("Streaming", "areas: exec without and with a terminal (stdin, resize) over SPDY, exec over WebSocket, "
     "attach, port-forward in a pod and in a host-network pod"),
]


def spec_name(raw):
    """junit testcase name -> the spec text (no ginkgo node type, no [k8s.io] tag)."""
    name = raw
    for prefix in ("[It] ", "[k8s.io] "):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name


def first_line(text, limit=320):
    """The first meaningful line of a failure, shortened so that its cause survives.

    gRPC errors repeat their context ("start container ID: start container ID:
    …") and carry 64-digit IDs; the cause is at the end, so a long message keeps
    its head and its tail.
    """
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("[FAILED] in") or line.startswith("[PANICKED]"):
            continue
        line = re.sub(r"\s+", " ", line)
        line = re.sub(r"\b([0-9a-f]{12})[0-9a-f]{52}\b", r"\1…", line)
        line = re.sub(r"(\b[^:]{4,}: )\1+", r"\1", line)
        if len(line) > limit:
            line = line[: limit // 3] + " … " + line[-(limit - limit // 3 - 3):]
        return line
    return ""


def parse_junit(path):
    """Specs of one junit report: name, status (passed/failed/skipped), seconds, message."""
    specs = []
    for case in ET.parse(path).getroot().iter("testcase"):
        raw = case.get("name", "")
        if raw.startswith(SUITE_NODES):
            # A suite-level node that failed fails the run; show it as a spec.
            if case.find("failure") is None and case.find("error") is None:
                continue
        status = case.get("status") or ""
        node = case.find("failure")
        if node is None:
            node = case.find("error")
        if not status:
            status = "failed" if node is not None else "skipped" if case.find("skipped") is not None else "passed"
        if status in ("panicked", "interrupted", "timedout", "aborted"):
            status = "failed"
        if status == "pending":
            status = "skipped"
        message = ""
        if status == "failed" and node is not None:
            message = first_line(node.get("message") or node.text)
        elif status == "skipped":
            skipped = case.find("skipped")
            message = first_line(skipped.get("message") if skipped is not None else "")
        specs.append({
            "name": spec_name(raw),
            "status": status,
            "seconds": round(float(case.get("time") or 0), 1),
            "message": message,
        })
    specs.sort(key=lambda s: s["name"])
    return specs


def counts(specs):
    c = {"passed": 0, "failed": 0, "skipped": 0}
    for s in specs:
        c[s["status"]] = c.get(s["status"], 0) + 1
    c["registered"] = len(specs)
    c["ran"] = c["passed"] + c["failed"]
    return c


def read_text(path, default=""):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return default


def load_rules(engine):
    """(kind, compiled regex, regex text, reason) for an engine, its own rules first."""
    rules = []
    for name in (f"{engine}.tsv", "common.tsv"):
        path = os.path.join(HERE, "engines", name)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if not line.strip() or line.startswith("#"):
                    continue
                parts = line.split("\t")
                if len(parts) != 3 or parts[0] not in ("skip", "fail"):
                    sys.exit(f"{path}:{n}: expected 'skip|fail<TAB>regex<TAB>reason'")
                rules.append((parts[0], re.compile(parts[1]), parts[1], parts[2]))
    return rules


USED_RULES = set()


def explain(spec, rules):
    """The reason for a non-passing spec, or None when no rule covers it."""
    kind = "skip" if spec["status"] == "skipped" else "fail"
    for k, rx, text, reason in rules:
        if k == kind and rx.search(spec["name"]):
            USED_RULES.add((k, text))
            return reason
    return None


def cmd_summary(out):
    junit = os.path.join(out, "junit.xml")
    lines = []
    if not os.path.exists(junit):
        lines.append(f"no junit report; see {os.path.join(out, 'critest.log')}")
        specs = []
    else:
        specs = parse_junit(junit)
        c = counts(specs)
        lines.append(f"specs registered: {c['registered']}  ran: {c['ran']}  passed: {c['passed']}  "
                     f"failed: {c['failed']}  skipped: {c['skipped']}")
    lines.append(f"critest wall time: {read_text(os.path.join(out, 'seconds'), '?')} s")
    leaks = read_text(os.path.join(out, "leaks.txt"))
    lines.append("leaks: none" if not leaks else "LEAKS:\n  " + leaks.replace("\n", "\n  "))
    lines.append("")
    for s in sorted(specs, key=lambda s: (s["status"], s["name"])):
        lines.append(f"{s['status'].upper():8} {s['name']}  ({s['seconds']}s)")
    failed = [s for s in specs if s["status"] == "failed"]
    if failed:
        lines.append("")
        lines.append("Failures:")
        for s in failed:
            lines.append(f"- {s['name']}\n    {s['message']}")
    print("\n".join(lines))


def git(*args):
    try:
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def hcr_commit():
    """HEAD, marked when the packages differ from it (the run then tested more than the commit)."""
    commit = git("rev-parse", "--short=12", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no", "--", "packages"):
        commit += " (+ uncommitted changes in packages/)"
    return commit


def cmd_record(engine, out):
    specs = parse_junit(os.path.join(out, "junit.xml"))
    command = read_text(os.path.join(out, "command.txt"))
    # Private paths of the run say nothing to a reader of the results.
    command = re.sub(r"/tmp/hcr-critest-[\w.-]+/", "<run dir>/", command)
    command = re.sub(r"=\S*/(junit\.xml|report\.json)", r"=<out>/\1", command)
    command = command.replace(ROOT + "/", "")
    if command.startswith(os.environ.get("CRITEST", "\0") + " "):
        command = "$CRITEST" + command[len(os.environ["CRITEST"]):]
    critest = os.environ.get("CRITEST", "critest")
    version = subprocess.run([critest, "--version"], capture_output=True, text=True).stdout.strip()
    version = version.splitlines()[0] if version else ""
    # run.sh notes the commit when the run starts; the tree may have moved on since.
    commit = read_text(os.path.join(out, "hcr-commit")) or hcr_commit()
    suite = ET.parse(os.path.join(out, "junit.xml")).getroot().find("testsuite")
    started = suite.get("timestamp", "") if suite is not None else ""
    try:
        date = datetime.datetime.fromisoformat(started).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    leaks = [line for line in read_text(os.path.join(out, "leaks.txt")).splitlines() if line]
    record = {
        "engine": engine,
        "date": f"{date} {time.strftime('%Z')}",
        "critest": f"cri-tools v1.26.1 ({version or 'no version output'})",
        "hcr_commit": commit,
        "kernel": os.uname().release,
        "command": command,
        "wall_seconds": int(read_text(os.path.join(out, "seconds"), "0") or 0),
        "counts": counts(specs),
        "leaks": leaks,
        "specs": specs,
    }
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{engine}.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, ensure_ascii=False)
        f.write("\n")
    print(f"recorded {path}")


def md_escape(text):
    return text.replace("|", "\\|").replace("\n", " ")


def area_of(name):
    """The critest area (top-level Describe) a spec belongs to."""
    for area in ("Container Mount Propagation", "Container benchmark", "Container", "Image Manager",
                 "Image benchmark", "Multiple Containers", "Networking", "PodSandbox benchmark",
                 "PodSandbox", "Runtime info", "Security Context", "Streaming"):
        if name.startswith(area):
            return area
    return name.split(" ", 1)[0]


def cmd_doc(check):
    records = {}
    for engine in ENGINES:
        path = os.path.join(RESULTS, f"{engine}.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                records[engine] = json.load(f)
    unexplained = []
    out = []
    w = out.append
    w("<!-- Generated by test/conformance/render.py from test/conformance/results/*.json and")
    w("     test/conformance/engines/*.tsv. Do not edit; rerun `bash test/conformance/run.sh all`")
    w("     (or `python3 test/conformance/render.py doc` after editing a rule). -->")
    w("")
    w("# CRI conformance (critest)")
    w("")
    w("HCR is checked with the Kubernetes CRI validation suite, `critest` from")
    w("[cri-tools](https://github.com/kubernetes-sigs/cri-tools) **v1.26.1** (the newest release")
    w("Debian 12's Go 1.19 builds), on each engine as the default engine of a fresh HCR instance.")
    w("The suite registers 85 specs on this host: its AppArmor and SELinux specs are only defined")
    w("when the host has that security module, and this host has neither. critest skips its 5")
    w("benchmark specs itself in validation mode.")
    w("")
    w("## Summary")
    w("")
    w("| engine | isolation | passed | failed | skipped | registered | pass rate of specs run | leaks | critest time | run on |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for engine, rec in records.items():
        c = rec["counts"]
        rate = f"{100 * c['passed'] / c['ran']:.0f} % ({c['passed']}/{c['ran']})" if c["ran"] else "–"
        leaks = "none" if not rec["leaks"] else f"**{len(rec['leaks'])}**"
        w(f"| `{engine}` | {ENGINE_BLURB.get(engine, '')} | {c['passed']} | {c['failed']} | {c['skipped']} | "
          f"{c['registered']} | {rate} | {leaks} | {rec['wall_seconds']} s | {rec['date']}, HCR {rec['hcr_commit']} |")
    missing = [e for e in ENGINES if e not in records]
    if missing:
        w("")
        w(f"Not run yet: {', '.join('`' + e + '`' for e in missing)}.")
    w("")
    w("For reference, containerd 1.6.20 with runc, run with the same fixtures on this kind of")
    w("machine, passes 79 of the 80 specs it runs (its one failure is the digest-pinned pull).")
    w("")

    w("## How to run")
    w("")
    w("```")
    w("bash scripts/setup.sh                                  # dockerd, registry, CNI plugins, test images")
    w("CRITEST=/path/to/critest bash test/conformance/run.sh all   # or: docker | hyper | unikernel")
    w("```")
    w("")
    w("`critest` is not part of this repository: build cri-tools v1.26.1 from its sources")
    w("(`go build ./cmd/critest`) outside the tree and point `CRITEST` at the binary.")
    w("`run.sh` builds the fixture images (`test/conformance/fixtures.sh`), writes an HCR config")
    w("with that engine as the default, private state/runtime/image directories, a private CNI")
    w("bridge network and registry entries that send `gcr.io`, `registry.k8s.io` and `docker.io`")
    w("to the local registry only (`mirrors` and `server` both `http://127.0.0.1:5000`, so")
    w("nothing is ever fetched upstream), starts `hcr serve`, runs critest serially (seed 1) with")
    w("`test/conformance/engines/<engine>.yaml` as the test-images file and the engine's skip")
    w("rules, stops HCR and fails the run if anything is left behind: pods, Docker containers,")
    w("network namespaces, mounts, veths, CNI addresses or processes of the instance. A full run")
    w("is stored in `test/conformance/results/<engine>.json` and this page is re-rendered; extra")
    w("critest flags (`run.sh docker -- -ginkgo.focus=Streaming`) make a run that is not recorded.")
    w("Host ports 12000–12003 must be free.")
    w("")
    w("### Fixture images")
    w("")
    w("critest hard-codes its image names. `fixtures.sh` builds stand-ins from the repository's")
    w("`hcr-test/busybox` image and pushes them under the upstream paths without the registry")
    w("host (`test/conformance/fixtures/images.list`):")
    w("")
    w("| upstream reference | stand-in |")
    w("|---|---|")
    w("| `registry.k8s.io/e2e-test-images/busybox:1.29-2` (default image) | Debian's dynamic busybox, every applet linked into `$PATH` (not a standalone shell, so MaskedPaths behaves), plus script versions of `pgrep` and `ipcs` |")
    w("| `registry.k8s.io/e2e-test-images/nginx:1.14-2`, `gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64` | a small static `nginx` (`fixtures/src/nginx.c`): process name `nginx`, `/proc/<pid>/cmdline` starting `nginx: master process`, pid in `/var/run/nginx.pid`, busybox httpd serving on :80 / :12003 |")
    w("| `registry.k8s.io/e2e-test-images/httpd:2.4.39-4` | busybox httpd on :80 that logs Apache's `httpd -D FOREGROUND` line |")
    w("| `registry.k8s.io/e2e-test-images/nonewprivs:1.3` | a setuid-root program printing `Effective uid: N` |")
    w("| `gcr.io/k8s-staging-cri-tools/test-image-*` | busybox plus a marker file (distinct image IDs), one image under three tags, and `USER` 1002 / www-data / 1003:1004 / www-data:1004 / 1000 with a supplementary group 50000 |")
    w("")

    w("## The CI suite")
    w("")
    w("critest is not run in CI (its binary is not part of the repository). Two integration test")
    w("files check the same behaviours through the real CRI socket on the docker engine, with real")
    w("SPDY and WebSocket streaming clients, on every submission:")
    w("`packages/cri/test/cri-docker.integration.test.ts` and")
    w("`packages/cri/test/conformance-areas.integration.test.ts`. Both check after every test that")
    w("the shim left no container, network namespace, mount, veth or CNI address behind.")
    w("")
    w("| critest area | covered by |")
    w("|---|---|")
    for area, tests in CI_COVERAGE:
        w(f"| {area} | {tests} |")
    w("")
    w("Run them with `npx vitest run --project integration packages/cri/test/cri-docker.integration.test.ts")
    w("packages/cri/test/conformance-areas.integration.test.ts`.")
    w("")
    w("## Per-spec results")
    w("")
    w("`pass`, `fail` or `skip`, with the reason for every spec that does not pass. Times are")
    w("critest's, in seconds.")
    for engine, rec in records.items():
        rules = load_rules(engine)
        c = rec["counts"]
        w("")
        w(f"### `{engine}`")
        w("")
        w(f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped of {c['registered']} "
          f"(run {rec['date']}, HCR {rec['hcr_commit']}, kernel {rec['kernel']}, {rec['critest']}).")
        if rec["leaks"]:
            w("")
            w("**Left behind after the run:** " + "; ".join(md_escape(x) for x in rec["leaks"]))
        w("")
        w(f"Reproduce: `CRITEST=/path/to/critest bash test/conformance/run.sh {engine}`, which ran")
        w("")
        w("```")
        w(rec["command"])
        w("```")
        notes = read_text(os.path.join(HERE, "engines", f"{engine}.md"))
        if notes:
            w("")
            w(notes)
        w("")
        w("| area | spec | result | s | reason |")
        w("|---|---|---|---|---|")
        for s in sorted(rec["specs"], key=lambda s: (area_of(s["name"]), s["name"])):
            area = area_of(s["name"])
            name = s["name"][len(area):].strip() if s["name"].startswith(area) else s["name"]
            result = {"passed": "pass", "failed": "**fail**", "skipped": "skip"}[s["status"]]
            reason = ""
            if s["status"] != "passed":
                reason = explain(s, rules)
                if reason is None:
                    if s["status"] == "skipped" and "benchmark" in area:
                        reason = "Benchmark spec: critest skips it in validation mode."
                    else:
                        unexplained.append((engine, s["name"]))
                        reason = "**Not analysed yet.**"
                if s["message"] and s["message"] != "skipped":
                    reason += f" <br>critest: `{md_escape(s['message'])}`"
            w(f"| {area} | {md_escape(name)} | {result} | {s['seconds']} | {md_escape(reason)} |")
    w("")

    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    with open(DOC, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    print(f"wrote {DOC}")
    # A rule no result needs any more (the spec passes now) is stale.
    for engine in records:
        for kind, _rx, text, _reason in load_rules(engine):
            if (kind, text) not in USED_RULES:
                print(f"note: {engine}: rule '{kind} {text}' explains no spec of the recorded runs; remove it if it is stale",
                      file=sys.stderr)
    if unexplained:
        print(f"{len(unexplained)} spec(s) without a reason:", file=sys.stderr)
        for engine, name in unexplained:
            print(f"  {engine}: {name}", file=sys.stderr)
        if check:
            return 1
    return 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "summary":
        cmd_summary(argv[1])
        return 0
    if len(argv) >= 3 and argv[0] == "record":
        cmd_record(argv[1], argv[2])
        return 0
    if argv and argv[0] == "commit":
        print(hcr_commit())
        return 0
    if argv and argv[0] == "doc":
        return cmd_doc("--check" in argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
