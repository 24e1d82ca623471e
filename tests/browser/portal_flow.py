"""The data-access portal in a real browser: Debian's Chromium, headless,
driven by Playwright, with axe-core's accessibility checks on every page.

Run by tests/browser.rs against a running sandbox (the portal's URL and the
officials come from sandbox.json). An APL official finds a service in the
catalog, signs in, looks a resident up through the check page, sees the
minimised answer with a verified receipt and prints the extract; an official
of another authority cannot use that grant; the resident sees the lookup
in their history and cannot reach an official's page; the auditor finds
that lookup in the audit log, verifies its inclusion proof and downloads
the evidence, which an official cannot; an authority applies for a
connection, the operator asks for changes, the authority resubmits, the
operator approves, the provider confirms and the authority looks a person
up through its new grant; an authority not yet on the bus (Copceac)
applies with its system's certificate (--copceac-certificate, issued by
the sandbox's CA), the operator sees the registration verified and
approves, which puts the system on the bus. Every page must pass axe-core
with no serious or critical violation. Exits non-zero on the first failure,
saying what failed.

With --screenshots DIR it also saves every page it checks as PNG (docs/
keeps a few).
"""

import argparse
import base64
import hashlib
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


def sign_in(page, context, portal, who):
    """The development sign-in as `who`, with fresh cookies."""
    context.clear_cookies()
    page.goto(f"{portal}/sign-in")
    page.click(f"input[value='{who['idnp']}']")
    page.click("button[type=submit]")
    check(page.url.endswith("/account"), f"{who['name']} signs in, not {page.url}")


def sign_and_send(run, page, name):
    """From the check page: signs the application through MSign (the
    waiting page refreshes itself without script) and sends it."""
    check(page.url.endswith("/applications/check"), f"{name}: the check page, not {page.url}")
    run.axe(f"{name}-check")
    with page.expect_response(lambda r: r.url.endswith("/applications/sign")) as signing:
        page.click("form[action='/applications/sign'] button")
    refresh = signing.value.headers.get("refresh", "")
    check(refresh.startswith("2; url=/applications/signing"), f"{name}: the waiting page refreshes itself, not {refresh!r}")
    check(page.locator("a[href='/applications/signing?manual']").count() == 1, f"{name}: and can be stopped")
    run.axe(f"{name}-signing")
    # The page refreshes itself (no script) until MSign has signed.
    page.wait_for_selector("form[action='/applications/submit'] button", timeout=20000)
    run.axe(f"{name}-signed")
    page.click("form[action='/applications/submit'] button")
    check("/applications/cr-" in page.url, f"{name}: the request's page, not {page.url}")


def fill(page, use_case, town="Primăria Cahul", domain="cahul.md"):
    """The application form's fields for one service, person-by-idnp."""
    values = {
        "#f-services-0-legal_bases-0-id": "md-law-100-2001-art-5",
        "#f-services-0-legal_bases-0-act": "Legea nr. 100/2001 privind actele de stare civilă",
        "#f-services-0-legal_bases-0-article": "art. 5",
        "#f-services-0-legal_bases-0-text": "Actele de stare civilă se întocmesc pe baza Registrului de stat al populației.",
        "#f-services-0-purpose-code": "civil-status-registration",
        "#f-services-0-purpose-text-ro": "Înregistrarea actelor de stare civilă",
        "#f-services-0-purpose-text-ru": "Регистрация актов гражданского состояния",
        "#f-services-0-purpose-text-en": "Registering civil status acts",
        "#f-services-0-use_case": use_case,
        "#f-controller_register_no": "0000303-002",
        "#f-validity-from": "2025-01-01",
        "#f-contacts-technical-name": f"Serviciul IT, {town}",
        "#f-contacts-technical-email": f"it@{domain}",
        "#f-contacts-legal-name": f"Serviciul juridic, {town}",
        "#f-contacts-legal-email": f"juridic@{domain}",
    }
    for selector, value in values.items():
        page.fill(selector, value)
    for field in ["idnp", "first_name", "last_name"]:
        page.check(f"input[name='services/0/fields'][value='{field}']")
    page.check("#f-declare")


def applications_flow(run, page, context, portal, officials):
    """Connection applications: Cahul's administrator fills the form (the
    server's problems first), signs it through MSign (the waiting page
    refreshes itself) and sends it; the operator asks for changes; the
    administrator edits, signs and resends; the operator compares the
    versions and approves; the provider confirms; the administrator gives
    herself the new grant and looks a person up through it. An official of
    another authority cannot open the application."""
    admin = next(o for o in officials if o["participant"] == "apl-cahul" and "administrator" in o["roles"])
    operator = next(o for o in officials if "operator" in o["roles"])
    provider = next(o for o in officials if o["participant"] == "asp-rsp" and "provider" in o["roles"])
    other = next(o for o in officials if o["participant"] == "apl-balti" and "administrator" in o["roles"])

    # The authority's administrator applies.
    sign_in(page, context, portal, admin)
    run.goto(f"{portal}/applications", "applications")
    page.click("a[href='/applications/new']")
    run.axe("application-new")
    page.check("input[value='asp-rsp/person-by-idnp']")
    page.click("form[action='/applications/form'] button[type=submit]")
    run.axe("application-form")
    page.click("#application button[type=submit]:not([name])")
    check(page.locator(".error-summary a").count() >= 5, "an empty form is summarised, field by field")
    check(page.locator(".error-message").count() >= 5, "with the errors beside the fields")
    run.axe("application-form-errors")
    fill(page, "Registering births and marriages")
    page.click("#application button[type=submit]:not([name])")
    sign_and_send(run, page, "application")
    request_page = page.url.split("?")[0]
    request_id = request_page.rsplit("/", 1)[1]
    run.axe("application-show")

    # Another authority's official cannot open it.
    sign_in(page, context, portal, other)
    run.goto(f"{portal}/applications/{request_id}", "application-refused", status=404)

    # The operator takes it up and asks for changes, with a reason.
    sign_in(page, context, portal, operator)
    run.goto(f"{portal}/operator", "operator-queue")
    page.click(f"a[href='/operator/{request_id}']")
    check(page.locator(".tag.verified").count() >= 1, "the operator sees the signatures verified")
    run.axe("operator-show")
    page.click(f"button[formaction='/operator/{request_id}/review']")
    page.fill("#f-reason", "Say which department uses the data")
    page.click(f"button[formaction='/operator/{request_id}/request-changes']")
    check(page.locator(".panel").count() == 1, "the decision is recorded")
    run.axe("operator-decided")

    # The administrator edits, signs again and resends.
    sign_in(page, context, portal, admin)
    page.goto(f"{portal}/applications/{request_id}")
    check("Say which department uses the data" in page.content(), "the applicant sees the reason")
    page.click(f"a[href='/applications/{request_id}/edit']")
    run.axe("application-edit")
    page.fill("#f-services-0-use_case", "The civil status department registers births and marriages")
    page.fill("#f-reason", "named the department")
    page.click("#application button[type=submit]:not([name])")
    sign_and_send(run, page, "resubmission")

    # The operator compares the versions and approves.
    sign_in(page, context, portal, operator)
    page.goto(f"{portal}/operator/{request_id}")
    check(page.locator(".diff-added").count() >= 1, "the versions are compared")
    run.axe("operator-diff")
    page.click(f"button[formaction='/operator/{request_id}/review']")
    page.click(f"button[formaction='/operator/{request_id}/approve']")

    # The provider confirms for its service.
    sign_in(page, context, portal, provider)
    run.goto(f"{portal}/confirmations", "confirmations")
    page.click(f"a[href='/confirmations/{request_id}']")
    run.axe("confirmation")
    page.click(f"button[formaction='/confirmations/{request_id}/confirm']")
    check("state-active" in page.content(), "the last confirmation puts the grant in force")

    # The administrator gives herself the new grant and looks a person up.
    sign_in(page, context, portal, admin)
    grant = f"{request_id}.1"
    page.goto(f"{portal}/admin/officials")
    page.check(f"input[name='allow:{admin['idnp']}:{grant}']")
    page.click("form[action='/admin/officials'] button[type=submit]")
    question = f"/lookup/{grant}/asp-rsp/person-by-idnp"
    page.goto(f"{portal}/lookup")
    page.click(f"a[href='{question}']")
    page.fill("#person", "2000000000037")
    page.click("button[type=submit]")
    page.click("button[type=submit]")
    content = page.content()
    check("<code>first_name</code>" in content, "the new grant answers with its fields")
    check("<code>birth_date</code>" not in content, "and no others")
    run.axe("application-lookup")


def fingerprint(pem):
    """The lowercase hex SHA-256 of a PEM certificate's DER, as the bus
    names certificates (computed here, independently of the portal)."""
    body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
    return hashlib.sha256(base64.b64decode(body)).hexdigest()


def joining_flow(run, page, context, portal, officials, certificate):
    """An authority not yet on the bus applies to join: Copceac's
    administrator finds the registration fields on the form (the system id
    is his organisation's, never typed), gives a certificate that is none
    and reads the problem beside the field, pastes the certificate the bus
    CA issued for `apl-copceac`, signs through MSign and sends it; another
    authority's administrator cannot open it; the operator reads the
    registration (subject, fingerprint, chain verified) and approves, which
    registers the system; its administrator still follows the application,
    approved, and is told his organisation's own system files from now on;
    the provider confirms and the application is in force."""
    admin = next(o for o in officials if o["participant"] == "apl-copceac" and "administrator" in o["roles"])
    operator = next(o for o in officials if "operator" in o["roles"])
    provider = next(o for o in officials if o["participant"] == "asp-rsp" and "provider" in o["roles"])
    other = next(o for o in officials if o["participant"] == "apl-balti" and "administrator" in o["roles"])
    expected = fingerprint(certificate)

    sign_in(page, context, portal, admin)
    run.goto(f"{portal}/applications", "applications-joining")
    check(page.locator("a[href^='/applications/cr-']").count() == 0, "Copceac has no application yet")
    page.click("a[href='/applications/new']")
    run.axe("application-new-joining")
    page.check("input[value='asp-rsp/person-by-idnp']")
    page.click("form[action='/applications/form'] button[type=submit]")
    check(page.locator("#joining-title").is_visible(), "the form says the organisation is not on the bus")
    check(page.locator("#f-applicant-idno").count() == 1, "and asks for its IDNO")
    check(page.locator("textarea#f-applicant-registration-certificate").count() == 1, "and the system's certificate")
    check(page.locator("input#f-applicant-registration-endpoint[type=url]").count() == 1, "and, optionally, its address")
    check(page.locator("input[name='applicant/system']").count() == 0, "the system id is never typed")
    check(page.locator("section[aria-labelledby=joining-title] code", has_text="apl-copceac").count() == 1,
          "it is the official's organisation's")
    run.axe("application-joining")
    fill(page, "Înregistrarea nașterilor în satul Copceac", "Primăria satului Copceac", "copceac.md")
    page.fill("#f-applicant-idno", "1003605000089")
    page.fill("#f-applicant-name", "Primăria satului Copceac")
    page.fill("#f-applicant-registration-endpoint", "https://copceac.example.md")
    page.fill("#f-applicant-registration-certificate", "my certificate")
    page.click("#application button[type=submit]:not([name])")
    check(page.locator(".error-summary a[href='#f-applicant-registration-certificate']").count() == 1,
          f"a certificate that is none is summarised, not {page.url}")
    check(page.locator("#f-applicant-registration-certificate-error").count() == 1, "and the problem is beside the field")
    run.axe("application-registration-errors")
    page.fill("#f-applicant-registration-certificate", certificate)
    page.click("#application button[type=submit]:not([name])")
    check(page.url.endswith("/applications/check"), f"the certificate is accepted, not {page.url}")
    check(expected in page.content(), "the check page shows the certificate's fingerprint")
    # Back to the form from the check page: the registration is kept.
    page.click("a[href='/applications/form?draft']")
    check(page.locator(".error-summary").count() == 0, "the draft has no problem")
    check(fingerprint(page.input_value("#f-applicant-registration-certificate")) == expected,
          "the draft keeps the certificate")
    check(page.input_value("#f-applicant-registration-endpoint") == "https://copceac.example.md",
          "and the system's address")
    run.axe("application-registration")
    page.click("#application button[type=submit]:not([name])")
    sign_and_send(run, page, "registration")
    request_id = page.url.split("?")[0].rsplit("/", 1)[1]
    check("state-submitted" in page.content(), "the application is submitted")
    check(expected in page.content(), "with the certificate's fingerprint")
    run.axe("application-registration-show")
    run.goto(f"{portal}/applications", "applications-joining-sent")
    check(page.locator(f"a[href='/applications/{request_id}']").count() == 1, "Copceac's list shows it")

    # Another authority's administrator cannot open it, nor see it listed.
    sign_in(page, context, portal, other)
    run.goto(f"{portal}/applications/{request_id}", "application-registration-refused", status=404)
    run.goto(f"{portal}/applications", "applications-other")
    check(request_id not in page.content(), "another authority's list does not show it")

    # The operator reads the registration and approves; that registers it.
    sign_in(page, context, portal, operator)
    page.goto(f"{portal}/operator")
    page.click(f"a[href='/operator/{request_id}']")
    block = page.locator("dl.summary.registration")
    check(block.count() == 1, "the operator sees the registration")
    check(block.locator("code.digest", has_text=expected).count() == 1, "with the certificate's fingerprint")
    check(block.locator(".tag.verified").count() == 1, "its chain to the bus CA verified")
    check("CN=apl-copceac" in block.inner_text(), "the certificate's subject")
    check(block.locator("code", has_text="https://copceac.example.md").count() == 1, "and the system's address")
    run.axe("operator-registration")
    page.click(f"button[formaction='/operator/{request_id}/review']")
    page.click(f"button[formaction='/operator/{request_id}/approve']")
    check(page.locator(".tag.state-approved").count() == 1, f"the application is approved, not {page.url}")
    run.axe("operator-registration-approved")

    # Copceac is on the bus now, and the portal does not serve it: its
    # administrator still follows the application from his account, sees
    # it approved, and is told that his organisation's own system files
    # from now on (no new application through the portal).
    sign_in(page, context, portal, admin)
    page.click("a[href='/applications']")
    check(page.url.endswith("/applications"), f"the account leads to the applications, not {page.url}")
    row = page.locator("tr", has=page.locator(f"a[href='/applications/{request_id}']"))
    check(row.count() == 1, "Copceac's list still shows its application")
    check(row.locator(".tag.state-approved").count() == 1, "approved")
    check(page.locator("#joined-title").is_visible(), "the page says the organisation is on the bus")
    check(page.locator("section[aria-labelledby=joined-title] code", has_text="apl-copceac").count() == 1,
          "with its system")
    check(page.locator("a[href='/applications/new']").count() == 0, "and offers no new application")
    run.axe("applications-joined")
    page.click(f"a[href='/applications/{request_id}']")
    check(page.locator(".summary .tag.state-approved").count() == 1, f"the application is approved, not {page.url}")
    check(expected in page.content(), "with the certificate's fingerprint")
    check(page.locator(f"a[href='/applications/{request_id}/edit']").count() == 0, "and nothing to edit")
    run.axe("application-joined-show")

    # The provider confirms; the application is in force.
    sign_in(page, context, portal, provider)
    run.goto(f"{portal}/confirmations/{request_id}", "registration-confirmation")
    page.click(f"button[formaction='/confirmations/{request_id}/confirm']")
    check("state-active" in page.content(), "the provider's confirmation puts it in force")

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sandbox", required=True, help="the sandbox directory (sandbox.json)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--screenshots", help="save the main pages here as PNG")
    parser.add_argument("--copceac-certificate", required=True,
                        help="a certificate of the sandbox's CA for apl-copceac (PEM), as "
                             "`mconnect pki issue --dir SANDBOX/pki --name apl-copceac` writes it")
    args = parser.parse_args()
    manifest = json.loads((pathlib.Path(args.sandbox) / "sandbox.json").read_text())
    portal = manifest["portal"]["url"]
    officials = manifest["portal"]["officials"]
    cahul = next(o for o in officials if o["participant"] == "apl-cahul" and "administrator" not in o["roles"])
    other = next(o for o in officials if o["participant"] != "apl-cahul" and "official" in o["roles"])
    auditor = next(o for o in officials if "auditor" in o["roles"])
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

        # The auditor of the data protection authority declares a legal
        # basis and purpose from their grant, finds Cahul's lookup of the
        # resident in the broker's audit log, opens it with its inclusion
        # proof verified and downloads the evidence; an official of Cahul
        # is refused the log.
        context.clear_cookies()
        run.goto(f"{portal}/sign-in", "sign-in-auditor")
        page.click(f"input[value='{auditor['idnp']}']")
        page.click("button[type=submit]")
        check(page.url.endswith("/account"), f"the auditor's sign-in leads to the account, not {page.url}")
        page.click("a[href='/audit']")
        run.axe("audit-declare")
        page.check("input[name=purpose] >> nth=0")
        page.check("input[name=basis] >> nth=0")
        page.click("button[type=submit]")
        check(page.url.endswith("/audit"), f"the declaration leads to the search, not {page.url}")
        run.axe("audit-search")
        search = "form:has(#subject) button[type=submit]"
        page.fill("#subject", "2000000000038")
        page.click(search)
        check(page.locator(".error-summary").count() == 1, "a wrong IDNP is summarised as an error")
        run.axe("audit-search-error")
        page.fill("#subject", "2000000000037")
        page.fill("#client", "apl-cahul")
        page.select_option("#service", "asp-rsp/person-by-idnp")
        page.select_option("#event", "exchange")
        page.click(search)
        found = page.locator("a[href^='/audit/records/']")
        check(found.count() >= 1, "the search finds Cahul's lookup of the resident")
        run.axe("audit-results")
        found.first.click()
        content = page.content()
        check("Dovada includerii a fost verificată" in content, "the record's inclusion proof is verified")
        check("2000000000037" in content and cahul["idnp"] in content, "the record names the person and the official")
        run.axe("audit-record")
        with page.expect_download() as download:
            page.click("a[href$='/export']")
        lines = pathlib.Path(download.value.path()).read_text().splitlines()
        check(len(lines) == 2 and "tree_head" in json.loads(lines[0]) and "audit_path" in json.loads(lines[1]),
              "the evidence is a signed tree head and the record with its proof")
        context.clear_cookies()
        run.goto(f"{portal}/sign-in", "sign-in-after-audit")
        page.click(f"input[value='{cahul['idnp']}']")
        page.click("button[type=submit]")
        run.goto(f"{portal}/audit", "audit-refused", status=403)
        applications_flow(run, page, context, portal, officials)
        certificate = pathlib.Path(args.copceac_certificate).read_text()
        joining_flow(run, page, context, portal, officials, certificate)
        browser.close()
    print(json.dumps({"pages_checked": run.checked}))


if __name__ == "__main__":
    main()
