"""The dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; no browser download).

Run by crates/gateway/tests/dashboard.rs with: BASE ADMIN_KEY UPSTREAM_KEY SHOTS_DIR PROFILE_DIR.
It prints "STEP <what>" as it goes, and "NEED revoke" when the simulator must revoke the upstream key (the Rust side
answers "OK" on stdin). Any failed expectation raises, and the process exits non-zero with the traceback.
"""
import json
import os
import sys
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE, ADMIN_KEY, UPSTREAM_KEY, SHOTS, PROFILE = sys.argv[1:6]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def step(what):
    print("STEP " + what, flush=True)


def need(action):
    print("NEED " + action, flush=True)
    answer = sys.stdin.readline().strip()
    assert answer == "OK", answer


def send(key, n=1):
    """Sends n messages requests with a client key; returns the statuses."""
    statuses = []
    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 32,
                       "messages": [{"role": "user", "content": "hello from the browser test"}]}).encode()
    for _ in range(n):
        req = urllib.request.Request(BASE + "/v1/messages", data=body, method="POST",
                                     headers={"x-api-key": key, "content-type": "application/json",
                                              "anthropic-version": "2023-06-01"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                statuses.append(r.status)
        except urllib.error.HTTPError as e:
            statuses.append(e.code)
    return statuses


def shot(page, name):
    page.screenshot(path=os.path.join(SHOTS, name + ".png"), full_page=True)


def goto(page, name):
    page.click(f'#nav a[data-page="{name}"]')
    expect(page.locator(f'#nav a[data-page="{name}"]')).to_have_class("active")


def main():
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            PROFILE, executable_path="/usr/bin/chromium", headless=True, args=FLAGS,
            viewport={"width": 1360, "height": 900})
        page = ctx.pages[0] if ctx.pages else ctx.new_page()
        page.set_default_timeout(20000)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text)
                if m.type == "error" and "Failed to load resource" not in m.text else None)

        step("log in")
        page.goto(BASE + "/dashboard")
        expect(page.locator("#login-form")).to_be_visible()
        page.fill("#admin-key", "wrong-key")
        page.click("#login-form button")
        expect(page.locator("#login-error")).to_contain_text("invalid admin key")
        page.fill("#admin-key", ADMIN_KEY)
        page.click("#login-form button")
        expect(page.locator("#app")).to_be_visible()
        storage = page.evaluate("() => JSON.stringify([document.cookie, {...localStorage}, {...sessionStorage}])")
        assert ADMIN_KEY not in storage and ADMIN_KEY not in page.url, storage
        assert "cgw_session" not in storage, "the session cookie is HttpOnly"

        step("add an API-key account")
        goto(page, "accounts")
        form = page.locator("#add-key")
        form.locator('input[name="name"]').fill("work")
        form.locator('input[name="key"]').fill(UPSTREAM_KEY)
        form.locator('button[type="submit"]').click()
        row = page.locator('tr[data-account="work"]')
        expect(row.locator(".state")).to_have_text("ready")
        assert UPSTREAM_KEY not in page.content(), "the upstream key is never shown"

        step("create a client key and read it once")
        goto(page, "keys")
        create = page.locator("#create-key")
        create.locator('input[name="name"]').fill("team-a")
        create.locator('input[name="rpm"]').fill("600")
        create.locator('button[type="submit"]').click()
        secret = page.locator("#new-key-secret")
        expect(secret).to_be_visible()
        client_key = secret.inner_text().strip()
        assert len(client_key) > 20, client_key
        expect(page.locator('tr[data-key="team-a"] .state')).to_have_text("active")
        shot(page, "dashboard-keys")
        page.reload()
        expect(page.locator("#app")).to_be_visible()
        goto(page, "keys")
        expect(page.locator('tr[data-key="team-a"]')).to_be_visible()
        assert client_key not in page.content(), "a key is shown once"

        step("send traffic")
        statuses = send(client_key, 6)
        assert statuses == [200] * 6, statuses

        step("overview")
        goto(page, "overview")
        expect(page.locator('[data-tile="rpm"] .value')).not_to_have_text("0", timeout=15000)
        expect(page.locator('[data-tile="tokens"] .value')).not_to_have_text("–", timeout=15000)
        expect(page.locator('[data-tile="p50"] .value')).not_to_have_text("–")
        shot(page, "dashboard-overview")

        step("the usage chart fills")
        goto(page, "usage")
        expect(page.locator("#usage-chart svg rect").first).to_be_visible(timeout=15000)
        expect(page.locator("#usage-chart")).to_contain_text("Tokens per hour")
        shot(page, "dashboard-usage")

        step("the request log fills")
        goto(page, "requests")
        expect(page.locator("#request-log tbody tr")).to_have_count(6, timeout=15000)
        expect(page.locator("#request-log")).to_contain_text("team-a")
        expect(page.locator("#request-log")).to_contain_text("work")
        shot(page, "dashboard-requests")

        step("the account flips to needs login when upstream revokes its key")
        need("revoke")
        statuses = send(client_key, 2)
        assert all(s >= 400 for s in statuses), statuses
        goto(page, "accounts")
        expect(row.locator(".state")).to_have_text("needs reauth", timeout=20000)
        expect(row.locator(".reason")).to_contain_text("needs login")
        shot(page, "dashboard-accounts")

        step("change a key's limits")
        goto(page, "keys")
        answers = ["1200", "", "", "25"]
        page.on("dialog", lambda d: d.accept(answers.pop(0)) if d.type == "prompt" else None)
        page.locator('tr[data-key="team-a"] button', has_text="Limits").click()
        expect(page.locator("#flash")).to_contain_text("Limits of team-a")
        assert "done" in page.locator("#flash").inner_text(), page.locator("#flash").inner_text()
        expect(page.locator('tr[data-key="team-a"]')).to_contain_text("1200 rpm")
        expect(page.locator('tr[data-key="team-a"]')).to_contain_text("$25")
        assert not answers, answers

        step("revoke the client key and see its requests refused")
        goto(page, "keys")
        page.locator('tr[data-key="team-a"] button.danger').click()
        expect(page.locator("#confirm")).to_be_visible()
        page.click("#confirm-ok")
        expect(page.locator('tr[data-key="team-a"]')).to_have_count(0)
        refused = None
        for _ in range(40):
            refused = send(client_key, 1)[0]
            if refused == 401:
                break
            page.wait_for_timeout(100)
        assert refused == 401, refused

        step("audit log and cluster")
        goto(page, "audit")
        expect(page.locator("main")).to_contain_text("DELETE /admin/keys/{id}")
        expect(page.locator("main")).to_contain_text("POST /admin/accounts")
        shot(page, "dashboard-audit")
        goto(page, "cluster")
        expect(page.locator("main")).to_contain_text("this one")
        assert ADMIN_KEY not in page.content(), "the config is redacted"
        shot(page, "dashboard-cluster")

        step("on a phone")
        page.set_viewport_size({"width": 390, "height": 844})
        goto(page, "accounts")
        expect(row).to_be_visible()
        shot(page, "dashboard-phone")

        step("log out")
        page.click("#logout")
        expect(page.locator("#login-form")).to_be_visible()
        page.reload()
        expect(page.locator("#login-form")).to_be_visible()

        assert not errors, errors
        ctx.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
