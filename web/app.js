// The shopmesh web console: customers, products, bills and the live analytics, through the gateway's REST API
// (protos/openapi.yaml). Envoy holds the session (HttpOnly cookies) and adds the bearer token; this page never
// sees a token. Buttons follow the permission table (/permissions.json) and the user's roles (/session); the
// server still refuses whatever they do not allow.
"use strict";

const PAGE_SIZE = 20;
const state = { user: "", roles: new Set(), permissions: {}, streams: [] };

// --- talking to the gateway --------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body.message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const answer = await fetch(path, {
    method,
    // Accepting HTML marks the request as the browser's: Envoy adds the session's token (an API client's
    // request, which does not, is left to its own Authorization header).
    headers: { accept: "application/json, text/html;q=0.1", ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    redirect: "manual",
  });
  if (answer.type === "opaqueredirect" || answer.status === 401) {
    location.reload(); // the session ended: sign in again
    throw new ApiError(401, { message: "signed out" });
  }
  const text = await answer.text();
  let parsed = {};
  try { parsed = text ? JSON.parse(text) : {}; } catch { parsed = { message: text }; }
  if (!answer.ok) throw new ApiError(answer.status, parsed);
  return parsed;
}

function allowed(method) {
  const roles = state.permissions[method] || [];
  return roles.some((role) => state.roles.has(role));
}

// --- building the page -------------------------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "on") for (const [event, handler] of Object.entries(value)) node.addEventListener(event, handler);
    else if (key === "disabled") node.disabled = Boolean(value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function show(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes);
}

function failure(error) {
  if (error.status === 403) return "Not allowed: your roles do not include one this needs.";
  if (error.status === 404) return "Not found: it may have been deleted.";
  return error.message;
}

function errorBox(error) {
  return el("p", { class: "error", role: "alert", "data-testid": "error" }, failure(error));
}

// A 400 names the field at fault ("customer.email: must be …"): the message goes next to that field.
function showFieldError(form, error) {
  form.querySelectorAll(".field-error").forEach((node) => node.remove());
  const field = error.status === 400 ? (error.message.split(":")[0] || "").split(".").pop() : "";
  const input = field && form.querySelector(`[name="${CSS.escape(snakeToCamel(field))}"]`);
  const note = el("span", { class: "field-error", role: "alert", "data-testid": "field-error" }, failure(error));
  if (input) input.closest("label").append(note);
  else form.prepend(note);
}

function snakeToCamel(name) {
  return name.replace(/_([a-z])/g, (_, letter) => letter.toUpperCase());
}

// --- the resources: customers and products share one page shape ---------------------------------------------------

const RESOURCES = {
  customers: {
    title: "Customers", path: "/v1/customers", service: "shopmesh.customer.v1.CustomerService", noun: "Customer",
    fields: [{ name: "name", label: "Name" }, { name: "email", label: "Email", type: "email" }],
  },
  products: {
    title: "Products", path: "/v1/products", service: "shopmesh.inventory.v1.InventoryService", noun: "Product",
    fields: [
      { name: "name", label: "Name" },
      { name: "price", label: "Price", inputmode: "decimal", number: true },
      { name: "quantity", label: "Quantity in stock", type: "number", number: true, integer: true },
    ],
  },
};

async function resourcePage(kind, token = "", previous = []) {
  const resource = RESOURCES[kind];
  const can = (verb) => allowed(`${resource.service}/${verb}${resource.noun}`);
  let page;
  try {
    page = await api("GET", `${resource.path}?pageSize=${PAGE_SIZE}&pageToken=${encodeURIComponent(token)}`);
  } catch (error) {
    return show(el("h2", {}, resource.title), errorBox(error));
  }
  const items = page[kind] || [];
  const rows = items.map((item) => el("tr", { "data-id": item.id },
    resource.fields.map((field) => el("td", { class: field.number ? "number" : "" }, item[field.name])),
    el("td", {},
      el("button", { on: { click: () => editForm(kind, item) }, disabled: !can("Update"), "data-action": "edit" }, "Edit"),
      " ",
      el("button", { class: "danger", "data-action": "delete", disabled: !can("Delete"),
                     on: { click: () => remove(kind, item) } }, "Delete"))));
  show(
    el("h2", {}, resource.title),
    el("div", { class: "toolbar" },
      el("button", { class: "primary", "data-action": "new", disabled: !can("Create"),
                     on: { click: () => editForm(kind, null) } }, `New ${resource.noun.toLowerCase()}`),
      el("button", { disabled: !previous.length, "data-action": "previous",
                     on: { click: () => resourcePage(kind, previous.at(-1), previous.slice(0, -1)) } }, "Previous"),
      el("button", { disabled: !page.nextPageToken, "data-action": "next",
                     on: { click: () => resourcePage(kind, page.nextPageToken, [...previous, token]) } }, "Next")),
    el("div", { id: "form-slot" }),
    el("table", { "data-testid": `${kind}-table` },
      el("thead", {}, el("tr", {}, resource.fields.map((f) => el("th", { class: f.number ? "number" : "" }, f.label)),
                         el("th", {}, ""))),
      el("tbody", {}, rows)));
}

function editForm(kind, item) {
  const resource = RESOURCES[kind];
  const form = el("form", { "data-testid": `${kind}-form` },
    el("h3", {}, item ? `Edit ${item.name}` : `New ${resource.noun.toLowerCase()}`),
    resource.fields.map((field) => el("label", {}, field.label,
      el("input", { name: field.name, type: field.type || "text", inputmode: field.inputmode,
                    value: item ? item[field.name] : "" }))),
    el("div", { class: "toolbar" },
      el("button", { class: "primary", type: "submit" }, item ? "Save" : "Create"),
      el("button", { type: "button", on: { click: () => form.remove() } }, "Cancel")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = {};
    for (const field of resource.fields) {
      const raw = form.elements[field.name].value;
      values[field.name] = field.integer ? Number.parseInt(raw || "0", 10) : raw;
    }
    try {
      if (item) await api("PATCH", `${resource.path}/${encodeURIComponent(item.id)}`, values);
      else await api("POST", resource.path, values);
      await resourcePage(kind);
    } catch (error) {
      showFieldError(form, error);
    }
  });
  document.getElementById("form-slot").replaceChildren(form);
  form.querySelector("input").focus();
}

async function remove(kind, item) {
  if (!confirm(`Delete ${item.name}?`)) return;
  try {
    await api("DELETE", `${RESOURCES[kind].path}/${encodeURIComponent(item.id)}`);
    await resourcePage(kind);
  } catch (error) {
    document.getElementById("form-slot").replaceChildren(errorBox(error));
  }
}

// --- bills ---------------------------------------------------------------------------------------------------------

async function billsPage(token = "", previous = []) {
  let page;
  try {
    page = await api("GET", `/v1/bills?pageSize=${PAGE_SIZE}&pageToken=${encodeURIComponent(token)}`);
  } catch (error) {
    return show(el("h2", {}, "Bills"), errorBox(error));
  }
  const rows = (page.bills || []).map((bill) => el("tr", { "data-id": bill.id },
    el("td", {}, el("a", { href: `#/bills/${encodeURIComponent(bill.id)}` }, bill.id)),
    el("td", {}, bill.customer ? bill.customer.name : bill.customerId),
    el("td", {}, new Date(bill.billingDate).toLocaleString()),
    el("td", { class: "number" }, bill.total)));
  show(
    el("h2", {}, "Bills"),
    el("div", { class: "toolbar" },
      el("button", { class: "primary", "data-action": "new",
                     disabled: !allowed("shopmesh.billing.v1.BillingService/CreateBill"),
                     on: { click: () => billForm() } }, "New bill"),
      el("button", { disabled: !previous.length, "data-action": "previous",
                     on: { click: () => billsPage(previous.at(-1), previous.slice(0, -1)) } }, "Previous"),
      el("button", { disabled: !page.nextPageToken, "data-action": "next",
                     on: { click: () => billsPage(page.nextPageToken, [...previous, token]) } }, "Next")),
    el("div", { id: "form-slot" }),
    el("table", { "data-testid": "bills-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "Bill"), el("th", {}, "Customer"), el("th", {}, "Date"),
                         el("th", { class: "number" }, "Total"))),
      el("tbody", {}, rows)));
}

async function everything(path, key) {
  const found = [];
  let token = "";
  do {
    const page = await api("GET", `${path}?pageSize=1000&pageToken=${encodeURIComponent(token)}`);
    found.push(...(page[key] || []));
    token = page.nextPageToken;
  } while (token && found.length < 5000);
  return found;
}

async function billForm() {
  let customers, products;
  try {
    [customers, products] = await Promise.all([everything("/v1/customers", "customers"),
                                               everything("/v1/products", "products")]);
  } catch (error) {
    return document.getElementById("form-slot").replaceChildren(errorBox(error));
  }
  const productOptions = () => el("select", { name: "productId" },
    products.map((p) => el("option", { value: p.id }, `${p.name} (${p.price}, ${p.quantity} in stock)`)));
  const line = () => el("div", { class: "line" }, productOptions(),
    el("input", { name: "quantity", type: "number", min: "1", value: "1", "aria-label": "Quantity" }),
    el("button", { type: "button", on: { click: (event) => event.target.closest(".line").remove() } }, "Remove"));
  const lines = el("div", { class: "lines" }, line());
  const form = el("form", { "data-testid": "bill-form" },
    el("h3", {}, "New bill"),
    el("label", {}, "Customer", el("select", { name: "customerId" },
      customers.map((c) => el("option", { value: c.id }, `${c.name} <${c.email}>`)))),
    el("label", {}, "Lines", lines),
    el("div", { class: "toolbar" },
      el("button", { type: "button", "data-action": "add-line", on: { click: () => lines.append(line()) } }, "Add a line"),
      el("button", { class: "primary", type: "submit" }, "Make the bill"),
      el("button", { type: "button", on: { click: () => form.remove() } }, "Cancel")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const items = [...lines.querySelectorAll(".line")].map((node) => ({
      productId: node.querySelector("[name=productId]").value,
      quantity: Number.parseInt(node.querySelector("[name=quantity]").value || "0", 10),
    }));
    try {
      const bill = await api("POST", "/v1/bills", { customerId: form.elements.customerId.value, items });
      location.hash = `#/bills/${encodeURIComponent(bill.id)}`;
    } catch (error) {
      showFieldError(form, error);
    }
  });
  document.getElementById("form-slot").replaceChildren(form);
}

async function billPage(id) {
  let bill;
  try {
    bill = await api("GET", `/v1/bills/${encodeURIComponent(id)}`);
  } catch (error) {
    return show(el("h2", {}, "Bill"), errorBox(error));
  }
  show(
    el("h2", {}, `Bill ${bill.id}`),
    el("p", {}, `${bill.customer.name} <${bill.customer.email}>, ${new Date(bill.billingDate).toLocaleString()}`),
    el("table", { "data-testid": "bill-lines" },
      el("thead", {}, el("tr", {}, el("th", {}, "Product"), el("th", { class: "number" }, "Quantity"),
                         el("th", { class: "number" }, "Unit price"), el("th", { class: "number" }, "Amount"))),
      el("tbody", {}, bill.items.map((item) => el("tr", {},
        el("td", {}, item.product.name), el("td", { class: "number" }, item.quantity),
        el("td", { class: "number" }, item.unitPrice), el("td", { class: "number" }, item.amount)))),
      el("tfoot", {}, el("tr", {}, el("th", { colspan: "3" }, "Total"),
                         el("th", { class: "number", "data-testid": "bill-total" }, bill.total)))),
    el("p", {}, el("a", { href: "#/bills" }, "All bills")));
}

// --- live analytics: server-sent events from the gateway -----------------------------------------------------------

function analyticsPage() {
  if (!allowed("shopmesh.analytics.v1.AnalyticsService/WatchWindowTotals")) {
    return show(el("h2", {}, "Analytics"), errorBox({ status: 403 }));
  }
  const windows = new Map();
  const customers = new Map();
  const chart = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  chart.setAttribute("class", "chart");
  chart.setAttribute("data-testid", "windows-chart");
  const body = el("tbody", {});
  const status = el("p", { class: "notice", "data-testid": "stream-status" }, "Connecting…");
  show(el("h2", {}, "Analytics"), status,
    el("div", { class: "columns" },
      el("section", {}, el("h3", {}, "Totals of the 5-second windows"), chart),
      el("section", {}, el("h3", {}, "Every customer's running total"),
        el("table", { "data-testid": "customer-totals" },
          el("thead", {}, el("tr", {}, el("th", {}, "Customer"), el("th", { class: "number" }, "Invoices"),
                             el("th", { class: "number" }, "Total"))),
          body))));

  const drawChart = () => {
    const shown = [...windows.values()].sort((a, b) => a.windowStart.localeCompare(b.windowStart)).slice(-60);
    const width = 600, height = 200, gap = 1;
    const most = Math.max(1, ...shown.map((w) => Number(w.total)));
    chart.setAttribute("viewBox", `0 0 ${width} ${height + 14}`);
    chart.replaceChildren(...shown.map((w, index) => {
      const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      const barWidth = width / 60 - gap;
      const barHeight = Math.max(1, (Number(w.total) / most) * height);
      bar.setAttribute("x", String(index * (barWidth + gap)));
      bar.setAttribute("y", String(height - barHeight));
      bar.setAttribute("width", String(barWidth));
      bar.setAttribute("height", String(barHeight));
      bar.setAttribute("data-window", w.windowStart);
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.textContent = `${w.windowStart}: ${w.total} (${w.count} invoices)`;
      bar.append(title);
      return bar;
    }));
  };
  const drawTable = () => {
    body.replaceChildren(...[...customers.values()].sort((a, b) => a.customerName.localeCompare(b.customerName))
      .map((c) => el("tr", { "data-customer": c.customerName }, el("td", {}, c.customerName),
                     el("td", { class: "number" }, c.count), el("td", { class: "number" }, c.total))));
  };
  const watch = (path, onMessage) => {
    const source = new EventSource(path);
    source.onopen = () => { status.textContent = "Live: updated as each window closes and each invoice arrives."; };
    source.onmessage = (event) => onMessage(JSON.parse(event.data));
    source.onerror = () => { status.textContent = "Reconnecting…"; };
    state.streams.push(source);
  };
  watch("/v1/analytics/windows:watch", (w) => { windows.set(w.windowStart, w); drawChart(); });
  watch("/v1/analytics/customers:watch", (c) => { customers.set(c.customerName, c); drawTable(); });
}

// --- the page's route ----------------------------------------------------------------------------------------------

function route() {
  state.streams.forEach((source) => source.close());
  state.streams = [];
  const [page, id] = location.hash.replace(/^#\/?/, "").split("/");
  document.querySelectorAll("nav a").forEach((link) => link.classList.toggle("current", link.dataset.page === page));
  if (page === "products") return resourcePage("products");
  if (page === "bills" && id) return billPage(decodeURIComponent(id));
  if (page === "bills") return billsPage();
  if (page === "analytics") return analyticsPage();
  return resourcePage("customers");
}

async function start() {
  const [session, table] = await Promise.all([api("GET", "/session"), api("GET", "/permissions.json")]);
  state.user = session.user;
  state.roles = new Set(session.roles);
  state.permissions = table;
  document.getElementById("user").textContent = session.user;
  document.getElementById("roles").textContent =
    [...state.roles].filter((role) => role === role.toUpperCase()).sort().join(", ");
  window.addEventListener("hashchange", route);
  await route();
}

start().catch((error) => show(errorBox(error)));
