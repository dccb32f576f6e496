"""The web console in Firefox too: Debian's Firefox ESR, headless, driven by Selenium through geckodriver (built
from crates.io by the installer), through the real Envoy and Keycloak — sign-in, the console, the live analytics
(server-sent events), sign-out."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.firefox.service import Service
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from shopmesh.tooling import install
from shopmesh.tooling.realm import password


@pytest.fixture(scope="module")
def firefox(mesh) -> Iterator[webdriver.Firefox]:
    install.ensure_tools({"firefox-esr": "firefox-esr"})
    geckodriver = install.ensure(install.GECKODRIVER, mesh.cache_dir) / "bin" / "geckodriver"
    options = webdriver.FirefoxOptions()
    options.binary_location = shutil.which("firefox-esr")
    options.add_argument("-headless")
    options.set_preference("browser.startup.homepage", "about:blank")
    browser = webdriver.Firefox(options=options, service=Service(executable_path=str(geckodriver)))
    browser.set_window_size(1280, 800)
    yield browser
    browser.quit()


def _wait(browser, condition, seconds: float = 30):
    return WebDriverWait(browser, seconds).until(condition)


def test_firefox_signs_in_uses_the_console_watches_the_totals_and_signs_out(firefox, mesh, billing):
    firefox.get(f"{mesh.gateway_url}/")
    _wait(firefox, seen.visibility_of_element_located((By.ID, "username")))
    assert firefox.current_url.startswith(f"http://localhost:{mesh.keycloak_port}/realms/shopmesh/")
    firefox.find_element(By.ID, "username").send_keys("billing-manager")
    firefox.find_element(By.ID, "password").send_keys(password("billing-manager"))
    firefox.find_element(By.ID, "kc-login").click()
    _wait(firefox, seen.text_to_be_present_in_element((By.ID, "user"), "billing-manager"))
    assert firefox.find_element(By.ID, "roles").text == "BILLING_MANAGER, USER"
    _wait(firefox, seen.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=customers-table]")))

    firefox.find_element(By.CSS_SELECTOR, "[href='#/analytics']").click()
    _wait(firefox, seen.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=windows-chart] rect")))
    name = billing(1)["customer"]["name"]
    _wait(
        firefox,
        seen.presence_of_element_located(
            (By.CSS_SELECTOR, f"[data-testid=customer-totals] tr[data-customer='{name}']")
        ),
        60,
    )

    firefox.find_element(By.ID, "signout").click()
    firefox.get(f"{mesh.gateway_url}/")
    _wait(firefox, seen.visibility_of_element_located((By.ID, "username")))
