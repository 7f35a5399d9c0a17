// The console: a client of the management API under /api/identity/webhooks (and, for the
// erasure of a customer's data, /api/identity/customers; for the audit trail,
// /api/identity/audit), in this origin.
// No framework and no build step. Everything the API says is put on the page as text
// (textContent, text nodes, attribute values), never as markup: the Content-Security-Policy's
// Trusted Types setting makes the browser refuse innerHTML anyway.
'use strict';

const API = '/api/identity/webhooks';
const CUSTOMERS = '/api/identity/customers';
const AUDIT = '/api/identity/audit';
const AUDIT_PAGE_SIZE = 25;
// The service's own verdicts on a subscription, as the audit trail names them.
const VERDICTS = ['subscription.failing', 'subscription.disabled', 'subscription.recovered'];
const KEY_STORAGE = 'identity-webhooks.apiKey';
const PAGE_SIZE = 50;
const KEY_CHARS = /^[A-Za-z0-9_-]{8,200}$/;

const state = {
  key: null,
  eventTypes: null, // catalog names, without webhook.test
  examples: [], // the catalog's example events (GET …/event-types), for the filter editor
  subscriptions: new Map(), // id -> row, in list order
  subsCursor: null,
  subsSearch: '',
  testResults: new Map(), // id -> {result} or {error}: survives a re-render of the table
  testEvents: new Map(), // id -> the event type "Send test" sends (webhook.test when unset)
  log: { subscription: null, filter: {}, cursor: null },
  audit: { filter: {}, cursor: null },
  editing: null, // the row being edited, null when creating
  acting: null, // the row a dialog acts on
  erasing: null, // the customer id whose dry run the erase dialog shows
};

// -- small helpers -------------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

/** An element with properties and children; strings become text nodes, never markup. */
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'text') el.textContent = value;
    else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const localZone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'local';
const localFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric',
  hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short',
});

/** A time in UTC and, under it, in the browser's zone. */
/** A time as plain text, in UTC to the second: for sentences, where `when` would not fit. */
function whenText(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

function when(iso) {
  if (!iso) return h('span', { class: 'muted', text: '—' });
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return h('span', { text: iso });
  const utc = whenText(iso);
  return h('time', { datetime: iso, class: 'when' },
    h('span', { class: 'utc', text: utc }),
    h('span', { class: 'local', text: localFormat.format(date) }));
}

/** A datetime-local input's value (the browser's zone) as RFC 3339 UTC, or null. */
function inputTime(input) {
  if (!input.value) return null;
  const date = new Date(input.value);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

function percent(rate) {
  if (rate === null || rate === undefined) return '—';
  return `${(rate * 100).toFixed(rate >= 0.9995 || rate === 0 ? 0 : 1)} %`;
}

/** `n` and the noun that goes with it: 1 event, 2 events. */
function counted(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function statusBadge(status, code) {
  const label = code ? `${status} · ${code}` : status;
  return h('span', { class: `badge status-${status}`, text: label });
}

function show(el, visible) {
  el.hidden = !visible;
}

function flash(message) {
  const el = $('#flash');
  el.textContent = '';
  // A fresh text node each time, so a screen reader announces a repeated message too.
  requestAnimationFrame(() => { el.textContent = message; });
}

// -- the API -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    const detail = problem && typeof problem.detail === 'string' ? problem.detail : null;
    super(detail || `the service answered HTTP ${status}`);
    this.status = status;
    this.fields = problem && Array.isArray(problem.errors) ? problem.errors : [];
  }
}

/** A call of the management API under /api/identity/webhooks. */
function api(method, path, body, key = state.key) {
  return call(method, API + path, body, key);
}

async function call(method, url, body, key = state.key) {
  const headers = { Authorization: `Bearer ${key}`, Accept: 'application/json' };
  const init = { method, headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new ApiError(0, { detail: `the service did not answer (${error.message})` });
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && key === state.key && state.key) {
      signOut(error.message); // revoked while signed in: back to the sign-in form, with why
    }
    throw error;
  }
  return data;
}

/** Shows an API error in `el`: the problem's detail, then each field's message. */
function showError(el, error) {
  el.textContent = '';
  if (!error) { el.hidden = true; return; }
  el.append(h('span', { text: error.message }));
  if (error.fields && error.fields.length > 1) {
    el.append(h('ul', {}, error.fields.map((f) => h('li', { text: `${f.field}: ${f.message}` }))));
  }
  el.hidden = false;
}

async function eventTypes() {
  if (!state.eventTypes) {
    const body = await api('GET', '/event-types');
    state.eventTypes = body.rows.map((row) => row.name);
    state.examples = body.rows.filter((row) => row.name !== 'webhook.test').map((row) => row.example);
  }
  return state.eventTypes;
}

/** An operational event (about the org's own subscriptions), not a domain event. */
const isOperational = (name) => name.startsWith('webhook.') && name !== 'webhook.test';

const OPERATIONAL_NOTE = 'Operational events tell this subscription about the organisation\'s '
  + 'other subscriptions (failing, disabled, recovered, a delivery exhausted, a change): it never '
  + 'receives one about itself.';

// -- sign in -------------------------------------------------------------------------------

function signedIn() {
  show($('#signed-in'), Boolean(state.key));
  show($('#sign-out'), Boolean(state.key));
  // As many characters as `identity-webhooks api-key list` shows of a key (qe_key_ and 4).
  $('#key-hint').textContent = state.key ? `${state.key.slice(0, 11)}…` : '';
}

async function signIn(event) {
  event.preventDefault();
  const input = $('#api-key');
  const key = input.value.trim();
  const error = $('#sign-in-error');
  if (!KEY_CHARS.test(key)) {
    showError(error, new ApiError(0, { detail: 'an API key is 8 to 200 letters, digits, “_” or “-”' }));
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  try {
    await api('GET', '?limit=1', undefined, key); // the API's own verdict on the key
  } catch (failure) {
    showError(error, failure);
    input.setAttribute('aria-invalid', 'true');
    input.select();
    return;
  }
  input.value = '';
  input.removeAttribute('aria-invalid');
  showError(error, null);
  state.key = key;
  sessionStorage.setItem(KEY_STORAGE, key);
  signedIn();
  if (location.hash.startsWith('#/subscriptions')) route();
  else location.hash = '#/subscriptions';
}

function signOut(reason) {
  state.key = null;
  state.eventTypes = null;
  state.subscriptions.clear();
  state.testResults.clear();
  state.testEvents.clear();
  sessionStorage.removeItem(KEY_STORAGE);
  signedIn();
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  clearSecret();
  showView('#view-sign-in');
  showError($('#sign-in-error'), reason ? new ApiError(401, { detail: reason }) : null);
  $('#api-key').focus();
}

// -- views ---------------------------------------------------------------------------------

function showView(id) {
  for (const view of document.querySelectorAll('.view')) show(view, `#${view.id}` === id);
  $(id).querySelector('h1').focus();
}

function route() {
  if (!state.key) { showView('#view-sign-in'); $('#api-key').focus(); return; }
  const match = /^#\/subscriptions\/(whk_[0-9A-Za-z]+)\/deliveries$/.exec(location.hash);
  const audit = /^#\/audit(?:\/(whk_[0-9A-Za-z]+))?$/.exec(location.hash);
  if (match) openLog(match[1]);
  else if (audit) openAudit(audit[1] || null);
  else openSubscriptions();
}

// -- subscriptions -------------------------------------------------------------------------

async function openSubscriptions() {
  showView('#view-subscriptions');
  await loadSubscriptions();
}

async function loadSubscriptions(more = false) {
  const error = $('#subs-error');
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.subsSearch) params.set('search', state.subsSearch);
  if (more && state.subsCursor) params.set('cursor', state.subsCursor);
  const query = `?${params}`;
  try {
    // The catalog, for each row's choice of test event (fetched once).
    await eventTypes();
    const page = await api('GET', query);
    if (!more) state.subscriptions.clear();
    for (const row of page.rows) state.subscriptions.set(row.id, row);
    state.subsCursor = page.nextCursor;
    showError(error, null);
  } catch (failure) {
    showError(error, failure);
  }
  renderSubscriptions();
}

function stateCell(row) {
  if (row.active) {
    const cell = [h('span', { class: 'badge state-active', text: 'active' })];
    if (row.problem) cell.push(h('p', { class: 'reason warning-text', text: row.problem }));
    return cell;
  }
  const reason = row.disabledReason || row.deactivatedReason || '';
  const paused = reason.startsWith('paused');
  return [
    h('span', { class: `badge state-${paused ? 'paused' : 'deactivated'}`, text: paused ? 'paused' : 'deactivated' }),
    reason ? h('p', { class: 'reason', text: reason }) : null,
    row.disabledAt ? h('p', { class: 'reason' }, 'since ', when(row.disabledAt)) : null,
  ];
}

function lastDeliveryCell(row) {
  const last = row.lastDelivery;
  if (!last) return h('span', { class: 'muted', text: 'none yet' });
  return [statusBadge(last.status, last.responseCode), when(last.at)];
}

function testResultView(id) {
  const outcome = state.testResults.get(id);
  const out = h('p', { class: 'result', role: 'status', 'aria-live': 'polite', 'data-test-result': id });
  if (!outcome) return out;
  if (outcome.pending) {
    out.textContent = 'Sending a test…';
    return out;
  }
  if (outcome.error) {
    out.classList.add('error-text');
    out.textContent = `Test not sent: ${outcome.error.message}`;
    return out;
  }
  const r = outcome.result;
  if (r.status === 'available') {
    out.append(`Test ${outcome.event}: `, statusBadge(r.status, null), ' · in its feed for its reader');
    return out;
  }
  out.append(
    `Test ${outcome.event}: `, statusBadge(r.status, null),
    ` · ${r.responseCode === null ? 'no response' : `HTTP ${r.responseCode}`} · ${r.durationMs} ms`,
    r.error ? ` · ${r.error}` : '',
  );
  return out;
}

/** Which event "Send test" sends: webhook.test, or any catalog event's example. */
function testEventChoice(row, label) {
  const chosen = state.testEvents.get(row.id) || 'webhook.test';
  const names = ['webhook.test', ...(state.eventTypes || []).filter((name) => name !== 'webhook.test')];
  return h('select', {
    class: 'test-event',
    'aria-label': `Test event: ${label}`,
    onchange: (e) => state.testEvents.set(row.id, e.target.value),
  }, names.map((name) => h('option', { value: name, text: name, selected: name === chosen })));
}

function subscriptionRow(row) {
  const label = row.url || `feed ${row.id}`;
  const button = (text, onclick, extra = {}) =>
    h('button', { type: 'button', onclick, 'aria-label': `${text}: ${label}`, ...extra }, text);
  const cell = (heading, ...content) => h('td', { 'data-label': heading }, h('div', { class: 'cell' }, ...content));
  return h('tr', { 'data-id': row.id },
    cell('Endpoint',
      row.url
        ? h('span', { class: 'mono wrap', text: row.url })
        : h('span', { class: 'muted', text: 'polling: read from its feed' }),
      h('span', { class: 'muted small mono wrap', text: row.id }),
      row.installedBy ? h('span', { class: 'muted small', text: `by ${row.installedBy}` }) : null,
      row.rateLimit ? h('span', { class: 'muted small', text: `at most ${row.rateLimit}/s` }) : null,
      row.ordering === 'customer'
        ? h('span', { class: 'muted small', text: 'ordered per customer' })
        : null,
      row.blockedCustomers
        ? h('span', {
          class: 'error-text small',
          text: `${row.blockedCustomers} customer(s) blocked since ${row.oldestBlockedDelivery ? row.oldestBlockedDelivery.createdAt : '?'}`,
        })
        : null,
      headersView(row),
      authView(row),
      row.dataFields
        ? h('span', { class: 'muted small data-fields', text: `data fields: ${row.dataFields.join(', ')}` })
        : null,
      signingView(row),
      row.filter
        ? h('span', { class: 'muted small mono wrap content-filter', text: `filter: ${JSON.stringify(row.filter)}` })
        : null),
    cell('Events', h('ul', { class: 'plain' }, row.events.map((e) => (isOperational(e)
      ? h('li', { class: 'mono operational-type', title: OPERATIONAL_NOTE, text: `${e} (operational)` })
      : h('li', { class: 'mono', text: e }))))),
    cell('State', stateCell(row)),
    cell('Success 24 h', h('span', { class: 'nowrap', text: percent(row.successRate24h) })),
    cell('p95 24 h', h('span', { class: 'nowrap', text: row.p95LatencyMs24h === null ? '—' : `${row.p95LatencyMs24h} ms` })),
    cell('Failures in a row', h('span', { class: row.consecutiveFailures ? 'error-text' : '', text: String(row.consecutiveFailures) })),
    cell('Pending', String(row.pendingCount)),
    cell('Next retry', when(row.nextRetryAt)),
    cell('Last delivery', lastDeliveryCell(row), h('span', { class: 'muted small', text: `${row.deliveryCount} in all` })),
    cell('Actions',
      h('div', { class: 'row-actions' },
        testEventChoice(row, label),
        button('Send test', () => sendTest(row.id)),
        button('Deliveries', () => { location.hash = `#/subscriptions/${row.id}/deliveries`; }),
        button('Edit', () => openEdit(row)),
        button('Rotate secret', () => openRotate(row)),
        button('Delete', () => openDelete(row), { class: 'danger' })),
      testResultView(row.id)));
}

/** How its deliveries are signed, and an Ed25519 subscription's public key (it is public:
 * a receiver's engineer copies it from here). */
function signingView(row) {
  const parts = [];
  if (row.signing === 'ed25519') {
    parts.push(h('span', { class: 'muted small', text: 'signed with Ed25519 (webhook-signature v1a); public key:' }));
    parts.push(h('span', { class: 'mono small wrap public-key', text: row.publicKey || '' }));
  }
  if (row.hmacHeaders === false) {
    parts.push(h('span', { class: 'muted small', text: 'no X-Quantum-Signature or X-Identity-Signature' }));
  }
  return parts.length ? h('div', { class: 'signing' }, ...parts) : null;
}

const HIDDEN_VALUE = 'value hidden (write-only)';

/** The static headers: ordinary ones with their values, sensitive ones by name only. */
function headersView(row) {
  const ordinary = Object.entries(row.headers || {});
  const sensitive = row.sensitiveHeaders || [];
  if (!ordinary.length && !sensitive.length) return null;
  return h('ul', { class: 'plain small header-list', 'aria-label': `Headers sent to ${row.url}` },
    ordinary.map(([name, value]) => h('li', { class: 'muted' },
      h('span', { class: 'mono', text: name }), ': ', h('span', { class: 'mono wrap', text: value }))),
    sensitive.map((name) => h('li', { class: 'muted' },
      h('span', { class: 'mono', text: name }), ' ',
      h('span', { class: 'badge hidden-value', text: HIDDEN_VALUE }))));
}

const EXPIRING_MS = 30 * 86400 * 1000;

/** How deliveries authenticate to the endpoint: never a secret (the API shows none). */
function authView(row) {
  const auth = row.auth;
  const certLine = (label, cert) => {
    const soon = Date.parse(cert.notAfter) - Date.now() < EXPIRING_MS;
    return h('span', { class: `small ${soon ? 'error-text' : 'muted'}`,
      text: `${label}: ${cert.subject}, ends ${cert.notAfter}${soon ? ' (soon: renew it)' : ''}` });
  };
  const parts = [];
  if (auth && auth.type === 'oauth2_client_credentials') {
    parts.push(h('span', { class: 'muted small wrap',
      text: `OAuth client ${auth.clientId} at ${auth.tokenUrl}${auth.scope ? ` · scope ${auth.scope}` : ''}` }));
  } else if (auth && auth.type === 'mtls') {
    parts.push(certLine('client certificate', auth.certificate));
  }
  if (row.caCertificate) parts.push(certLine('own CA', row.caCertificate));
  return parts.length ? h('span', { class: 'auth-view' }, ...parts) : null;
}

function renderSubscriptions() {
  const body = $('#subs-table tbody');
  body.replaceChildren(...[...state.subscriptions.values()].map(subscriptionRow));
  show($('#subs-table'), state.subscriptions.size > 0);
  show($('#subs-empty'), state.subscriptions.size === 0 && !state.subsSearch);
  show($('#subs-none-found'), state.subscriptions.size === 0 && Boolean(state.subsSearch));
  show($('#subs-more'), Boolean(state.subsCursor));
}

/** Re-renders one subscription's row, keeping focus on the same button. */
function replaceRow(row) {
  state.subscriptions.set(row.id, row);
  const old = document.querySelector(`#subs-table tr[data-id="${CSS.escape(row.id)}"]`);
  if (!old) { renderSubscriptions(); return; }
  const focused = old.contains(document.activeElement) ? document.activeElement.textContent : null;
  const fresh = subscriptionRow(row);
  old.replaceWith(fresh);
  if (focused) [...fresh.querySelectorAll('button')].find((b) => b.textContent === focused)?.focus();
}

async function refreshRow(id) {
  try {
    replaceRow(await api('GET', `/${id}`));
  } catch (failure) {
    showError($('#subs-error'), failure);
  }
}

async function sendTest(id) {
  const event = state.testEvents.get(id) || 'webhook.test';
  state.testResults.set(id, { pending: true });
  replaceRow(state.subscriptions.get(id));
  try {
    state.testResults.set(id, { event, result: await api('POST', `/${id}/test`, { event }) });
  } catch (failure) {
    state.testResults.set(id, { error: failure });
  }
  await refreshRow(id);
}

// -- create and edit -----------------------------------------------------------------------

/** The headers the edited subscription has now, each with a box to remove it. */
function headerList(row) {
  const ordinary = Object.entries(row ? row.headers || {} : {});
  const sensitive = row ? row.sensitiveHeaders || [] : [];
  const item = (name, index, ...shown) => h('li', { class: 'header-item' },
    h('span', {}, h('span', { class: 'mono', text: name }), ...shown),
    h('span', { class: 'check' },
      h('input', {
        type: 'checkbox', id: `remove-header-${index}`, name: 'remove-header', value: name,
        'aria-label': `Remove ${name}`,
      }),
      h('label', { for: `remove-header-${index}`, text: 'Remove' })));
  const items = [
    ...ordinary.map(([name, value], i) => item(name, i, ': ', h('span', { class: 'mono wrap', text: value }))),
    ...sensitive.map((name, i) => item(name, ordinary.length + i, ' ',
      h('span', { class: 'badge hidden-value', text: HIDDEN_VALUE }))),
  ];
  $('#edit-header-list').replaceChildren(...items);
  show($('#edit-header-current'), items.length > 0);
  if (items.length) {
    $('#edit-header-current legend').textContent = 'Headers sent now (tick to remove)';
  }
}

/** The data fields input as a list, or null for every field. */
function parseDataFields(text) {
  const fields = text.split(',').map((name) => name.trim()).filter(Boolean);
  return fields.length ? fields : null;
}

/** The headers textarea as an object, or a message saying which line is wrong. */
function parseHeaders(text) {
  const headers = {};
  const lines = text.split('\n').map((line) => line.trim()).filter(Boolean);
  for (const [index, line] of lines.entries()) {
    const colon = line.indexOf(':');
    if (colon < 1) return { error: `line ${index + 1} is not “Name: value”` };
    headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return { headers };
}

async function openEdit(row) {
  state.editing = row;
  const form = $('#edit-form');
  form.reset();
  showError($('#edit-error'), null);
  for (const input of form.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
  $('#edit-title').textContent = row ? 'Edit subscription' : 'New subscription';
  $('#edit-submit').textContent = row ? 'Save' : 'Create';
  show($('#edit-active-row'), Boolean(row));
  let names;
  try {
    names = await eventTypes();
  } catch (failure) {
    showError($('#subs-error'), failure);
    return;
  }
  const fieldset = $('#edit-events');
  const box = (name) => h('div', { class: 'check' },
    h('input', { type: 'checkbox', id: `event-${name}`, name: 'events', value: name, checked: row ? row.events.includes(name) : false }),
    h('label', { for: `event-${name}`, class: 'mono', text: name }));
  const domain = names.filter((name) => name !== 'webhook.test' && !isOperational(name));
  const operational = names.filter(isOperational);
  fieldset.replaceChildren(h('legend', { text: 'Events' }), ...domain.map(box),
    operational.length
      ? h('fieldset', { id: 'edit-operational-events', 'aria-describedby': 'edit-operational-hint' },
        h('legend', { text: 'Operational events' }),
        h('p', { id: 'edit-operational-hint', class: 'muted small', text: OPERATIONAL_NOTE }),
        ...operational.map(box))
      : null);
  if (row) {
    $('#edit-url').value = row.url;
    $('#edit-installed-by').value = row.installedBy || '';
    $('#edit-rate-limit').value = row.rateLimit === null ? '' : String(row.rateLimit);
    $('#edit-ordering').value = row.ordering || 'none';
    $('#edit-data-fields').value = row.dataFields ? row.dataFields.join(', ') : '';
    $('#edit-filter').value = row.filter ? JSON.stringify(row.filter, null, 2) : '';
    $('#edit-active').checked = row.active;
  }
  $('#edit-signing').value = row ? row.signing || 'hmac' : 'hmac';
  $('#edit-hmac-headers').checked = row ? row.hmacHeaders !== false : true;
  $('#filter-results').replaceChildren();
  headerList(row);
  authForm(row);
  $('#edit-dialog').showModal();
  $('#edit-url').focus();
}

const FIELD_INPUTS = {
  url: '#edit-url', events: '#edit-events', installedBy: '#edit-installed-by',
  rateLimit: '#edit-rate-limit', headers: '#edit-headers', active: '#edit-active',
  ordering: '#edit-ordering', dataFields: '#edit-data-fields', signing: '#edit-signing',
  hmacHeaders: '#edit-hmac-headers', filter: '#edit-filter', auth: '#edit-auth-type',
  caCertificate: '#edit-ca',
};

// -- the filter editor ---------------------------------------------------------------------

/** The filter textarea as JSON: {filter} (null when empty) or {error}. */
function parseFilter(text) {
  if (!text.trim()) return { filter: null };
  try {
    return { filter: JSON.parse(text) };
  } catch (failure) {
    return { error: `the filter is not valid JSON (${failure.message})` };
  }
}

/** The events a filter is tried on: the catalog's examples of the ticked events, then the
 * edited subscription's recent events (their payloads as the log shows them). */
async function filterSamples() {
  const ticked = [...document.querySelectorAll('input[name="events"]:checked')].map((box) => box.value);
  await eventTypes();
  const samples = state.examples
    .filter((example) => ticked.length === 0 || ticked.includes(example.event))
    .map((example) => ({ label: `example ${example.event}`, event: example }));
  if (state.editing) {
    const page = await api('GET', `/${state.editing.id}/deliveries?limit=10`);
    for (const row of page.rows.filter((r) => r.event !== 'webhook.test')) {
      const detail = await api('GET', `/${state.editing.id}/deliveries/${row.id}`);
      if (detail.payload) samples.push({ label: `recent ${row.event} ${row.eventId}`, event: detail.payload });
    }
  }
  return samples;
}

/** Tries the typed filter on the samples through POST …/filter-test and lists the verdicts. */
async function tryFilter() {
  const results = $('#filter-results');
  const error = $('#edit-error');
  showError(error, null);
  $('#edit-filter').removeAttribute('aria-invalid');
  const parsed = parseFilter($('#edit-filter').value);
  if (parsed.error || parsed.filter === null) {
    results.replaceChildren(h('li', { class: 'muted', text: parsed.error || 'No filter: every event of the ticked types is delivered.' }));
    if (parsed.error) $('#edit-filter').setAttribute('aria-invalid', 'true');
    return;
  }
  try {
    const samples = await filterSamples();
    const items = [];
    for (const sample of samples) {
      const verdict = await api('POST', '/filter-test', { filter: parsed.filter, event: sample.event });
      items.push(h('li', { class: verdict.matches ? 'filter-match' : 'filter-refused' },
        h('span', { class: 'mono', text: sample.label }), ' — ',
        verdict.matches ? 'delivered' : `refused by ${verdict.refusedBy}: ${verdict.reason}`));
    }
    results.replaceChildren(...items);
  } catch (failure) {
    results.replaceChildren();
    showError(error, failure);
    if (failure.fields.length) $('#edit-filter').setAttribute('aria-invalid', 'true');
  }
}

/** The authentication fields of the type chosen, shown; the others hidden. */
function showAuthFields() {
  const type = $('#edit-auth-type').value;
  show($('#edit-auth-oauth'), type === 'oauth2_client_credentials');
  show($('#edit-auth-mtls'), type === 'mtls');
}

/** The form's authentication as the edited subscription has it (its secrets never come). */
function authForm(row) {
  const auth = row ? row.auth : null;
  $('#edit-auth-type').value = auth ? auth.type : 'none';
  if (auth && auth.type === 'oauth2_client_credentials') {
    $('#edit-token-url').value = auth.tokenUrl;
    $('#edit-client-id').value = auth.clientId;
    $('#edit-scope').value = auth.scope || '';
    $('#edit-audience').value = auth.audience || '';
    $('#edit-client-auth').value = auth.clientAuth || 'basic';
  }
  show($('#edit-ca-remove-row'), Boolean(row && row.caCertificate));
  showAuthFields();
}

function clearAuthSecrets() {
  for (const id of ['#edit-client-secret', '#edit-private-key', '#edit-certificate']) $(id).value = '';
}

/** What the request says of `auth` and `caCertificate`: only what changes when editing. */
function authChanges(editing, body) {
  const type = $('#edit-auth-type').value;
  const had = editing ? editing.auth : null;
  if (type === 'none') {
    if (had) body.auth = null;
  } else if (type === 'oauth2_client_credentials') {
    const auth = {
      type,
      tokenUrl: $('#edit-token-url').value.trim(),
      clientId: $('#edit-client-id').value.trim(),
      clientAuth: $('#edit-client-auth').value,
    };
    const secret = $('#edit-client-secret').value;
    if (secret) auth.clientSecret = secret; // left out: the stored one is kept
    const scope = $('#edit-scope').value.trim();
    const audience = $('#edit-audience').value.trim();
    if (scope) auth.scope = scope;
    if (audience) auth.audience = audience;
    body.auth = auth;
  } else {
    const certificate = $('#edit-certificate').value.trim();
    const privateKey = $('#edit-private-key').value.trim();
    if (certificate || privateKey || !had || had.type !== 'mtls') {
      body.auth = { type, certificate, privateKey };
    }
  }
  const ca = $('#edit-ca').value.trim();
  if (ca) body.caCertificate = ca;
  else if ($('#edit-ca-remove').checked) body.caCertificate = null;
}

/** A PATCH's `headers`, a merge patch: the ticked headers removed (null), the typed ones set;
 * a typed header replaces a ticked one of the same name. Null when nothing changes. */
function headersPatch(typed) {
  const patch = {};
  for (const box of document.querySelectorAll('input[name="remove-header"]:checked')) patch[box.value] = null;
  for (const [name, value] of Object.entries(typed)) {
    for (const other of Object.keys(patch)) {
      if (other.toLowerCase() === name.toLowerCase()) delete patch[other];
    }
    patch[name] = value;
  }
  return Object.keys(patch).length ? patch : null;
}

async function submitEdit(event) {
  event.preventDefault();
  const form = $('#edit-form');
  const error = $('#edit-error');
  for (const input of form.querySelectorAll('[aria-invalid]')) input.removeAttribute('aria-invalid');
  const parsed = parseHeaders($('#edit-headers').value);
  if (parsed.error) {
    showError(error, new ApiError(0, { detail: `headers: ${parsed.error}` }));
    $('#edit-headers').setAttribute('aria-invalid', 'true');
    $('#edit-headers').focus();
    return;
  }
  const typedFilter = parseFilter($('#edit-filter').value);
  if (typedFilter.error) {
    showError(error, new ApiError(0, { detail: typedFilter.error }));
    $('#edit-filter').setAttribute('aria-invalid', 'true');
    $('#edit-filter').focus();
    return;
  }
  const rate = $('#edit-rate-limit').value.trim();
  const body = {
    url: $('#edit-url').value.trim(),
    events: [...form.querySelectorAll('input[name="events"]:checked')].map((box) => box.value),
    installedBy: $('#edit-installed-by').value.trim() || null,
    // A number the API checks; what is not one is sent as typed, for the API's own message.
    rateLimit: rate === '' ? null : (/^\d+$/.test(rate) ? Number(rate) : rate),
    ordering: $('#edit-ordering').value,
    dataFields: parseDataFields($('#edit-data-fields').value),
    signing: $('#edit-signing').value,
    hmacHeaders: $('#edit-hmac-headers').checked,
    filter: typedFilter.filter,
  };
  const editing = state.editing;
  authChanges(editing, body);
  if (editing) {
    body.active = $('#edit-active').checked;
    // Only what changes: headers not named are kept, the hidden values among them.
    const patch = headersPatch(parsed.headers);
    if (patch) body.headers = patch;
  } else if (Object.keys(parsed.headers).length) {
    body.headers = parsed.headers;
  }
  try {
    if (editing) {
      replaceRow(await api('PATCH', `/${editing.id}`, body));
      $('#edit-dialog').close();
      flash(`Saved ${editing.url}.`);
    } else {
      const created = await api('POST', '', body);
      $('#edit-dialog').close();
      showSecret(created, `New subscription ${created.id} to ${created.url}`, null);
      await loadSubscriptions();
    }
  } catch (failure) {
    showError(error, failure);
    const first = failure.fields
      .map((f) => FIELD_INPUTS[f.field.split(/[.[]/)[0]])
      .filter(Boolean);
    for (const selector of first) $(selector).setAttribute('aria-invalid', 'true');
    if (first.length) {
      const target = $(first[0]);
      (target.tagName === 'FIELDSET' ? target.querySelector('input') : target).focus();
    }
  }
}

// -- the secret, shown once ----------------------------------------------------------------

/** `shown`: the API's answer holding `secret`, `standardSecret` and `publicKey`. */
function showSecret(shown, forWhat, note) {
  $('#secret-for').textContent = forWhat;
  $('#secret-value').value = shown.secret;
  $('#secret-standard').value = shown.standardSecret;
  $('#secret-public-key').textContent = shown.publicKey
    ? `Ed25519 public key (public, shown with the subscription too): ${shown.publicKey}` : '';
  show($('#secret-public-key'), Boolean(shown.publicKey));
  $('#secret-note').textContent = note || '';
  $('#secret-copied').textContent = '';
  $('#secret-dialog').showModal();
  $('#secret-value').focus();
  $('#secret-value').select();
}

function clearSecret() {
  $('#secret-value').value = ''; // gone from the page once the dialog is closed
  $('#secret-standard').value = '';
}

async function copySecret(selector) {
  const input = $(selector);
  try {
    await navigator.clipboard.writeText(input.value);
    $('#secret-copied').textContent = 'Copied to the clipboard.';
  } catch {
    input.focus();
    input.select();
    $('#secret-copied').textContent = 'Copying is not allowed here: the secret is selected, press Ctrl+C (⌘C).';
  }
}

// -- rotate and delete ---------------------------------------------------------------------

function openRotate(row) {
  state.acting = row;
  $('#rotate-form').reset();
  $('#rotate-for').textContent = row.url;
  showError($('#rotate-error'), null);
  $('#rotate-dialog').showModal();
  $('#rotate-overlap').focus();
}

async function submitRotate(event) {
  event.preventDefault();
  const row = state.acting;
  const overlap = $('#rotate-overlap').value.trim();
  const body = overlap === '' ? {} : { overlapSeconds: /^\d+$/.test(overlap) ? Number(overlap) : overlap };
  try {
    const rotated = await api('POST', `/${row.id}/rotate-secret`, body);
    $('#rotate-dialog').close();
    const expires = new Date(rotated.previousSecretExpiresAt);
    showSecret(rotated, `New secret of ${row.url}`,
      `The previous secret is valid until ${expires.toISOString().slice(0, 19).replace('T', ' ')} UTC (${localFormat.format(expires)}).`);
    await refreshRow(row.id);
  } catch (failure) {
    showError($('#rotate-error'), failure);
  }
}

function openDelete(row) {
  state.acting = row;
  $('#confirm-text').textContent = `Delete the subscription to ${row.url}? Its pending deliveries are cancelled, and it cannot be undone.`;
  showError($('#confirm-error'), null);
  $('#confirm-dialog').showModal();
}

async function submitDelete(event) {
  event.preventDefault();
  const row = state.acting;
  try {
    await api('DELETE', `/${row.id}`);
    $('#confirm-dialog').close();
    state.subscriptions.delete(row.id);
    state.testResults.delete(row.id);
    renderSubscriptions();
    flash(`Deleted the subscription to ${row.url}.`);
    $('#subs-title').focus();
  } catch (failure) {
    showError($('#confirm-error'), failure);
  }
}

// -- erase a customer's data ----------------------------------------------------------------

/** The erase dialog at one of its steps: ask for the id, confirm the dry run's counts, done. */
function eraseStep(step) {
  show($('#erase-ask'), step === 'ask');
  show($('#erase-check'), step === 'ask');
  show($('#erase-confirm'), step === 'confirm');
  show($('#erase-back'), step === 'confirm');
  show($('#erase-go'), step === 'confirm');
  show($('#erase-receipt'), step === 'done');
  show($('#erase-cancel'), step !== 'done');
  show($('#erase-close'), step === 'done');
}

function openErase() {
  state.erasing = null;
  $('#erase-form').reset();
  $('#erase-note').textContent = '';
  showError($('#erase-error'), null);
  $('#erase-customer').removeAttribute('aria-invalid');
  eraseStep('ask');
  $('#erase-dialog').showModal();
  $('#erase-customer').focus();
}

/** POST …/customers/{id}/erase, the id percent-encoded (a “/” too). */
function erase(customerId, dryRun) {
  return call('POST', `${CUSTOMERS}/${encodeURIComponent(customerId)}/erase${dryRun ? '?dryRun=true' : ''}`);
}

/** Step one: the dry run, whose counts the confirmation names. Nothing is erased yet. */
async function checkErase(event) {
  event.preventDefault();
  if (state.erasing !== null) return; // Enter on the confirmation: only the button erases
  const input = $('#erase-customer');
  const customerId = input.value;
  const error = $('#erase-error');
  $('#erase-note').textContent = '';
  if (customerId === '.' || customerId === '..') {
    // A URL cannot carry such a path segment: the browser resolves it away.
    showError(error, new ApiError(0, { detail: `“${customerId}” cannot be sent in a URL: erase it with the command line (identity-webhooks erase).` }));
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  let counts;
  try {
    counts = await erase(customerId, true);
  } catch (failure) {
    showError(error, failure);
    input.setAttribute('aria-invalid', 'true');
    input.focus();
    return;
  }
  showError(error, null);
  input.removeAttribute('aria-invalid');
  if (counts.events === 0) {
    $('#erase-note').textContent = `No stored event about customer “${customerId}” in this organisation: there is nothing to erase.`;
    input.select();
    return;
  }
  state.erasing = customerId;
  $('#erase-confirm').textContent = `Erase the stored payloads of customer “${customerId}”: `
    + `${counted(counts.events, 'event', 'events')}, ${counted(counts.deliveries, 'delivery', 'deliveries')}; `
    + `${counted(counts.cancelled, 'open delivery', 'open deliveries')} will be cancelled. This cannot be undone.`;
  eraseStep('confirm');
  $('#erase-cancel').focus(); // the safe choice first
}

function backToErase() {
  state.erasing = null;
  eraseStep('ask');
  $('#erase-customer').focus();
}

/** Step two, after the confirmation: the erasure itself, and its receipt. */
async function confirmErase() {
  const customerId = state.erasing;
  if (customerId === null) return;
  const error = $('#erase-error');
  let receipt;
  try {
    receipt = await erase(customerId, false);
  } catch (failure) {
    showError(error, failure);
    return;
  }
  showError(error, null);
  state.erasing = null;
  const out = $('#erase-receipt');
  out.replaceChildren(
    `Erased the stored payloads of customer “${receipt.customerId}”: `
      + `${counted(receipt.events, 'event', 'events')}, ${counted(receipt.deliveries, 'delivery', 'deliveries')}; `
      + `${counted(receipt.cancelled, 'open delivery', 'open deliveries')} cancelled.`,
    h('span', { class: 'block muted' }, 'Erased at ', when(receipt.erasedAt)));
  eraseStep('done');
  $('#erase-close').focus();
  flash(`Erased the stored payloads of customer “${receipt.customerId}”.`);
  loadSubscriptions(); // their pending counts drop by what was cancelled
}

// -- the delivery log ----------------------------------------------------------------------

async function openLog(id) {
  const log = state.log;
  if (log.subscription?.id !== id) {
    log.filter = {};
    $('#log-filters').reset();
    $('#replay-form').reset();
    $('#replay-result').textContent = '';
    showError($('#replay-error'), null);
  }
  showView('#view-deliveries');
  $('#log-sub').textContent = id;
  try {
    log.subscription = await api('GET', `/${id}`);
    $('#log-sub').textContent = `${log.subscription.url} (${id})`;
    const select = $('#log-event');
    if (select.options.length === 1) {
      select.append(...(await eventTypes()).map((name) => h('option', { value: name, text: name })),
        h('option', { value: 'webhook.test', text: 'webhook.test' }));
    }
  } catch (failure) {
    showError($('#log-error'), failure);
    return;
  }
  $('#ops-audit-link').setAttribute('href', `#/audit/${id}`);
  await Promise.all([loadLog(), loadHours(id), loadVerdicts(log.subscription)]);
}

// -- the 24-hour chart ---------------------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';
/** An SVG element, as `h` makes HTML ones: attributes and text, never markup. */
function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (name === 'text') el.textContent = value;
    else el.setAttribute(name, String(value));
  }
  for (const child of children.flat()) if (child) el.append(child);
  return el;
}

// Failure classes in the order they are stacked, above the sent part of a bar.
const FAILURE_ORDER = ['5xx', '4xx', '3xx', 'timeout', 'connection', 'token', 'other'];
const hourFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

async function loadHours(id) {
  const error = $('#hours-error');
  try {
    const body = await api('GET', `/${id}/hours`);
    if (state.log.subscription?.id !== id) return;
    drawHours(body.hours);
    showError(error, null);
  } catch (failure) {
    $('#hours-chart').replaceChildren();
    showError(error, failure);
  }
}

/** Stacked bars of each hour's attempts (sent, then failures by class) against the left
 * axis, and the hour's p95 latency as points on a line against the right one. */
function drawHours(hours) {
  const width = 720;
  const height = 220;
  const pad = { left: 40, right: 52, top: 12, bottom: 28 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const slot = plotW / hours.length;
  const most = Math.max(1, ...hours.map((hour) => hour.attempts));
  const slowest = Math.max(1, ...hours.map((hour) => hour.p95LatencyMs || 0));
  const y = (n) => pad.top + plotH - (n / most) * plotH;
  const yLatency = (ms) => pad.top + plotH - (ms / slowest) * plotH;
  const classes = new Set();
  const bars = [];
  const points = [];
  hours.forEach((hour, i) => {
    const x = pad.left + i * slot + slot * 0.15;
    const label = `${hourFormat.format(new Date(hour.start))}`;
    const parts = [['sent', hour.sent],
      ...FAILURE_ORDER.filter((name) => hour.failed[name]).map((name) => [name, hour.failed[name]]),
      ...Object.entries(hour.failed).filter(([name]) => !FAILURE_ORDER.includes(name))];
    let below = 0;
    for (const [name, n] of parts) {
      if (!n) continue;
      classes.add(name);
      bars.push(svg('rect', {
        class: `seg seg-${name.replace(/[^a-z0-9]/gi, '')}`, 'data-hour': hour.start, 'data-kind': name,
        x: x.toFixed(1), width: (slot * 0.7).toFixed(1),
        y: y(below + n).toFixed(1), height: Math.max(1, y(below) - y(below + n)).toFixed(1),
      }, svg('title', { text: `${label}: ${n} ${name === 'sent' ? 'sent' : `failed (${name})`}` })));
      below += n;
    }
    if (hour.p95LatencyMs !== null) {
      points.push([pad.left + (i + 0.5) * slot, yLatency(hour.p95LatencyMs), label, hour.p95LatencyMs, i]);
    }
  });
  const ticks = hours
    .map((hour, i) => [hour, i])
    .filter(([, i]) => i % 6 === 0 || i === hours.length - 1)
    .map(([hour, i]) => svg('text', {
      class: 'tick', x: (pad.left + (i + 0.5) * slot).toFixed(1), y: height - 8, 'text-anchor': 'middle',
      text: hourFormat.format(new Date(hour.start)),
    }));
  const chart = svg('svg', {
    viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': `Attempts per hour over the last 24 hours: ${hours.reduce((n, hour) => n + hour.attempts, 0)} in all, at most ${most} in an hour; p95 latency at most ${slowest} ms`,
  },
  svg('line', { class: 'axis', x1: pad.left, x2: width - pad.right, y1: pad.top + plotH, y2: pad.top + plotH }),
  svg('line', { class: 'axis', x1: pad.left, x2: pad.left, y1: pad.top, y2: pad.top + plotH }),
  svg('text', { class: 'tick', x: pad.left - 6, y: pad.top + 10, 'text-anchor': 'end', text: String(most) }),
  svg('text', { class: 'tick', x: pad.left - 6, y: pad.top + plotH, 'text-anchor': 'end', text: '0' }),
  svg('text', { class: 'tick', x: width - pad.right + 6, y: pad.top + 10, text: `${slowest} ms` }),
  ...ticks, ...bars,
  ...lineRuns(points).map((run) => svg('polyline', {
    class: 'p95-line', points: run.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join(' '),
  })),
  ...points.map(([px, py, label, ms]) => svg('circle', {
    class: 'p95-point', cx: px.toFixed(1), cy: py.toFixed(1), r: 3.5,
  }, svg('title', { text: `${label}: p95 ${ms} ms` }))));
  $('#hours-chart').replaceChildren(chart);
  const kinds = [...classes].sort((a, b) => (a === 'sent' ? -1 : b === 'sent' ? 1 : 0));
  $('#hours-legend').replaceChildren(
    ...kinds.map((name) => h('li', {},
      h('span', { class: `swatch seg-${name.replace(/[^a-z0-9]/gi, '')}`, 'aria-hidden': 'true' }),
      name === 'sent' ? 'sent (2xx)' : `failed: ${name}`)),
    h('li', {}, h('span', { class: 'swatch p95', 'aria-hidden': 'true' }), 'p95 latency (right axis)'));
  if (!classes.size) {
    $('#hours-legend').prepend(h('li', { class: 'muted', text: 'No attempt in the last 24 hours.' }));
  }
  $('#hours-table tbody').replaceChildren(...hours.filter((hour) => hour.attempts).map((hour) => h('tr', {},
    h('td', { text: hourFormat.format(new Date(hour.start)) }),
    h('td', { text: String(hour.attempts) }),
    h('td', { text: String(hour.sent) }),
    h('td', { text: Object.entries(hour.failed).map(([name, n]) => `${n} ${name}`).join(', ') || '0' }),
    h('td', { text: hour.p95LatencyMs === null ? '—' : `${hour.p95LatencyMs} ms` }))));
}

// -- a subscription's verdicts: failing, disabled, recovered --------------------------------

async function loadVerdicts(subscription) {
  const takes = subscription.events.filter(isOperational);
  $('#ops-takes').textContent = takes.length
    ? `It takes these operational events, about the organisation's other subscriptions (never about itself): ${takes.join(', ')}.`
    : 'It takes no operational event: edit it to be told when another subscription of this organisation fails, is disabled or recovers.';
  const params = new URLSearchParams({
    subscriptionId: subscription.id, action: VERDICTS.join(','), limit: '10',
  });
  const list = $('#ops-list');
  try {
    const page = await call('GET', `${AUDIT}?${params}`);
    list.replaceChildren(...page.rows.map((entry) => h('li', { 'data-action': entry.action },
      verdictBadge(entry.action), when(entry.at), h('span', { class: 'small', text: verdictText(entry) }))));
    showError($('#ops-error'), null);
  } catch (failure) {
    list.replaceChildren();
    showError($('#ops-error'), failure);
  }
  show($('#ops-empty'), list.children.length === 0);
}

function verdictBadge(action) {
  const name = action.replace('subscription.', '');
  const kind = { failing: 'retrying', disabled: 'failed', recovered: 'sent' }[name] || 'pending';
  return h('span', { class: `badge status-${kind}`, text: name });
}

function verdictText(entry) {
  const c = entry.changes || {};
  if (entry.action === 'subscription.failing') {
    const last = c.lastStatusCode ? `HTTP ${c.lastStatusCode}` : (c.lastError || 'no answer');
    return `${counted(c.consecutiveFailures || 0, 'failed attempt', 'failed attempts')} in a row since ${whenText(c.failingSince)}; last: ${last}`;
  }
  if (entry.action === 'subscription.disabled') return `by ${actorText(entry.actor)}: ${c.reason || ''}`;
  if (entry.action === 'subscription.recovered') return c.failingSince ? `failing since ${whenText(c.failingSince)}` : 'delivered again';
  return '';
}

/** The p95 points split where an hour had no attempts, so the line shows the gap instead of
 * joining across it; a run of one point is left to its dot. */
function lineRuns(points) {
  const runs = [];
  for (const point of points) {
    const run = runs[runs.length - 1];
    if (run && run[run.length - 1][4] === point[4] - 1) run.push(point);
    else runs.push([point]);
  }
  return runs.filter((run) => run.length > 1);
}

// -- the audit trail -----------------------------------------------------------------------

function actorText(actor) {
  if (actor.type === 'api_key') return `API key “${actor.name}” (${actor.id})`;
  if (actor.type === 'cli') return `command line, user ${actor.name || '?'}`;
  return 'the service (system)';
}

async function openAudit(subscriptionId) {
  showView('#view-audit');
  const select = $('#audit-subscription');
  try {
    if (!state.subscriptions.size) await loadSubscriptions();
  } catch {
    // the list is only for the filter's choices
  }
  select.replaceChildren(h('option', { value: '', text: 'any' }),
    ...[...state.subscriptions.values()].map((row) => h('option', { value: row.id, text: `${row.url || 'feed'} (${row.id})` })));
  if (subscriptionId && !state.subscriptions.has(subscriptionId)) {
    select.append(h('option', { value: subscriptionId, text: subscriptionId }));
  }
  // Not the form's reset(): its handler would load the whole trail too.
  $('#audit-since').value = '';
  $('#audit-until').value = '';
  select.value = subscriptionId || '';
  state.audit.filter = subscriptionId ? { subscriptionId } : {};
  await loadAudit();
}

async function loadAudit(more = false) {
  const params = new URLSearchParams({ limit: String(AUDIT_PAGE_SIZE) });
  for (const [name, value] of Object.entries(state.audit.filter)) if (value) params.set(name, value);
  if (more && state.audit.cursor) params.set('cursor', state.audit.cursor);
  const body = $('#audit-table tbody');
  try {
    const page = await call('GET', `${AUDIT}?${params}`);
    const rows = page.rows.map(auditRow);
    if (more) body.append(...rows); else body.replaceChildren(...rows);
    state.audit.cursor = page.nextCursor;
    showError($('#audit-error'), null);
  } catch (failure) {
    showError($('#audit-error'), failure);
  }
  show($('#audit-empty'), body.children.length === 0);
  show($('#audit-table'), body.children.length > 0);
  show($('#audit-more'), Boolean(state.audit.cursor));
}

function auditRow(entry) {
  const cell = (heading, ...content) => h('td', { 'data-label': heading }, h('div', { class: 'cell' }, ...content));
  const of = entry.subscriptionId
    ? h('a', { href: `#/subscriptions/${entry.subscriptionId}/deliveries`, class: 'mono small wrap', text: entry.subscriptionId })
    : h('span', { class: 'mono small wrap', text: entry.apiKeyId || '—' });
  return h('tr', { 'data-id': entry.id, 'data-action': entry.action },
    cell('Time', when(entry.at)),
    cell('Actor', h('span', { class: 'actor', text: actorText(entry.actor) })),
    cell('Action', h('span', { class: 'mono', text: entry.action })),
    cell('Of', of),
    cell('What changed', changesView(entry.changes || {})));
}

/** What changed, as the API says it: field names, old → new of plain settings, header names,
 * whether a filter or credentials are set. The API never sends a secret or a header's value. */
function changesView(changes) {
  const items = [];
  for (const [name, value] of Object.entries(changes)) {
    let text;
    if (name === 'fields' && Array.isArray(value)) text = `fields: ${value.join(', ') || '—'}`;
    else if (value && typeof value === 'object' && !Array.isArray(value) && 'old' in value && 'new' in value) {
      text = `${name}: ${shown(value.old)} → ${shown(value.new)}`;
    } else text = `${name}: ${shown(value)}`;
    items.push(h('li', { class: 'small', text }));
  }
  return items.length ? h('ul', { class: 'changes' }, items) : h('span', { class: 'muted', text: '—' });
}

function shown(value) {
  if (value === null || value === undefined) return 'none';
  if (Array.isArray(value)) return value.join(', ') || '[]';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function applyAuditFilters(event) {
  event.preventDefault();
  state.audit.filter = {
    subscriptionId: $('#audit-subscription').value,
    since: inputTime($('#audit-since')),
    until: inputTime($('#audit-until')),
  };
  loadAudit();
}

async function loadLog(more = false) {
  const log = state.log;
  if (!log.subscription) return;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  for (const [name, value] of Object.entries(log.filter)) if (value) params.set(name, value);
  if (more && log.cursor) params.set('cursor', log.cursor);
  const body = $('#log-table tbody');
  try {
    const page = await api('GET', `/${log.subscription.id}/deliveries?${params}`);
    const rows = page.rows.map(deliveryRow);
    if (more) body.append(...rows); else body.replaceChildren(...rows);
    log.cursor = page.nextCursor;
    showError($('#log-error'), null);
  } catch (failure) {
    showError($('#log-error'), failure);
  }
  show($('#log-empty'), body.children.length === 0);
  show($('#log-table'), body.children.length > 0);
  show($('#log-more'), Boolean(log.cursor));
}

function lastAttemptText(attempt) {
  if (!attempt) return h('span', { class: 'muted', text: 'not yet' });
  return h('span', {},
    `${attempt.responseCode === null ? 'no response' : `HTTP ${attempt.responseCode}`} · ${attempt.durationMs} ms`,
    attempt.error ? h('span', { class: 'error-text block', text: attempt.error }) : null,
    when(attempt.at));
}

function deliveryRow(row) {
  const cell = (heading, ...content) => h('td', { 'data-label': heading }, h('div', { class: 'cell' }, ...content));
  const tr = h('tr', { 'data-id': row.id });
  const detailsId = `details-${row.id}`;
  const details = h('button', {
    type: 'button', 'aria-expanded': 'false', 'aria-controls': detailsId,
    'aria-label': `Details of ${row.id}: attempts and payload`,
    onclick: () => toggleDetails(tr, row, details),
  }, 'Details');
  tr.append(
    cell('Delivery', h('span', { class: 'mono small wrap', text: row.id })),
    cell('Event', h('span', { class: 'mono', text: row.event })),
    cell('Status', statusBadge(row.status, null),
      row.cancelledReason ? h('span', { class: 'reason cancelled-reason', text: row.cancelledReason }) : null),
    cell('Created', when(row.createdAt)),
    cell('Attempts', h('span', { class: 'attempt-count', text: String(row.attemptCount) })),
    cell('Last attempt', lastAttemptText(row.lastAttempt)),
    cell('Next attempt', when(row.nextAttemptAt)),
    cell('Actions', h('div', { class: 'row-actions' }, details,
      h('button', { type: 'button', 'aria-label': `Redeliver ${row.id}`, onclick: () => redeliver(tr, row) }, 'Redeliver')),
      h('p', { class: 'result', role: 'status', 'aria-live': 'polite' })));
  return tr;
}

async function toggleDetails(tr, row, button) {
  const open = tr.nextElementSibling?.classList.contains('details') ? tr.nextElementSibling : null;
  if (open) {
    open.remove();
    button.setAttribute('aria-expanded', 'false');
    return;
  }
  const holder = h('td', { colspan: '8', id: `details-${row.id}` }, h('p', { class: 'muted', text: 'Loading…' }));
  tr.after(h('tr', { class: 'details' }, holder));
  button.setAttribute('aria-expanded', 'true');
  await fillDetails(holder, row.id);
}

async function fillDetails(holder, deliveryId) {
  try {
    const detail = await api('GET', `/${state.log.subscription.id}/deliveries/${deliveryId}`);
    const attempts = detail.attempts.length
      ? h('table', { class: 'attempts' },
        h('caption', { text: `Attempts of ${deliveryId}` }),
        h('thead', {}, h('tr', {}, ['#', 'At', 'Response', 'Duration', 'Error', 'Response excerpt']
          .map((text) => h('th', { scope: 'col', text })))),
        h('tbody', {}, detail.attempts.map((a) => h('tr', {},
          h('td', { 'data-label': '#', text: String(a.number) }),
          h('td', { 'data-label': 'At' }, when(a.at)),
          h('td', { 'data-label': 'Response', text: a.responseCode === null ? 'none' : `HTTP ${a.responseCode}` }),
          h('td', { 'data-label': 'Duration', text: `${a.durationMs} ms` }),
          h('td', { 'data-label': 'Error', text: a.error || '—' }),
          h('td', { 'data-label': 'Response excerpt' }, h('span', { class: 'mono small wrap', text: a.responseExcerpt || '—' }))))))
      : h('p', { class: 'muted', text: 'No attempt yet.' });
    holder.replaceChildren(
      h('h3', { text: 'Attempts' }), attempts,
      h('h3', { text: 'Payload' }), payloadView(detail, deliveryId));
  } catch (failure) {
    holder.replaceChildren(h('p', { class: 'error', role: 'alert', text: failure.message }));
  }
}

/** The payload as sent; or, when it is no longer kept, why and since when. */
function payloadView(detail, deliveryId) {
  const removed = detail.payloadRemoved;
  if (detail.payload === null && removed) {
    return h('div', { class: 'payload-removed' },
      h('p', { class: 'warning-text', text: `No payload: ${removed.detail}.` }),
      removed.at ? h('p', { class: 'muted small' }, 'Removed ', when(removed.at)) : null);
  }
  return h('pre', { class: 'payload', tabindex: '0', 'aria-label': `Payload of ${deliveryId}`, text: JSON.stringify(detail.payload, null, 2) });
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

/** Redelivers, then follows the delivery until its new attempt is in the log (at most ~15 s). */
async function redeliver(tr, row) {
  const out = tr.querySelector('.result');
  out.classList.remove('error-text');
  out.textContent = 'Queuing a redelivery…';
  const subscriptionId = state.log.subscription.id;
  let current;
  try {
    current = await api('POST', `/${subscriptionId}/deliveries/${row.id}/redeliver`) || row;
  } catch (failure) {
    out.classList.add('error-text');
    out.textContent = `Not redelivered: ${failure.message}`;
    return;
  }
  out.textContent = 'Redelivery queued; waiting for its attempt…';
  for (let i = 0; i < 30 && current.attemptCount <= row.attemptCount; i += 1) {
    await sleep(500);
    if (!tr.isConnected) return;
    try {
      current = await api('GET', `/${subscriptionId}/deliveries/${row.id}`);
    } catch (failure) {
      out.textContent = `Redelivery queued; could not follow it: ${failure.message}`;
      return;
    }
  }
  const fresh = deliveryRow(current);
  const open = tr.nextElementSibling?.classList.contains('details') ? tr.nextElementSibling : null;
  tr.replaceWith(fresh);
  const message = fresh.querySelector('.result');
  message.textContent = current.attemptCount > row.attemptCount
    ? `Redelivered: attempt ${current.attemptCount}, ${current.status}.`
    : 'Redelivery queued; its attempt has not been made yet (Refresh to look again).';
  if (open) {
    open.remove();
    const button = fresh.querySelector('[aria-expanded]');
    await toggleDetails(fresh, current, button);
  }
  fresh.querySelector('button:nth-of-type(2)').focus();
}

/** The list narrowed to a URL part or an id (the API pages within the search). */
function applySearch(event) {
  event.preventDefault();
  state.subsSearch = $('#subs-search-text').value.trim();
  state.subsCursor = null;
  loadSubscriptions();
}

function applyFilters(event) {
  event.preventDefault();
  state.log.filter = {
    status: $('#log-status').value,
    event: $('#log-event').value,
    since: inputTime($('#log-since')),
    until: inputTime($('#log-until')),
  };
  loadLog();
}

async function submitReplay(event) {
  event.preventDefault();
  const result = $('#replay-result');
  const error = $('#replay-error');
  result.textContent = '';
  const since = inputTime($('#replay-since'));
  if (!since) {
    showError(error, new ApiError(0, { detail: 'since: give the start of the window' }));
    $('#replay-since').focus();
    return;
  }
  const body = { since, onlyFailed: $('#replay-only-failed').checked };
  const until = inputTime($('#replay-until'));
  if (until) body.until = until;
  try {
    const replayed = await api('POST', `/${state.log.subscription.id}/replay`, body);
    showError(error, null);
    const noun = replayed.count === 1 ? 'delivery' : 'deliveries';
    result.textContent = `Queued ${replayed.count} ${noun}.`;
    if (replayed.withoutPayload) {
      result.append(` ${counted(replayed.withoutPayload, 'event was', 'events were')} left out: their payloads are no longer kept.`);
    }
    if (replayed.nextSince) {
      result.append(' The window holds more: replay again since ', when(replayed.nextSince), '.');
    }
    await loadLog();
  } catch (failure) {
    showError(error, failure);
  }
}

// -- wiring --------------------------------------------------------------------------------

function start() {
  for (const el of document.querySelectorAll('.tz')) el.textContent = localZone;
  $('#sign-in-form').addEventListener('submit', signIn);
  $('#sign-out').addEventListener('click', () => { signOut(null); flash('Signed out.'); });
  $('#subs-refresh').addEventListener('click', () => loadSubscriptions());
  $('#subs-more').addEventListener('click', () => loadSubscriptions(true));
  $('#subs-search').addEventListener('submit', applySearch);
  $('#subs-new').addEventListener('click', () => openEdit(null));
  $('#edit-form').addEventListener('submit', submitEdit);
  $('#edit-filter-try').addEventListener('click', tryFilter);
  $('#rotate-form').addEventListener('submit', submitRotate);
  $('#confirm-form').addEventListener('submit', submitDelete);
  $('#erase-open').addEventListener('click', openErase);
  $('#erase-form').addEventListener('submit', checkErase);
  $('#erase-back').addEventListener('click', backToErase);
  $('#erase-go').addEventListener('click', confirmErase);
  $('#erase-dialog').addEventListener('close', () => { state.erasing = null; });
  $('#secret-copy').addEventListener('click', () => copySecret('#secret-value'));
  $('#secret-standard-copy').addEventListener('click', () => copySecret('#secret-standard'));
  $('#secret-dialog').addEventListener('close', clearSecret);
  // Header values typed (a credential, maybe) do not stay in the page once the dialog closes.
  $('#edit-dialog').addEventListener('close', () => {
    $('#edit-headers').value = '';
    clearAuthSecrets();
  });
  $('#edit-auth-type').addEventListener('change', showAuthFields);
  $('#log-filters').addEventListener('submit', applyFilters);
  $('#log-filters').addEventListener('reset', () => { state.log.filter = {}; setTimeout(loadLog); });
  $('#log-refresh').addEventListener('click', () => loadLog());
  $('#log-more').addEventListener('click', () => loadLog(true));
  $('#replay-form').addEventListener('submit', submitReplay);
  $('#audit-filters').addEventListener('submit', applyAuditFilters);
  $('#audit-filters').addEventListener('reset', () => { state.audit.filter = {}; setTimeout(loadAudit); });
  $('#audit-refresh').addEventListener('click', () => loadAudit());
  $('#audit-more').addEventListener('click', () => loadAudit(true));
  for (const button of document.querySelectorAll('.close-dialog')) {
    button.addEventListener('click', () => button.closest('dialog').close());
  }
  // The skip link moves focus without touching the hash the views are routed by.
  $('.skip').addEventListener('click', (event) => { event.preventDefault(); $('#main').focus(); });
  window.addEventListener('hashchange', route);
  state.key = sessionStorage.getItem(KEY_STORAGE);
  signedIn();
  route();
}

start();
