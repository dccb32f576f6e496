"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright, through the real Envoy
(its oauth2 filter) and the real Keycloak sign-in page. Screenshots of each page go to var/test/screenshots/."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from shopmesh.tooling.realm import password
from tests.conftest import email, wait_for

USERS = {
    "user1": {"USER"},
    "customer-manager": {"USER", "CUSTOMER_MANAGER"},
    "product-manager": {"USER", "PRODUCT_MANAGER"},
    "billing-manager": {"USER", "BILLING_MANAGER"},
    "mesh-admin": {"USER", "ADMIN"},
}


@pytest.fixture
def screenshots(mesh):
    folder = mesh.var_dir / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def signed_in(browser: Browser, mesh, user: str, screenshots=None) -> Page:
    """A new browser session of user: / sends it to Keycloak's sign-in page, and back once signed in."""
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(f"{mesh.gateway_url}/")
    expect(page.locator("#username")).to_be_visible(timeout=30_000)
    assert page.url.startswith(f"http://localhost:{mesh.keycloak_port}/realms/shopmesh/"), page.url
    if screenshots:
        page.screenshot(path=screenshots / "sign-in.png")
    page.fill("#username", user)
    page.fill("#password", password(user))
    page.click("#kc-login")
    expect(page.get_by_test_id("user")).to_have_text(user, timeout=30_000)
    return page


def forced(page: Page, method: str, path: str, body: dict | None = None) -> int:
    """What the gateway answers the page's own session for a call its buttons would not make."""
    return page.evaluate(
        """async ([method, path, body]) => (await fetch(path, {method, body: body && JSON.stringify(body),
               headers: {accept: "application/json, text/html;q=0.1", "content-type": "application/json"}})).status""",
        [method, path, body],
    )


@pytest.mark.parametrize("user", sorted(USERS))
def test_each_user_signs_in_at_keycloak_and_sees_what_their_roles_allow(browser, mesh, user, screenshots):
    page = signed_in(browser, mesh, user, screenshots if user == "user1" else None)
    assert set(page.get_by_test_id("roles").inner_text().split(", ")) == USERS[user]
    expect(page.get_by_test_id("customers-table")).to_be_visible()
    may_create = bool(USERS[user] & {"CUSTOMER_MANAGER", "ADMIN"})
    expect(page.locator("[data-action=new]")).to_be_enabled() if may_create else expect(
        page.locator("[data-action=new]")
    ).to_be_disabled()
    page.context.close()


def test_a_customer_created_in_the_console_is_found_by_the_rest_api(browser, mesh, rest, screenshots):
    page = signed_in(browser, mesh, "customer-manager")
    name, address = f"Console {uuid.uuid4().hex[:6]}", email()
    page.click("[data-action=new]")
    page.fill("[data-testid=customers-form] [name=name]", name)
    page.fill("[data-testid=customers-form] [name=email]", address)
    page.click("[data-testid=customers-form] button[type=submit]")
    expect(page.get_by_test_id("customers-form")).to_have_count(0)
    page.screenshot(path=screenshots / "customers.png")
    found = []
    token = ""
    while True:
        listed = rest.get("/v1/customers", params={"pageSize": 1000, "pageToken": token}).json()
        found += [c for c in listed["customers"] if c["email"] == address]
        if not (token := listed.get("nextPageToken")):
            break
    assert [c["name"] for c in found] == [name]
    page.context.close()


def test_a_bad_field_shows_the_api_s_message_next_to_it(browser, mesh):
    page = signed_in(browser, mesh, "product-manager")
    page.click("[href='#/products']")
    page.click("[data-action=new]")
    page.fill("[data-testid=products-form] [name=name]", "Lamp")
    page.fill("[data-testid=products-form] [name=price]", "12.345")
    page.fill("[data-testid=products-form] [name=quantity]", "3")
    page.click("[data-testid=products-form] button[type=submit]")
    error = page.locator("label:has([name=price]) [data-testid=field-error]")
    expect(error).to_contain_text("two decimals")
    page.context.close()


def test_a_bill_made_in_the_console_shows_its_lines_and_exact_total(browser, mesh, rest, screenshots):
    customer = rest.post("/v1/customers", json={"name": f"Bill {uuid.uuid4().hex[:6]}", "email": email()}).json()
    product = rest.post(
        "/v1/products", json={"name": f"Item {uuid.uuid4().hex[:6]}", "price": "12.34", "quantity": 50}
    ).json()
    page = signed_in(browser, mesh, "billing-manager")
    page.click("[href='#/bills']")
    page.click("[data-action=new]")
    form = page.get_by_test_id("bill-form")
    form.locator("[name=customerId]").select_option(customer["id"])
    form.locator("[name=productId]").select_option(product["id"])
    form.locator("[name=quantity]").fill("3")
    form.locator("button[type=submit]").click()
    expect(page.get_by_test_id("bill-total")).to_have_text("37.02", timeout=15_000)
    page.screenshot(path=screenshots / "bill.png")
    bill_id = page.url.rsplit("/", 1)[1]
    assert rest.get(f"/v1/bills/{bill_id}").json()["total"] == "37.02"
    page.context.close()


def test_without_the_role_nothing_can_be_changed_and_a_forced_call_is_403(browser, mesh, screenshots):
    page = signed_in(browser, mesh, "user1")
    expect(page.locator("[data-action=new]")).to_be_disabled()
    expect(page.locator("[data-action=delete]").first).to_be_disabled()
    assert forced(page, "POST", "/v1/customers", {"name": "Forced", "email": email()}) == 403
    page.click("[href='#/products']")
    expect(page.get_by_test_id("products-table")).to_be_visible()
    page.screenshot(path=screenshots / "products.png")
    assert forced(page, "DELETE", "/v1/products/anything") == 403
    page.click("[href='#/analytics']")
    expect(page.get_by_test_id("error")).to_contain_text("Not allowed")
    page.context.close()


def test_the_analytics_chart_and_totals_update_live(browser, mesh, billing, screenshots):
    page = signed_in(browser, mesh, "billing-manager")
    page.click("[href='#/analytics']")
    bars = page.locator("[data-testid=windows-chart] rect")
    expect(bars.first).to_be_attached(timeout=30_000)
    newest = page.evaluate("() => [...document.querySelectorAll('[data-window]')].map(b => b.dataset.window)")
    wait_for(lambda: len({*_windows(page)} - {*newest}) >= 2, 60, "two windows closing after the page opened")
    bill = billing(2)
    name = bill["customer"]["name"]
    row = page.locator(f"[data-testid=customer-totals] tr[data-customer='{name}']")
    expect(row).to_be_visible(timeout=30_000)
    before = row.locator("td").nth(1).inner_text()
    billing(1)
    wait_for(lambda: row.locator("td").nth(1).inner_text() != before, 60, f"{name}'s invoice count to grow")
    page.screenshot(path=screenshots / "analytics.png")
    page.context.close()


def _windows(page: Page) -> list[str]:
    return page.evaluate("() => [...document.querySelectorAll('[data-window]')].map(b => b.dataset.window)")


def test_after_sign_in_the_api_s_json_shows_in_the_browser(browser, mesh):
    page = signed_in(browser, mesh, "user1")
    page.goto(f"{mesh.gateway_url}/v1/customers")
    assert '"customers"' in page.locator("body").inner_text()
    page.context.close()


def test_the_session_is_renewed_with_the_refresh_token_without_signing_in_again(browser, mesh):
    page = signed_in(browser, mesh, "user1")
    first = _cookie(page, "BearerToken")
    page.wait_for_timeout(65_000)  # the console client's access tokens live 60 s (keycloak/shopmesh-realm.json)
    page.reload()
    expect(page.get_by_test_id("customers-table")).to_be_visible(timeout=30_000)
    assert page.url.startswith(mesh.gateway_url), page.url  # no trip to the sign-in page
    assert _cookie(page, "BearerToken") not in (None, first)
    page.context.close()


def test_a_stale_session_cookie_is_refused_after_sign_out(browser, mesh):
    page = signed_in(browser, mesh, "user1")
    kept = page.context.cookies()
    page.click("#signout")
    expect(page.locator("#username")).to_be_visible(timeout=30_000)  # signed out: back at the sign-in page
    page.wait_for_timeout(65_000)  # the kept access token has expired; its session at Keycloak ended at sign-out
    context = browser.new_context()
    context.add_cookies(kept)
    replay = context.new_page()
    answer = replay.goto(f"{mesh.gateway_url}/")
    assert replay.get_by_test_id("user").count() == 0 or replay.get_by_test_id("user").inner_text() == ""
    assert replay.locator("#username").is_visible() or (answer is not None and answer.status == 401), replay.url
    context.close()
    page.context.close()


def _cookie(page: Page, name: str) -> str | None:
    return next((cookie["value"] for cookie in page.context.cookies() if cookie["name"] == name), None)


def test_sign_out_ends_the_session_and_a_forged_cookie_is_refused(browser, mesh):
    page = signed_in(browser, mesh, "user1")
    page.click("#signout")
    page.wait_for_load_state()
    page.goto(f"{mesh.gateway_url}/")
    expect(page.locator("#username")).to_be_visible(timeout=30_000)
    context = browser.new_context()
    host = re.sub(r"^https?://|:\d+$", "", mesh.gateway_url)
    context.add_cookies(
        [
            {"name": "BearerToken", "value": "forged", "domain": host, "path": "/"},
            {"name": "OauthHMAC", "value": "forged", "domain": host, "path": "/"},
            {"name": "OauthExpires", "value": "4102444800", "domain": host, "path": "/"},
        ]
    )
    forged_page = context.new_page()
    forged_page.goto(f"{mesh.gateway_url}/")
    expect(forged_page.locator("#username")).to_be_visible(timeout=30_000)
    context.close()
    page.context.close()


@pytest.mark.parametrize(
    "headers", [{}, {"accept": "text/html"}, {"authorization": "Bearer not-a-token", "accept": "text/html"}]
)
def test_api_clients_get_401_json_and_never_a_redirect(mesh, headers):
    if "text/html" in headers.get("accept", "") and "authorization" not in headers:
        # A browser's page request without a session is sent to sign in: that is the console's front door.
        answer = httpx.get(f"{mesh.gateway_url}/v1/customers", headers=headers)
        assert answer.status_code == 302 and "/realms/shopmesh/" in answer.headers["location"]
        return
    answer = httpx.get(f"{mesh.gateway_url}/v1/customers", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == 16
