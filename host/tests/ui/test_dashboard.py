"""The dashboard in a real browser: headless Chromium (Debian's), driven by Selenium through
Debian's chromedriver, against a real `retryguard serve` over real RQ failures.

The module starts everything it uses and stops it at the end:

- a throwaway redis-server on a free port (never 6379, no persistence);
- failed jobs: `retryguard demo`, and jobs that fail for real in a real `rq worker --burst`
  (three connection refusals of one cause, a job that fails once then succeeds, and a job
  whose message and traceback carry a <script>);
- `retryguard serve` with three tokens (admin, operate, read) and an audit directory;
- Chromium, 1280 px wide.

Run it with scripts/ui-test.sh (which installs Chromium, chromedriver and Selenium), or
directly: `.venv-test/bin/python -m unittest host/tests/ui/test_dashboard.py -v` from the
repository root with the release binary built. Screenshots go to $UI_SCREENSHOT_DIR
(default target/ui-screenshots/).
"""

import ctypes
import http.server
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import json
import unittest
import urllib.error
import urllib.parse
import urllib.request

import redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN = os.path.join(ROOT, "target", "release", "retryguard")
VENV_BIN = os.path.dirname(sys.executable)
SHOTS = os.environ.get("UI_SCREENSHOT_DIR", os.path.join(ROOT, "target", "ui-screenshots"))
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", shutil.which("chromedriver") or "/usr/bin/chromedriver")
WAIT = 30


def die_with_parent():
    """Run in each child before exec: the kernel stops it when this test process dies, however
    it dies (Linux PR_SET_PDEATHSIG), so no redis-server or serve outlives a killed run."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port():
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 6379:
            return port


def wait_for(what, check, timeout=WAIT, every=0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - keep polling, report the last error
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class World:
    """Everything the tests run against; built once for the module."""

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="retryguard-ui.")
        self.procs = []
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.spawn(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", self.tmp,
             "--save", "", "--appendonly", "no", "--logfile", os.path.join(self.tmp, "redis.log")]
        )
        self.r = redis.Redis.from_url(self.redis_url)
        wait_for("redis-server", self.r.ping)
        self.seed()
        self.tokens = {role: "rg_" + secrets.token_hex(32) for role in ("admin", "operate", "read")}
        entries = []
        for role, token in self.tokens.items():
            digest = subprocess.run([BIN, "auth", "hash-token"], input=token.encode(), capture_output=True,
                                    check=True).stdout.decode().strip()
            entries.append(f"ui-{role}:{role}:{digest}")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RETRYGUARD_")}
        config = os.path.join(self.tmp, "retryguard.toml")
        with open(config, "w") as f:
            f.write("# written by host/tests/ui/test_dashboard.py\n")
        env.update({
            "RETRYGUARD_CONFIG": config,
            "RETRYGUARD_REDIS_URL": self.redis_url,
            "RETRYGUARD_LISTEN": f"127.0.0.1:{self.port}",
            "RETRYGUARD_AUDIT_DIR": os.path.join(self.tmp, "audit"),
            "RETRYGUARD_POLICY_CACHE_DIR": os.path.join(self.tmp, "policy-cache"),
            "RETRYGUARD_AUDIT_FLUSH_INTERVAL_MS": "200",
            "RETRYGUARD_AUTH_TOKENS": ",".join(entries),
            # Jobs that failed a second ago may be retried (the default waits 60 s).
            "RETRYGUARD_RETRY_COOLDOWN_SECONDS": "1",
            "RETRYGUARD_LOG": os.environ.get("RETRYGUARD_LOG_FOR_TESTS", "warn"),
        })
        self.serve_log = open(os.path.join(self.tmp, "serve.log"), "w")
        self.spawn([BIN, "serve"], env=env, stdout=self.serve_log, stderr=subprocess.STDOUT)
        wait_for("retryguard serve", lambda: urllib.request.urlopen(self.base + "/readyz").status == 200)
        self.evil_port = free_port()
        self.evil = http.server.ThreadingHTTPServer(("127.0.0.1", self.evil_port), EvilPage)
        threading.Thread(target=self.evil.serve_forever, daemon=True).start()

    def spawn(self, argv, **kw):
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(argv, preexec_fn=die_with_parent, **kw)
        self.procs.append(p)
        return p

    def seed(self):
        subprocess.run([BIN, "demo", "--redis-url", self.redis_url, "--queue", "demo", "--count-per-family", "2",
                        "--yes"], check=True, stdout=subprocess.DEVNULL)
        from rq import Queue

        q = Queue("payments", connection=self.r)
        self.cause_jobs = [q.enqueue("jobs.network_error").id for _ in range(3)]
        self.once_job = q.enqueue("jobs.fail_once", "ui:once").id
        self.hostile_job = q.enqueue("ui_jobs.hostile_message").id
        self.run_worker()

    def run_worker(self):
        env = dict(os.environ, RQ_TEST_REDIS_URL=self.redis_url,
                   PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "host", "tests", "rq"),
                                               os.path.join(ROOT, "host", "tests", "ui")]))
        subprocess.run([os.path.join(VENV_BIN, "rq"), "worker", "--burst", "--url", self.redis_url,
                        "--logging_level", "CRITICAL", "payments"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        self.evil.shutdown()
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.serve_log.close()
        if os.environ.get("UI_KEEP_LOGS"):
            print(f"logs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def failed(self, queue="payments"):
        return set(m.decode() for m in self.r.zrange(f"rq:failed:{queue}", 0, -1))


class EvilPage(http.server.BaseHTTPRequestHandler):
    """Another origin (another port of 127.0.0.1: the same site, so a SameSite=Strict cookie
    is still sent) whose page posts a retry to the dashboard as soon as it loads."""

    target = ""

    def do_GET(self):  # noqa: N802 - http.server's name
        body = (
            "<!doctype html><form id=f method=post action='%s'>"
            "<input name=action value=retry><input name=csrf value=guess></form>"
            "<script>document.getElementById('f').submit()</script>" % EvilPage.target
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


W = World()


def setUpModule():  # noqa: N802 - unittest's name
    W.start()
    os.makedirs(SHOTS, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    global DRIVER
    service = Service(executable_path=CHROMEDRIVER, popen_kw={"preexec_fn": die_with_parent})
    DRIVER = webdriver.Chrome(service=service, options=opts)
    DRIVER.set_page_load_timeout(WAIT)


def tearDownModule():  # noqa: N802
    try:
        DRIVER.quit()
    finally:
        W.stop()


def shot(name, dark=False):
    """A full-page screenshot at 1280 px (and the dark theme when asked)."""
    d = DRIVER
    if dark:
        d.execute_cdp_cmd("Emulation.setEmulatedMedia",
                          {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(1280, min(max(height, 700), 3000))
    d.save_screenshot(os.path.join(SHOTS, name + ".png"))
    d.set_window_size(1280, 1000)
    if dark:
        d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def login(role):
    d = DRIVER
    d.delete_all_cookies()
    d.get(W.base + "/ui/")
    WebDriverWait(d, WAIT).until(EC.url_contains("/ui/login"))
    d.find_element(By.ID, "token").send_keys(W.tokens[role])
    d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(d, WAIT).until(EC.presence_of_element_located((By.ID, "failed-total")))


def cookie_header():
    return "; ".join(f"{c['name']}={c['value']}" for c in DRIVER.get_cookies())


def csrf_of_page():
    return DRIVER.find_element(By.CSS_SELECTOR, "form[action='/ui/logout'] input[name=csrf]").get_attribute("value")


def post(path, fields, headers):
    req = urllib.request.Request(W.base + path, data=urllib.parse.urlencode(fields).encode(), method="POST",
                                 headers={"content-type": "application/x-www-form-urlencoded", **headers})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def group_of(job_type):
    """The fingerprint of the index's group of `job_type` (once the reconciler has it)."""
    def find():
        for fp in W.r.zrange("retryguard:triage:v1:groups", 0, -1):
            fp = fp.decode()
            if W.r.hget(f"retryguard:triage:v1:group:{fp}", "job_type") == job_type.encode():
                return fp
        return None
    return wait_for(f"the group of {job_type}", find)


class Dashboard(unittest.TestCase):
    """In order: each test leaves the state the next one starts from."""

    def test_01_login_and_groups(self):
        d = DRIVER
        d.get(W.base + "/ui/groups")
        self.assertIn("/ui/login", d.current_url, "no session: the login page")
        d.find_element(By.ID, "token").send_keys("rg_" + "0" * 64)
        d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        self.assertIn("not valid", d.find_element(By.ID, "login-error").text)
        login("admin")
        total = int(d.find_element(By.ID, "failed-total").text.replace(",", ""))
        self.assertGreaterEqual(total, 20, "demo jobs and real failures are counted")
        self.assertIn("ui-admin", d.find_element(By.CLASS_NAME, "who").text)
        group_of("jobs.network_error")
        d.get(W.base + "/ui/groups?q=network_error")
        table = d.find_element(By.ID, "groups-table").text
        self.assertIn("jobs.network_error", table)
        self.assertIn("Network error", table)
        self.assertIn("q=network_error", d.current_url, "filters live in the URL")

    def test_02_group_and_traceback(self):
        d = DRIVER
        fp = group_of("jobs.network_error")
        d.get(W.base + "/ui/groups")
        d.find_element(By.CSS_SELECTOR, f"a.group-link[href='/ui/groups/{fp}']").click()
        tb = d.find_element(By.ID, "traceback").text
        self.assertIn("Traceback (most recent call last)", tb)
        self.assertIn("ConnectionRefusedError", tb)
        self.assertEqual(d.find_element(By.ID, "group-count").text, "3")
        self.assertIn("retry now", d.find_element(By.ID, "decision-tally").text)
        shot("group")

    def test_03_dry_run_then_retry_with_progress(self):
        d = DRIVER
        fp = group_of("jobs.network_error")
        d.get(W.base + f"/ui/groups/{fp}")
        d.find_element(By.ID, "preview-button").click()
        WebDriverWait(d, WAIT).until(EC.presence_of_element_located((By.ID, "preview-count")))
        self.assertEqual(d.find_element(By.ID, "preview-count").text, "3")
        rows = d.find_element(By.ID, "audit-table").text
        self.assertEqual(rows.count("dry run"), 3, "each job's dry-run record, labelled")
        self.assertEqual(W.failed() & set(W.cause_jobs), set(W.cause_jobs), "a dry run changes nothing")
        button = d.find_element(By.ID, "confirm-button")
        self.assertEqual(button.text, "Retry 3 jobs", "the confirmation names the count")
        button.click()
        alert = WebDriverWait(d, 5).until(EC.alert_is_present())
        self.assertIn("Retry 3 jobs", alert.text)
        alert.accept()
        WebDriverWait(d, WAIT).until(EC.url_contains("/ui/operations/"))
        WebDriverWait(d, WAIT).until(EC.text_to_be_present_in_element((By.ID, "op-state"), "finished"))
        counts = d.find_element(By.ID, "op-counts").text
        self.assertIn("retried 3", counts)
        self.assertEqual(d.find_element(By.ID, "op-processed").text, "3")
        self.assertFalse(W.failed() & set(W.cause_jobs), "the three left the failed registry")
        queued = set(m.decode() for m in W.r.lrange("rq:queue:payments", 0, -1))
        self.assertEqual(queued & set(W.cause_jobs), set(W.cause_jobs), "and are queued once each")
        self.assertEqual(W.r.llen("rq:queue:payments"), 3)

    def test_04_job_retry_and_its_audit_timeline(self):
        d = DRIVER
        job = W.once_job
        d.get(W.base + f"/ui/jobs/{job}")
        self.assertIn("ConnectionRefusedError", d.find_element(By.ID, "traceback").text)
        self.assertIn("hidden", d.find_element(By.ID, "job-args-hidden").text)
        form = d.find_element(By.ID, "job-actions")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(d, WAIT).until(EC.presence_of_element_located((By.ID, "confirm-button"))).click()
        WebDriverWait(d, 5).until(EC.alert_is_present()).accept()
        WebDriverWait(d, WAIT).until(EC.presence_of_element_located((By.ID, "result")))
        self.assertIn("retried", d.find_element(By.ID, "result").text)
        # The job runs again in a real worker and succeeds this time; the outcome tracker
        # records it.
        W.run_worker()
        d.find_element(By.ID, "audit-link").click()

        def timeline():
            d.refresh()
            return "succeeded" in d.find_element(By.ID, "audit-table").text
        wait_for("the succeeded outcome in the timeline", timeline, timeout=60, every=1)
        text = d.find_element(By.ID, "audit-table").text
        self.assertIn("retried", text)
        self.assertIn("dry run", text, "the preview's dry run is in the timeline, labelled")
        self.assertIn("ui-admin", text, "the actor is the token's name")
        # The audit page filters dry runs in the query itself.
        d.get(W.base + f"/ui/audit?job_id={job}&dry_run=true")
        rows = d.find_elements(By.CSS_SELECTOR, "#audit-table tbody tr")
        self.assertGreaterEqual(len(rows), 1)
        self.assertTrue(all("dry run" in r.text for r in rows), [r.text for r in rows])
        d.get(W.base + f"/ui/audit?job_id={job}&dry_run=false")
        text = d.find_element(By.ID, "audit-table").text
        self.assertNotIn("dry run", text)
        self.assertIn("succeeded", text)

    def test_05_bind_a_policy_and_roll_it_back(self):
        d = DRIVER
        d.get(W.base + "/ui/policies")
        form = d.find_element(By.ID, "bind-form")
        form.find_element(By.NAME, "pattern").send_keys("jobs.*")
        form.find_element(By.NAME, "params").send_keys("max_attempts=5")
        d.find_element(By.ID, "bind-button").click()
        WebDriverWait(d, 5).until(EC.alert_is_present()).accept()
        WebDriverWait(d, WAIT).until(EC.presence_of_element_located((By.ID, "done")))
        table = d.find_element(By.ID, "bindings-table").text
        self.assertIn("jobs.*", table)
        self.assertIn('"max_attempts":"5"', table)
        row = d.find_element(By.XPATH, "//table[@id='bindings-table']//tr[td/code[text()='jobs.*']]")
        row.find_element(By.CSS_SELECTOR, "form[action='/ui/policies/rollback'] button").click()
        WebDriverWait(d, 5).until(EC.alert_is_present()).accept()
        WebDriverWait(d, WAIT).until(EC.text_to_be_present_in_element((By.ID, "done"), "Rolled back"))
        patterns = [c.text for c in d.find_elements(By.CSS_SELECTOR, "#bindings-table code.pattern")]
        self.assertNotIn("jobs.*", patterns, "the binding is gone again")

    def test_06_script_in_a_traceback_is_text(self):
        d = DRIVER
        d.get(W.base + f"/ui/jobs/{W.hostile_job}")
        self.assertIn("<script>window.__pwned", d.find_element(By.ID, "traceback").text)
        self.assertIsNone(d.execute_script("return window.__pwned"), "nothing from Redis ran")
        self.assertNotEqual(d.title, "pwned")
        shot("job-hostile")
        fp = group_of("ui_jobs.hostile_message")
        d.get(W.base + f"/ui/groups/{fp}")
        self.assertIn("<script>", d.find_element(By.ID, "traceback").text)
        self.assertIsNone(d.execute_script("return window.__pwned"))

    def test_07_screenshots_after_the_retries(self):
        d = DRIVER
        # The retried jobs ran again in test 04's worker and failed again: back in the failed
        # registry, with a timeline of dry run, retry and outcome.
        job = W.cause_jobs[0]
        wait_for("the job back in the failed registry", lambda: job in W.failed())

        def outcome():
            d.get(W.base + f"/ui/jobs/{job}")
            return "failed_again" in d.find_element(By.ID, "audit-table").text
        wait_for("the failed_again outcome", outcome, timeout=60, every=1)
        self.assertIn("1 retry by retryguard", d.find_element(By.ID, "job-attempts").text)
        shot("job")
        d.get(W.base + "/ui/")
        shot("overview")
        shot("overview-dark", dark=True)

    def test_08_headers(self):
        req = urllib.request.Request(W.base + "/ui/", headers={"cookie": cookie_header()})
        with urllib.request.urlopen(req) as r:
            h = r.headers
            self.assertIn("script-src 'self'", h["content-security-policy"])
            self.assertNotIn("unsafe-inline", h["content-security-policy"])
            self.assertIn("frame-ancestors 'none'", h["content-security-policy"])
            self.assertEqual(h["x-frame-options"], "DENY")
            self.assertEqual(h["referrer-policy"], "same-origin")
            self.assertEqual(h["cache-control"], "no-store")
        cookie = [c for c in DRIVER.get_cookies() if c["name"] == "rg_session"][0]
        self.assertTrue(cookie["httpOnly"])
        self.assertEqual(cookie["sameSite"], "Strict")
        with urllib.request.urlopen(W.base + "/") as r:
            self.assertTrue(r.url.endswith("/ui/login?next=%2Fui%2F"), r.url)

    def test_09_cross_origin_post_with_the_cookie_is_refused(self):
        d = DRIVER
        fp = group_of("ui_jobs.hostile_message")
        before = W.failed()
        EvilPage.target = f"{W.base}/ui/groups/{fp}/run"
        d.get(f"http://127.0.0.1:{W.evil_port}/")
        WebDriverWait(d, WAIT).until(EC.url_contains(f"/ui/groups/{fp}/run"))
        self.assertIn("cross_site", d.page_source)
        status, body = post(f"/ui/groups/{fp}/run", {"action": "retry", "csrf": "x"},
                            {"cookie": cookie_header(), "origin": "http://evil.example"})
        self.assertEqual(status, 403, body)
        # The API takes bearer tokens only: the cookie is no credential there.
        status, _ = post("/api/v1/jobs/failed/retry-all", {}, {"cookie": cookie_header()})
        self.assertEqual(status, 401)
        self.assertEqual(W.failed(), before, "nothing was retried")

    def test_10_read_role_sees_no_buttons_and_is_refused(self):
        d = DRIVER
        login("read")
        fp = group_of("ui_jobs.hostile_message")
        d.get(W.base + f"/ui/groups/{fp}")
        self.assertEqual(d.find_elements(By.ID, "group-actions"), [], "no action for read")
        d.get(W.base + f"/ui/jobs/{W.hostile_job}")
        self.assertEqual(d.find_elements(By.ID, "job-actions"), [])
        d.get(W.base + "/ui/policies")
        self.assertEqual(d.find_elements(By.ID, "bind-form"), [])
        self.assertEqual(d.find_elements(By.CSS_SELECTOR, "form[action='/ui/policies/rollback']"), [])
        before = W.failed()
        # A forged POST with the read session's own (valid) CSRF token, from its own origin.
        csrf = csrf_of_page()
        for path, fields in [(f"/ui/groups/{fp}/run", {"action": "retry", "csrf": csrf}),
                             (f"/ui/jobs/{W.hostile_job}/run", {"action": "delete", "reason": "x", "csrf": csrf}),
                             ("/ui/policies/bind", {"pattern": "*", "policy": "x", "csrf": csrf})]:
            status, body = post(path, fields, {"cookie": cookie_header(), "origin": W.base})
            self.assertEqual(status, 403, f"{path}: {body}")
            self.assertIn("needs", body)
        # An operate session with a wrong CSRF token is refused too.
        login("operate")
        status, body = post(f"/ui/groups/{fp}/run", {"action": "retry", "csrf": "0" * 64},
                            {"cookie": cookie_header(), "origin": W.base})
        self.assertEqual(status, 403, body)
        self.assertIn("CSRF", body)
        self.assertEqual(W.failed(), before)

    def test_10b_an_open_breaker_shows_on_the_overview(self):
        d = DRIVER
        key = "ui_jobs.*|network_error"
        req = urllib.request.Request(
            W.base + "/api/v1/breakers/" + urllib.parse.quote(key, safe="") + "/open",
            data=json.dumps({"reason": "INC-9 gateway down"}).encode(), method="POST",
            headers={"content-type": "application/json", "authorization": "Bearer " + W.tokens["admin"]})
        with urllib.request.urlopen(req) as r:
            self.assertEqual(json.loads(r.read())["state"], "open")
        d.get(W.base + "/ui/")
        card = d.find_element(By.ID, "breakers")
        self.assertIn(key, card.text)
        self.assertIn("opened by hand: INC-9 gateway down", card.text)
        self.assertIn(f"circuit breaker {key} is open", d.find_element(By.ID, "health-warnings").text)
        self.assertIn("parked", d.find_element(By.ID, "auto-retry").text)

    def test_11_logout_ends_the_session(self):
        d = DRIVER
        cookies = cookie_header()
        d.find_element(By.CSS_SELECTOR, "form[action='/ui/logout'] button").click()
        WebDriverWait(d, WAIT).until(EC.url_contains("/ui/login"))
        req = urllib.request.Request(W.base + "/ui/groups", headers={"cookie": cookies})
        with urllib.request.urlopen(req) as r:
            self.assertIn("/ui/login", r.url, "the old cookie no longer opens a page")


if __name__ == "__main__":
    unittest.main(verbosity=2)
