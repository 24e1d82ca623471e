"""The data-access portal in a real browser: Debian's Chromium, headless,
driven by Playwright, with axe-core's accessibility checks on every page.

Run by tests/browser.rs against a running sandbox (the portal's URL and the
officials come from sandbox.json). An APL official finds a service in the
catalog, signs in, looks a resident up through the check page, sees the
minimised answer with a verified receipt and prints the extract; an official
of another authority cannot use that grant; the resident sees the lookup
in their history and cannot reach an official's page. Every page must pass axe-core
with no serious or critical violation. Exits non-zero on the first failure,
saying what failed.

With --screenshots DIR it also saves the main pages as PNG (docs/).
"""

import argparse
import json
import pathlib
import sys

from playwright.sync_api import sync_playwright

AXE = pathlib.Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = {"serious", "critical"}


def fail(message):
    print(f"portal_flow: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


class Run:
    def __init__(self, page, shots):
        self.page = page
        self.shots = shots
        self.checked = []

    def axe(self, name):
        """axe-core on the page as it is now; serious or critical fails."""
        self.page.add_script_tag(path=str(AXE))
        result = self.page.evaluate(
            """async () => {
                const r = await axe.run(document, {
                    runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}
                });
                return r.violations.map(v => ({id: v.id, impact: v.impact,
                    nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
            }"""
        )
        blocking = [v for v in result if v["impact"] in BLOCKING]
        check(not blocking, f"{name}: axe-core finds {json.dumps(blocking)}")
        self.checked.append(name)
        if self.shots:
            self.page.screenshot(path=str(self.shots / f"portal-{name}.png"), full_page=True)

    def goto(self, url, name, status=200):
        response = self.page.goto(url)
        check(response is not None and response.status == status,
              f"{name}: {url} answered {response.status if response else None}, expected {status}")
        self.axe(name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sandbox", required=True, help="the sandbox directory (sandbox.json)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshots", help="save the main pages here as PNG")
    args = parser.parse_args()
    manifest = json.loads((pathlib.Path(args.sandbox) / "sandbox.json").read_text())
    portal = manifest["portal"]["url"]
    officials = manifest["portal"]["officials"]
    cahul = next(o for o in officials if o["participant"] == "apl-cahul" and "administrator" not in o["roles"])
    other = next(o for o in officials if o["participant"] != "apl-cahul")
    shots = pathlib.Path(args.screenshots) if args.screenshots else None
    if shots:
        shots.mkdir(parents=True, exist_ok=True)
    check(AXE.is_file(), f"{AXE} is missing: run `npm ci` in tests/browser (tests/run.sh does)")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=["--no-sandbox"])
        # The sandbox CA is not in the browser's store; axe is injected as a
        # script, which the portal's CSP (rightly) forbids, so the test's
        # context bypasses CSP for the injection only.
        context = browser.new_context(ignore_https_errors=True, bypass_csp=True, locale="ro-RO")
        page = context.new_page()
        run = Run(page, shots)

        # The public catalog: search without diacritics, open a service page.
        run.goto(f"{portal}/catalog", "catalog")
        page.fill("#q", "asigurari")
        page.click("button[type=submit]")
        check("cnas/insurance-record" in page.content(), "search: `asigurari` finds the CNAS service")
        run.axe("catalog-search")
        page.click("a[href='/catalog/services/cnas/insurance-record']")
        check(page.locator("h1").inner_text().strip() != "", "the service page has a heading")
        run.axe("service")
        page.click("a[hreflang=en]")
        check(page.locator("html").get_attribute("lang") == "en", "the switch to English works")
        run.axe("service-en")
        page.click("a[hreflang=ro]")

        # Sign in as an official of Cahul and look a resident up.
        run.goto(f"{portal}/sign-in", "sign-in")
        page.click(f"input[value='{cahul['idnp']}']")
        page.click("button[type=submit]")
        check(page.url.endswith("/account"), f"sign-in leads to the account, not {page.url}")
        run.axe("account")
        page.click("a[href='/lookup']")
        run.axe("lookups")
        question = "/lookup/apl-cahul-residence/asp-rsp/person-by-idnp"
        page.click(f"a[href='{question}']")
        run.axe("question")
        # Purpose and legal basis are chosen from the grant, never typed.
        page.check("input[name=purpose] >> nth=0")
        page.check("input[name=basis] >> nth=0")
        page.fill("#person", "2000000000038")
        page.click("button[type=submit]")
        check(page.locator(".error-summary").count() == 1, "a wrong IDNP is summarised as an error")
        run.axe("question-error")
        page.fill("#person", "2000000000037")
        page.click("button[type=submit]")
        check(page.url.endswith("/lookup/check"), f"the check page comes before any lookup, not {page.url}")
        run.axe("check")
        page.click("button[type=submit]")
        content = page.content()
        check("verificată: semnată de MConnect" in content, "the receipt is verified")
        check("<code>first_name</code>" in content, "the answer shows the grant's fields")
        check("<code>birth_date</code>" not in content, "and nothing the grant does not allow")
        run.axe("result")
        pdf = page.pdf()
        check(len(pdf) > 1000, "the extract prints")

        # Another authority's official cannot use Cahul's grant.
        context.clear_cookies()
        run.goto(f"{portal}/sign-in", "sign-in-again")
        page.click(f"input[value='{other['idnp']}']")
        page.click("button[type=submit]")
        run.goto(f"{portal}{question}", "refused", status=404)

        # The resident looked up sees it in their own history, with the
        # authority, its system and the official's role, never the
        # official's personal number; an official's pages stay closed.
        context.clear_cookies()
        run.goto(f"{portal}/sign-in", "sign-in-resident")
        page.fill("#resident-idnp", "2000000000037")
        page.click("form:has(input[name=kind]) button[type=submit]")
        check(page.url.endswith("/account"), f"a resident's sign-in leads to the account, not {page.url}")
        page.click("a[href='/my-data']")
        content = page.content()
        check("Primăria municipiului Cahul" in content, "the history names the authority")
        check("<code>apl-cahul</code>" in content, "and its system")
        check("un funcționar al autorității" in content, "and the official's role")
        check(cahul["idnp"] not in content, "but not the official's IDNP")
        run.axe("my-data")
        run.goto(f"{portal}/lookup", "resident-refused", status=403)
        browser.close()
    print(json.dumps({"pages_checked": run.checked}))


if __name__ == "__main__":
    main()
